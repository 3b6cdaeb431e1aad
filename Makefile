# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine:
# each creates .venv when it is missing and installs the project into it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench fixtures clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,onnx,models]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sparseblob demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH)

# Regenerates fixtures/ with coremltools (and torch for the converted models).
fixtures: $(STAMP)
	$(BIN)/python fixtures/generate.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

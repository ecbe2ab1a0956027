# relay — every command a user or CI needs. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all venv build test bench demo clean lint

all: build

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel "Cython>=3.0"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

# Rebuild the Cython extensions in place whenever a .pyx changed (fast when nothing did).
build: $(STAMP)
	$(PY) setup.py --quiet build_ext --inplace

test: build
	$(PY) -m pytest -q

bench: build
	$(PY) -m bench

demo: build
	$(PY) -m relay demo

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff
	$(VENV)/bin/ruff check relay tests bench

clean:
	rm -rf $(VENV) build *.egg-info relay/*.so relay/*.c .pytest_cache .hypothesis

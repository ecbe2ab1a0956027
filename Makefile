# relay — every command a user or CI needs. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all venv build test bench demo clean lint browser postgres

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

test: build browser postgres
	$(PY) -m pytest -q

# The dashboard's browser test drives Debian's chromium: install it when missing and we are root
# (CI on a fresh machine); otherwise that one test skips, saying why.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver (apt-get) for the dashboard's browser test"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 \
	      || echo "could not install chromium: the browser test will be skipped"; \
	  else \
	    echo "chromium/chromium-driver missing and not root: the browser test will be skipped"; \
	  fi; \
	fi

# The history store's tests (and `python -m bench history`) start a throw-away PostgreSQL from
# Debian's server binaries: install them when missing and we are root; otherwise those tests skip.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing postgresql (apt-get) for the history store's tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    { apt-get update -qq && apt-get install -y -qq postgresql; } >/dev/null 2>&1 \
	      || echo "could not install postgresql: the PostgreSQL tests will be skipped"; \
	  else \
	    echo "postgresql missing and not root: the PostgreSQL tests will be skipped"; \
	  fi; \
	fi

# make bench BENCH_ARGS="load --calls 100,300": one part only (see bench/__main__.py). The load
# benchmark's chart needs matplotlib (the `bench` extra).
bench: build
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m bench $(BENCH_ARGS)

demo: build
	$(PY) -m relay demo $(DEMO_ARGS)

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff
	$(VENV)/bin/ruff check relay tests bench

clean:
	rm -rf $(VENV) build *.egg-info relay/*.so relay/*.c .pytest_cache .hypothesis

# Two commands do all the set-up on a fresh machine:
#   make demo   quick reproduction of the headline results -> results/
#   make test   the test suite (CPU, a few minutes on 2 cores)
# Both install the exact tested set from requirements.lock, then kernelfield itself (editable,
# no dependency resolution). pyproject.toml holds the compatible ranges; `make lock` re-pins.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pytest-xdist worker processes for the tests (each JAX process needs up to ~3 GB)
TEST_WORKERS ?= 2
LOCK := requirements.lock
DOCS_LOCK := requirements-docs.lock
# uv (only for `make lock`) lives in its own small environment, outside the tested set
TOOLS := .tools
UV_VERSION := 0.13.9
UV := $(TOOLS)/bin/uv
# `make lock` keeps every pin that still satisfies pyproject.toml; LOCK_ARGS=--upgrade re-pins
# everything to the newest releases in range
LOCK_ARGS ?=
UV_COMPILE := $(UV) pip compile pyproject.toml --universal --python-version 3.11 \
	--custom-compile-command "make lock" --quiet $(LOCK_ARGS)

.PHONY: demo test test-fast bench docs lock check-install clean

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check
	touch $@

$(VENV)/.docs-installed: $(VENV)/.installed $(DOCS_LOCK)
	$(PY) -m pip install --quiet -r $(DOCS_LOCK)
	$(PY) -m pip check
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/demo.py --out results

test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist worksteal

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_solver.py
	$(PY) benchmarks/bench_theory_vs_sampling.py
	$(PY) benchmarks/bench_tilted.py
	$(PY) benchmarks/bench_nonlinear.py

# API reference from the docstrings -> site/ (warnings are errors)
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# `pip install .` into a fresh environment that already holds other scientific packages
check-install:
	PYTHON=$(PYTHON) bash tests/packaging/check_install.sh

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

lock: $(UV)
	$(UV_COMPILE) --extra test -o $(LOCK)
	$(UV_COMPILE) --extra test --extra docs -c $(LOCK) -o $(DOCS_LOCK)

clean:
	rm -rf $(VENV) $(TOOLS) results site .jax_cache_tests

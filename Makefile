# Two commands do all the set-up on a fresh machine:
#   make demo   quick reproduction of the headline results -> results/
#   make test   the test suite (CPU, a few minutes on 2 cores)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pytest-xdist worker processes for the tests (each JAX process needs up to ~3 GB)
TEST_WORKERS ?= 2

.PHONY: demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
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

clean:
	rm -rf $(VENV) results

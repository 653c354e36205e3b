# Set-up and checks. `make demo` and `make test` both install into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

install: $(STAMP)

# Reinstall when the dependency declarations change. The constraints file pins the exact versions
# tested here; pyproject.toml keeps ranges for users elsewhere.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

demo: install
	$(PY) jobs/digits_lt.py

# Test files run in TEST_PROCESSES parallel processes (pytest-xdist), each file whole in one of them
# (its module fixtures, such as the two-node cluster, start once). Most of the suite waits on Ray,
# servers and subprocesses, so 2 processes finish sooner even on 2 cores.
TEST_PROCESSES ?= 2

test: install
	$(PY) -m pytest -q -n $(TEST_PROCESSES) --dist loadfile --durations=20

clean:
	rm -rf runs .pytest_cache

# spectrum — the two commands a user needs are `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test test-slow test-gpu test-slurm lint bench mutation clean

install: $(STAMP)  ## create .venv and install the project (torch CPU wheel first)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: install  ## the default experiment, end to end
	$(PY) run.py

test: install  ## the test suite (fast tests; two xdist workers, one per core, a test file per worker, longest files first)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

test-slow: install  ## the paper reproductions marked slow
	$(PY) -m pytest -q -m slow

test-gpu: install  ## every callback and each task's tiny config on CUDA (skipped without a GPU)
	$(PY) -m pytest -q -m gpu

test-slurm: install  ## launcher=slurm through a local SLURM controller (scripts/slurm_local.sh; root)
	@started=0; if ! scripts/slurm_local.sh status >/dev/null 2>&1; then \
	  if scripts/slurm_local.sh start >/dev/null; then started=1; \
	  else echo "test-slurm: no local SLURM cluster (the slurm tests skip with the reason)"; fi; fi; \
	$(PY) -m pytest -q -rs -m slurm tests/slurm; rc=$$?; \
	if [ $$started = 1 ]; then scripts/slurm_local.sh stop; fi; exit $$rc

lint: install
	$(PY) -m ruff check .

bench: install  ## speed benchmarks against named baselines (installs the bench extra)
	$(PY) -m pip install -q -e '.[bench]'
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

mutation: install  ## mutmut on callbacks/spectra and the tasks' math, module by module in /tmp copies (MODULES="powerlaw rmt" to pick)
	$(PY) -m pip install -q -e '.[mutation]'
	$(PY) scripts/mutation.py $(MODULES); rc=$$?; $(PY) -m pip uninstall -q -y mutmut; exit $$rc

clean:
	rm -rf outputs multirun .pytest_cache

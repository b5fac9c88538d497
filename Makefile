# Two commands: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv when missing and installs the pinned torch before anything else,
# so that no multi-GB CUDA build is pulled in by a plain `torch` requirement.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
export OMP_NUM_THREADS ?= 2

.PHONY: demo test lint format bench venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[train,chem,md,dev]"
	touch $@

demo: venv
	$(VENV)/bin/tfn demo

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: venv
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

test: lint
	$(PY) -m pytest -q

bench: venv
	$(PY) benchmarks/bench_harmonics.py
	$(PY) benchmarks/bench_tensor_product.py

clean:
	rm -rf $(VENV) build src/*.egg-info

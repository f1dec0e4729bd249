# Set-up and entry points. `make demo` opens the quickstart notebook in JupyterLab;
# `make test` runs the whole test suite. Both create .venv and install into it first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench docs venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch and torchvision resolved together, so torchvision gets the torch build it was made for
	$(BIN)/python -m pip install -q -e ".[test,notebook]"
	touch $(STAMP)

venv: $(STAMP)

# root (containers, CI machines) must be allowed explicitly by JupyterLab
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

# glibc keeps up to 256 MB of freed memory in the kernel instead of faulting it in again at every
# batch (a CPU forward pass of the default model runs about 2.5x faster; docs/troubleshooting.md)
NO_TRIM := MALLOC_TRIM_THRESHOLD_=268435456 MALLOC_MMAP_THRESHOLD_=268435456

demo: $(STAMP)
	$(NO_TRIM) $(BIN)/jupyter lab $(ALLOW_ROOT) notebooks/quickstart.ipynb

# lint first: ruff (pyflakes, pycodestyle, imports, bugbear, numpydoc) and mypy on the package
test: $(STAMP) lint
	$(BIN)/python -m pytest -ra

lint: $(STAMP)
	$(BIN)/ruff check neuronviz
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# the documentation site into docs/_build/html (notebooks executed once into docs/notebooks)
docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html -d docs/_build/doctrees docs docs/_build/html

clean:
	rm -rf $(VENV) .pytest_cache

# Two commands from a fresh clone:  make demo   and   make test
# Each creates .venv when missing, installs torch first (TORCH_SPEC, a CPU wheel by default), then the package.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: demo test test-slow paper theory clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch-installed: | $(PY)
	$(PIP) "$(TORCH_SPEC)"
	@touch $@

$(VENV)/.core-installed: pyproject.toml $(VENV)/.torch-installed
	$(PIP) -e .
	@touch $@

$(VENV)/.test-installed: pyproject.toml $(VENV)/.core-installed
	$(PIP) -e ".[test]"
	@touch $@

demo: $(VENV)/.core-installed
	MPLBACKEND=Agg $(PY) -m analytic_dpm demo

test: $(VENV)/.test-installed
	MPLBACKEND=Agg $(PY) -m pytest -q

test-slow: $(VENV)/.test-installed
	MPLBACKEND=Agg $(PY) -m pytest -q -m slow

paper: $(VENV)/.test-installed
	MPLBACKEND=Agg $(PY) -m paper

theory: $(VENV)/.test-installed
	$(PY) -m theory

clean-venv:
	rm -rf $(VENV)

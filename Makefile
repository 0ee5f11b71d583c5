# Two commands from a fresh clone:  make demo   and   make test
# Each creates .venv when missing, installs torch first (TORCH_SPEC, a CPU wheel by default), then the package.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: demo test test-slow paper theory clean-venv fashion-mnist-data results-fashion-mnist

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch-installed: | $(PY)
	$(PIP) "$(TORCH_SPEC)"
	@touch $@

$(VENV)/.core-installed: pyproject.toml $(VENV)/.torch-installed
	$(PIP) -e .
	@touch $@

# Test-only reference implementations for tests/test_fid_parity.py, installed WITHOUT their dependencies: both
# declare torchvision, which must not be installed beside our torch (the test loads their source with a stub).
FID_REFERENCE_SPECS ?= pytorch-fid==0.3.0 torch-fidelity==0.4.0

$(VENV)/.test-installed: pyproject.toml $(VENV)/.core-installed
	$(PIP) -e ".[test]"
	$(PIP) --no-deps $(FID_REFERENCE_SPECS)
	@touch $@

demo: $(VENV)/.core-installed
	MPLBACKEND=Agg $(PY) -m analytic_dpm demo

test: $(VENV)/.test-installed
	MPLBACKEND=Agg $(PY) -m pytest -q

test-slow: $(VENV)/.test-installed
	MPLBACKEND=Agg $(PY) -m pytest -q -m slow

paper: $(VENV)/.test-installed fashion-mnist-data
	MPLBACKEND=Agg $(PY) -m paper

# Fashion-MNIST comes from the Debian package dataset-fashion-mnist (IDX files under /usr/share/datasets/fashion-mnist);
# installed here when missing (needs root or sudo). Point $$ANALYTIC_DPM_FASHION_MNIST elsewhere to skip it.
FASHION_MNIST_DIR ?= $(or $(ANALYTIC_DPM_FASHION_MNIST),/usr/share/datasets/fashion-mnist)
fashion-mnist-data:
	@if [ -f "$(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz" ] || [ -f "$(FASHION_MNIST_DIR)/train-images-idx3-ubyte" ]; then \
		echo "Fashion-MNIST found in $(FASHION_MNIST_DIR)"; \
	else \
		echo "Fashion-MNIST missing: installing the Debian package dataset-fashion-mnist"; \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q dataset-fashion-mnist || { \
			echo "Could not install dataset-fashion-mnist; install it with apt-get or set ANALYTIC_DPM_FASHION_MNIST"; exit 1; }; \
	fi

# The committed Fashion-MNIST tables (results/fashion-mnist-cpu), about an hour on 2 CPU cores; resumable.
results-fashion-mnist: $(VENV)/.core-installed fashion-mnist-data
	MPLBACKEND=Agg $(PY) -m analytic_dpm images --preset fashion-mnist-cpu --out results/fashion-mnist-cpu

theory: $(VENV)/.test-installed
	$(PY) -m theory

clean-venv:
	rm -rf $(VENV)

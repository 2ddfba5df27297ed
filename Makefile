# Two entry points for a fresh machine (Linux, Python 3.11, Node 20): `make synth` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
MXNET_VENV := .venv-mxnet
PY := $(VENV)/bin/python
CDK := npx --no-install cdk
ARTIFACTS_DIR := build/artifacts
PORT ?= 8080
CONTENT_TYPE ?= image/jpeg

# Offline and quiet: no version check, no notices, no Node 20 end-of-life banner from jsii.
export CDK_DISABLE_VERSION_CHECK := 1
# Nothing may call AWS: the CLI would otherwise send telemetry (cdk.json also says "cli-telemetry": false).
export CDK_DISABLE_CLI_TELEMETRY := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup setup-mxnet setup-runtimes runtimes artifacts synth lint diff cost serve invoke invoke-async test test-fast bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-bench.txt constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed $(MXNET_VENV)/.installed node_modules/.installed  ## venvs with pinned deps + the local CDK CLI + the config's runtimes
	@$(PY) -m runtimes setup --config config

# The serving runtimes (runtimes/__init__.py): one venv per serving image, with that image's Python (3.6 for
# the EIA images: PYTHON36=..., else pyenv's, else python3.6 on PATH) and its pinned framework, toolkit and
# model server. Models are converted and their handlers tested there. RUNTIMES="eia-pytorch-1.3.1 ..." picks.
setup-runtimes: $(VENV)/.installed  ## the runtimes' venvs (.venv-runtimes/): the config's, or RUNTIMES="name ..."
	@$(PY) -m runtimes setup $(if $(RUNTIMES),$(RUNTIMES),--config config)

runtimes: $(VENV)/.installed  ## every runtime's venv (make test needs them all: it tests every selectable profile)
	@$(PY) -m runtimes setup --all

# MXNet 1.9.1 needs numpy<1.24, which the main stack (numpy 2.x) cannot share: the MXNet SSD detector's export
# (model_artifacts/mxnet_export.py) and its handler tests run in their own venv. Its .gitignore keeps it out of git.
$(MXNET_VENV)/.installed: requirements-mxnet.txt constraints-mxnet.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(MXNET_VENV)
	echo '*' > $(MXNET_VENV)/.gitignore
	$(MXNET_VENV)/bin/python -m pip install --quiet --upgrade pip==25.3
	$(MXNET_VENV)/bin/python -m pip install --quiet -r requirements-mxnet.txt -c constraints-mxnet.txt
	touch $@

setup-mxnet: $(MXNET_VENV)/.installed  ## the MXNet venv (.venv-mxnet): GluonCV SSD export + its handler tests

# RUNTIME_EXPORT=DIR packages TorchScript converted in the runtime's own image (what the pipeline does).
artifacts: setup  ## build model.tar.gz + manifest.json for every configured model
	$(PY) -m model_artifacts build --out $(ARTIFACTS_DIR) $(if $(RUNTIME_EXPORT),--runtime-export $(RUNTIME_EXPORT))

# '**' selects the stacks inside every Stage; without a selection the CLI skips policy validation.
synth: artifacts  ## synthesize every environment into cdk.out/, checked by cdk-nag and cfn-lint
	$(CDK) synth '**' --quiet --no-notices
	$(MAKE) --no-print-directory lint

# E3002: the acknowledged EIA AcceleratorType (tests/test_stacks.py asserts it is the only one).
# W3005: CDK's own custom-resource providers add a DependsOn that a GetAtt already implies; harmless.
lint:  ## cfn-lint every synthesized template
	$(VENV)/bin/cfn-lint --ignore-checks E3002 W3005 -- cdk.out/*.template.json cdk.out/assembly-*/*.template.json

# Deploys every stack of cdk.out, in dependency order with its assets staged, into moto's emulation of the AWS APIs
# (in process, fake credentials, nothing beyond loopback) and checks what each made in its service; prints which
# resource types moto emulated and which were bridged or stubbed (deploy_rehearsal/). REHEARSE_ARGS="--then DIR"
# deploys another synthesized assembly next, as an update.
.PHONY: rehearse
rehearse: synth  ## deploy rehearsal of cdk.out against a local AWS emulation (moto); nothing reaches AWS
	$(PY) -m deploy_rehearsal cdk.out $(REHEARSE_ARGS)

# Builds and synthesizes BASE (in a temporary git worktree) and the working tree, then `cdk diff --template` per
# stack: no AWS call, build/ and cdk.out/ untouched. Assemblies are cached in .git/infra-diff-cache (README, "Reviewing
# infrastructure changes"; DIFF_ARGS=--no-cache bypasses it). infra_diff exits 0 (no differences),
# 1 (differences) or 2 (error); make shows that as "Error 1"/"Error 2" and itself exits 2 for both.
# DIFF_ARGS=--markdown: a summary table and collapsible blocks for a PR comment (.github/workflows/cdk-diff.yml).
BASE ?= $(shell git rev-parse -q --verify 'origin/main^{commit}' >/dev/null && echo origin/main || echo HEAD)
diff: setup  ## offline cdk diff of every stack against BASE (default origin/main): make diff BASE=HEAD~1
	@$(PY) -m infra_diff --base '$(BASE)' $(DIFF_ARGS)

# Prices from cost/data/ (dated), traffic and latency from cost/assumptions.yaml; no AWS call unless
# COST_ARGS=--live (AWS Pricing API, falls back to the table). Other flags: COST_ARGS="--requests-per-second 5".
cost: setup  ## per-environment cost of the configured profile and its alternatives, table + build/cost/cost.png
	$(PY) -m cost $(COST_ARGS)

# Builds the model (MODEL, default image-classifier) for a serving runtime in that runtime's venv, into
# build/serve/artifacts/<profile>-<version>/, and serves it with the runtime's own stack: multi-model-server +
# sagemaker-pytorch-inference 1.5 on Python 3.6 (EIA), TorchServe + 2.0 on Python 3.12 (2.6.0); for the detector
# (MODEL=object-detector) mxnet-model-server 1.0.5 (EIA MXNet 1.4.1) or multi-model-server 1.1.8 (MXNet 1.9.0).
# RUNTIME is a runtime (eia-pytorch-1.5.1, eia-pytorch-1.3.1, pytorch-2.6.0: cpu, eia-mxnet-1.4.1, mxnet-1.9.0) or a
# profile (eia, eia-1.3.1, gpu, cpu, serverless, async); without it, the configured profile's. A runtime's venv comes from
# `make setup-runtimes RUNTIMES=<runtime>`. The detector takes CONTENT_TYPE=application/json (its base64 contract).
serve: setup  ## serve a model on localhost:$(PORT) with its runtime's SageMaker serving stack: make serve RUNTIME=eia-pytorch-1.3.1
	$(PY) -m local_serving serve --port $(PORT) $(if $(RUNTIME),--runtime '$(RUNTIME)') $(if $(MODEL),--model '$(MODEL)')

invoke: setup  ## send an example image to `make serve` (CONTENT_TYPE=image/jpeg|image/png|application/json|application/x-npy)
	$(PY) -m local_serving invoke --port $(PORT) --content-type $(CONTENT_TYPE)

# The async profile's contract against `make serve` (local_serving/async_simulation.py): the request read from INPUT
# (default: the example image), the answer written to OUTPUT_DIR/output/<id>.out, a failure to
# OUTPUT_DIR/failures/<id>-error.out, as SageMaker writes them to S3. CONTENT_TYPE (given on the command line) overrides
# the type INPUT's extension gives.
OUTPUT_DIR ?= build/async
invoke-async: setup  ## simulate InvokeEndpointAsync against `make serve`: make invoke-async INPUT=cat.jpg OUTPUT_DIR=build/async
	$(PY) -m local_serving async --port $(PORT) --output '$(OUTPUT_DIR)' $(if $(INPUT),--input '$(INPUT)') \
		$(if $(filter command line,$(origin CONTENT_TYPE)),--content-type '$(CONTENT_TYPE)')

test: setup runtimes  ## the whole suite, end-to-end tests included
	$(PY) -m pytest

test-fast: setup runtimes  ## the suite without the slow end-to-end tests
	$(PY) -m pytest -m "not slow"

# Benchmarks, each a ratio measured within one run (benchmarks/README.md): rewrites benchmarks/results.json, the
# table in benchmarks/README.md and benchmarks/results.png. ONNX Runtime (the latency peer) comes from
# requirements-bench.txt, which the dev venv installs (the tests run its branch), never requirements.txt (the app);
# the latency benchmark measures in the pytorch-2.6.0 runtime and installs the same pins for that runtime's Python
# under build/bench/ (on PYTHONPATH for the benchmark only: the runtime's venv stays the image's).
# BENCH_ARGS="latency serving" runs a subset.
# The serving benchmark measures both runtimes endpoints run: the successors' (pytorch-2.6.0) and the EIA image's.
bench: setup  ## latency, serving overhead, cdk synth, build, workers x threads, scale, make diff benchmarks (see benchmarks/README.md)
	@$(PY) -m runtimes setup pytorch-2.6.0 eia-pytorch-1.5.1
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf cdk.out build .pytest_cache

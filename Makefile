# One command per task. Every target that needs Python creates the virtualenv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian handwriting fonts: more writing styles for the synthetic lines (optional; skipped without apt).
DEB_FONTS := fonts-dkg-handwriting fonts-breip fonts-sjfonts fonts-femkeklaver fonts-kristi \
  fonts-tlwg-purisa-ttf fonts-dancingscript fonts-havana fonts-kaushanscript fonts-ecolier-court \
  fonts-dustin fonts-rufscript fonts-comic-neue fonts-kiloji
# Debian's fortune collections: English prose for the decoder's character LM (configs/cpu.yaml's
# decode.lm_corpus; optional, skipped without apt).
DEB_TEXT := fortunes
# npm @fontsource handwriting families, pinned by fonts/package-lock.json (optional; skipped without npm).
FONTSOURCE_STAMP := fonts/node_modules/.installed
PYTEST_ARGS ?=

.PHONY: install fonts corpora browser test test-slow lint typecheck check format local clean pipeline-compile pipeline-run mlflow-ui mlflow-stop

install: $(STAMP) fonts corpora

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# $(call apt_optional,PACKAGES,WHAT,WITHOUT): install Debian PACKAGES when root with apt-get, else say
# what a run will do WITHOUT them; never fails the build.
apt_optional = if dpkg -s $(1) >/dev/null 2>&1; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing $(2)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null) \
	    || echo "warning: $(2) not installed; $(3)"; \
	else echo "note: no apt-get as root; $(3)"; fi

fonts: $(FONTSOURCE_STAMP)
	@$(call apt_optional,$(DEB_FONTS),Debian handwriting fonts,using the PyPI and npm handwriting fonts only)

corpora:
	@$(call apt_optional,$(DEB_TEXT),Debian's fortune collections (English prose for the decoder's LM),the language model will know the training texts only)

$(FONTSOURCE_STAMP): fonts/package.json fonts/package-lock.json
	@if command -v npm >/dev/null; then \
	  echo "installing the npm handwriting fonts into fonts/node_modules"; \
	  (npm ci --prefix fonts --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null && touch $@) \
	    || echo "warning: npm handwriting fonts not installed; the PyPI and Debian fonts alone will be used"; \
	else echo "note: no npm; skipping the npm handwriting fonts of fonts/package.json"; fi

test: install browser
	$(BIN)/pytest $(PYTEST_ARGS)

# Debian's chromium, for the tests that look at web pages in a real headless browser (they skip without it).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "warning: chromium not installed; the browser tests will be skipped"; \
	else echo "note: no apt-get as root; the browser tests will be skipped"; fi

test-slow: install
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check textrec cluster components pipelines serving tests benchmarks docker

# Static types of the library and the cluster code (settings in pyproject.toml).
typecheck: $(STAMP)
	$(BIN)/mypy

# What CI runs before the tests.
check: lint typecheck

format: $(STAMP)
	$(BIN)/ruff format textrec cluster components pipelines serving tests benchmarks docker

# The whole pipeline on this machine (kfp.local): PROFILE=cpu (default, ~20 min on 2 cores) or smoke
# (~1-3 min). Without MLFLOW_TRACKING_URI a local MLflow server is started and left running.
PROFILE ?= cpu
DATA_SOURCE ?= none
# REAL_VAL: labelled real lines every run is judged on (a TSV of image<TAB>text rows, an IAM lines folder,
# or an s3:// URI of either); empty: none.
REAL_VAL ?=
# LOCAL_BACKEND: auto (kind when `kind` and a working Docker engine exist, else embedded), embedded, kind.
LOCAL_BACKEND ?= auto
local: install
	@backend="$(LOCAL_BACKEND)"; \
	if [ "$$backend" = auto ]; then \
	  if command -v kind >/dev/null 2>&1 && docker info >/dev/null 2>&1; then backend=kind; else backend=embedded; fi; \
	fi; \
	case "$$backend" in \
	  kind) echo "make local: running the components on kind (LOCAL_BACKEND=embedded to run them here)"; \
	        $(MAKE) --no-print-directory local-kind ;; \
	  embedded) echo "make local: running the pipeline embedded (kfp.local + local MLflow; no kind/Docker in use)"; \
	        $(BIN)/python -m pipelines.local --profile $(PROFILE) --data-source "$(DATA_SOURCE)" \
	          --real-val "$(REAL_VAL)" ;; \
	  *) echo "make local: LOCAL_BACKEND must be auto, embedded or kind, not '$$backend'" >&2; exit 2 ;; \
	esac

# Kubeflow Pipelines: compile the golden file; submit a run (KFP_HOST, KFP_NAMESPACE, KFP_TOKEN,
# KFP_EXPERIMENT; PROFILE picks configs/$(PROFILE).yaml as the training config).
pipeline-compile: $(STAMP)
	env -u TEXTREC_IMAGE $(BIN)/python -m pipelines.textrec_pipeline

# With IMAGE_REGISTRY set (and no TEXTREC_IMAGE), the components run in the image `make images` pushed.
pipeline-run: $(STAMP)
	$(if $(and $(IMAGE_REGISTRY),$(if $(TEXTREC_IMAGE),,x)),TEXTREC_IMAGE="$(patsubst %/,%,$(IMAGE_REGISTRY))/textrec-component:$(IMAGE_TAG)") \
	  $(BIN)/python -m pipelines.submit --profile $(PROFILE) --real-val "$(REAL_VAL)"

# The local MLflow server (sqlite + artifacts under .textrec/mlflow): start or show it, stop it.
mlflow-ui: $(STAMP)
	$(BIN)/python -m pipelines.local --serve-only

mlflow-stop: $(STAMP)
	$(BIN)/python -m pipelines.local --stop-server

clean:
	-test -x $(BIN)/python && $(BIN)/python -m serving stop >/dev/null 2>&1
	-test -x $(BIN)/python && $(BIN)/python -m pipelines.local --stop-server
	rm -rf .textrec .pytest_cache .ruff_cache

# Kubernetes delivery: images, charts, a local kind cluster (see docs/kubernetes.md).
IMAGE_REGISTRY ?=
IMAGE_TAG ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
.PHONY: images charts-lint local-kind

images:
	IMAGE_REGISTRY="$(IMAGE_REGISTRY)" IMAGE_TAG="$(IMAGE_TAG)" docker/build-images.sh

charts-lint: $(STAMP)
	$(BIN)/pytest -q tests/test_charts.py

local-kind:
	IMAGE_TAG="$(IMAGE_TAG)" deploy/kind/local-kind.sh

# Local TorchServe with the registry's champion (or MODEL=path/to/model.pt); see docs/serving.md.
MODEL ?=
.PHONY: serve serve-stop

serve: $(STAMP)
	$(BIN)/python -m serving serve $(if $(MODEL),--model "$(MODEL)",) $(if $(RUNTIME),--runtime "$(RUNTIME)",)

serve-stop: $(STAMP)
	$(BIN)/python -m serving stop $(if $(RUNTIME),--runtime "$(RUNTIME)",)

# Train one recipe without the pipeline: configs/$(PROFILE).yaml into .textrec/runs/$(PROFILE)
# (resumes from its last checkpoint if interrupted); TRAIN_ARGS adds overrides, e.g. --loop.epochs=3.
TRAIN_ARGS ?=
.PHONY: train

train: install
	$(BIN)/textrec train --config configs/$(PROFILE).yaml --out .textrec/runs/$(PROFILE) --resume auto $(TRAIN_ARGS)

# Population-based training of a recipe (see docs/pbt.md): PBT=sweeps/pbt.yaml (or sweeps/pbt-smoke.yaml);
# PBT_ARGS adds options, e.g. --population 6 --mlflow-uri http://127.0.0.1:5000.
PBT ?= sweeps/pbt.yaml
PBT_ARGS ?=
.PHONY: pbt

pbt: install
	$(BIN)/textrec pbt --config $(PBT) $(PBT_ARGS)

# Hyperparameter sweeps (see docs/sweeps.md): SWEEP's Optuna study on this machine, resumable (run it
# again to continue); SWEEP_ARGS adds options, e.g. --workers 2 --trials 12. sweep-run submits the same
# sweep as a Katib Experiment (KATIB_ARGS=--dry-run prints the manifest instead).
SWEEP ?= sweeps/cpu.yaml
SWEEP_ARGS ?=
KATIB_ARGS ?=
.PHONY: sweep sweep-run

sweep: install
	$(BIN)/textrec sweep --config $(SWEEP) $(SWEEP_ARGS)

sweep-run: $(STAMP)
	$(BIN)/python -m cluster.katib --config $(SWEEP) $(KATIB_ARGS)

# Review captured lines in a browser (see docs/review.md): QUEUE (a folder or s3:// prefix the serving
# runtimes capture into) into REVIEWED, on 127.0.0.1:8095; REVIEW_ARGS adds options, e.g. --source batch-7.
QUEUE ?= .textrec/capture
REVIEWED ?= .textrec/reviewed
REVIEW_ARGS ?=
.PHONY: review

review: $(STAMP)
	$(BIN)/textrec review --queue "$(QUEUE)" --store "$(REVIEWED)" $(REVIEW_ARGS)

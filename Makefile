# One command per task. Every target that needs Python creates the virtualenv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian handwriting fonts: more writing styles for the synthetic lines (optional; skipped without apt).
DEB_FONTS := fonts-dkg-handwriting fonts-breip fonts-sjfonts fonts-femkeklaver fonts-kristi \
  fonts-tlwg-purisa-ttf fonts-dancingscript fonts-havana fonts-kaushanscript fonts-ecolier-court \
  fonts-dustin fonts-rufscript fonts-comic-neue
PYTEST_ARGS ?=

.PHONY: install fonts test test-slow lint format local clean

install: $(STAMP) fonts

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

fonts:
	@if [ -e /usr/share/fonts/truetype/kristi/Kristi.ttf ]; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian handwriting fonts"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_FONTS) >/dev/null) \
	    || echo "warning: Debian handwriting fonts not installed; the PyPI fonts alone will be used"; \
	else echo "note: no apt-get as root; using the PyPI handwriting fonts only"; fi

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

test-slow: install
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check textrec components pipelines serving tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format textrec components pipelines serving tests benchmarks

local: install
	$(BIN)/textrec data synth --n 2000 --out .textrec/data/synth.h5
	$(BIN)/textrec data info .textrec/data/synth.h5
	$(BIN)/textrec data show .textrec/data/synth.h5 --out .textrec/data/synth-grid.png

clean:
	rm -rf .textrec .pytest_cache .ruff_cache

# Two commands a new user needs (README.md):  make app   |   make test
# Each does its own set-up: a virtual environment with the pinned requirements (torch first, CPU
# wheel) and the front-end asset (3Dmol.js, served locally so the 3D viewer works offline).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements-installed
ASSET  := app/static/3Dmol-min.js
DMOL_VERSION := 2.5.5

.PHONY: app test setup assets browser clean-venv

setup: $(STAMP) $(ASSET)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0          # CPU wheel first: an unpinned torch pulls CUDA
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# 3Dmol.js from the npm registry (falls back to the CDN in the app when npm is absent)
$(ASSET):
	@mkdir -p app/static
	@if command -v npm >/dev/null 2>&1; then \
	  tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent 3dmol@$(DMOL_VERSION) >/dev/null && tar xzf 3dmol-$(DMOL_VERSION).tgz) && \
	  cp $$tmp/package/build/3Dmol-min.js $@ && rm -rf $$tmp && echo "fetched 3Dmol.js $(DMOL_VERSION)"; \
	else echo "npm not found: the 3D viewer will load 3Dmol.js from the internet"; fi

# Debian's Chromium for the real-browser tests (needs root; skipped with a message otherwise)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null); } || echo "chromium not installed: browser tests will be skipped"

app: setup
	$(VENV)/bin/streamlit run app/main.py

test: setup browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest

clean-venv:
	rm -rf $(VENV)

# Two commands matter: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean browser prometheus

setup: $(STAMP)

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	@touch $(STAMP)

demo: setup
	$(BIN)/moodwire demo

# The browser test needs Chromium; installing it is best effort (root or password-less sudo).
test: setup
	@$(MAKE) --no-print-directory browser >/dev/null 2>&1 \
	  || echo "note: Chromium could not be installed; the browser test (tests/e2e) will skip"
	@$(MAKE) --no-print-directory prometheus >/dev/null 2>&1 \
	  || echo "note: Prometheus could not be installed; tests/dashboards/test_prometheus.py will skip"
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# mypy's second run is bench/ alone: see [tool.mypy] in pyproject.toml.
lint: setup
	$(BIN)/ruff check services tests bench
	$(BIN)/ruff format --check services tests bench
	$(BIN)/mypy
	MYPYPATH=bench $(BIN)/mypy --cache-dir .mypy_cache/bench bench

bench: setup
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/classifier.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/peers.py
	$(BIN)/python bench/alerts.py

# Headless Chromium for the browser test (tests/e2e skips without it): Debian's package.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo -n)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)
	@chromium --version 2>/dev/null || chromium-browser --version

# A real Prometheus for the metrics test (tests/dashboards/test_prometheus.py): Debian's package.
prometheus:
	@command -v prometheus >/dev/null 2>&1 \
	  || ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends prometheus)
	@prometheus --version 2>&1 | head -1

clean:
	rm -rf $(VENV) build *.egg-info

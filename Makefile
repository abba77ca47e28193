# Every target installs on demand: on a fresh machine `make run` or `make test` is the whole set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install chromium run demo test test-unit test-integration bench bench-mask bench-window bench-report bench-suspend clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/plugwatch up

demo: $(STAMP)
	$(BIN)/plugwatch demo

# The report page is checked in headless Chromium (Debian's package): installed here when missing.
chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium package (for the report page test)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

test-integration: $(STAMP) chromium
	$(BIN)/python -m pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/plugwatch bench ingest --events 100000

bench-mask: $(STAMP)
	$(BIN)/plugwatch bench mask

bench-report: $(STAMP)
	$(BIN)/plugwatch bench report

bench-suspend: $(STAMP)
	$(BIN)/plugwatch bench suspend

bench-window: $(STAMP)
	$(BIN)/plugwatch bench window

clean:
	rm -rf $(VENV) var demo-out .pytest_cache .hypothesis

# Sluice: `make run` serves examples/dags; `make test` runs the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Airflow's Task SDK runtime is tested in its own venv until it replaces shared/sdk
SDK_VENV := .venv-sdk
SDK_STAMP := $(SDK_VENV)/.installed

.PHONY: run test test-legacy test-sdk faults bench lint clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sluice standalone --dags-folder examples/dags

$(SDK_STAMP): pyproject.toml
	test -x $(SDK_VENV)/bin/python || $(PY) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/pip install -q --upgrade pip
	$(SDK_VENV)/bin/pip install -q -e '.[dev,airflow]'
	touch $(SDK_STAMP)

test: test-legacy test-sdk

# the web UI's tests drive Debian's Chromium through its chromedriver, never a downloaded browser
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

test-legacy: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not faults" --ignore=tests/sdk $(PYTEST_ARGS)

test-sdk: $(SDK_STAMP)
	$(SDK_VENV)/bin/python -m pytest -q -p no:cacheprovider -m "not faults" tests/sdk $(PYTEST_ARGS)

faults: $(STAMP)
	SLUICE_FAULTS_SIZE=1000 $(BIN)/python -m pytest -q -p no:cacheprovider -m faults tests/faults

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(SDK_VENV)

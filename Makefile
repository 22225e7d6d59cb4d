# Sluice: `make run` serves examples/dags; `make test` runs the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test faults bench lint clean browser k8s-build

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sluice standalone --dags-folder examples/dags

# the web UI's tests drive Debian's Chromium through its chromedriver, never a downloaded browser
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

# tests/k8s run on Sluice's own Kubernetes cluster: its binaries and images are built (once,
# cached outside the repository) before the suite, which starts and stops the cluster itself
k8s-build:
	deploy/k8s/cluster.sh build

test: $(STAMP) browser k8s-build
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not faults" $(PYTEST_ARGS)

faults: $(STAMP)
	SLUICE_FAULTS_SIZE=1000 $(BIN)/python -m pytest -q -p no:cacheprovider -m faults tests/faults

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV)

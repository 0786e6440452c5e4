# kubellm developer entry points. The two that matter:
#   make quickstart   run the main job locally (installs first)
#   make test         lint, type-check and run every test on a real control plane (installs first)

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS ?= operator,runtime,dev
PYTEST_ARGS ?=

.PHONY: quickstart test setup system-deps cluster-binaries cluster-up cluster-down \
        lint typecheck imports unit integration crds argocd-health clean

quickstart: setup
	$(VENV)/bin/kubellm run -f examples/quickstart/

test: setup system-deps cluster-binaries lint typecheck imports
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Debian packages the tests need (redis-server, openssl); installs only what is missing.
system-deps:
	@bash .ci/system-deps.sh

# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and helm
# from Go modules into ~/.cache/kubellm (once; later runs reuse the cache).
cluster-binaries:
	@bash tests/harness/cluster-binaries.sh

cluster-up: setup cluster-binaries
	$(PY) -m tests.harness.cluster up --dir .cluster

cluster-down:
	$(PY) -m tests.harness.cluster down --dir .cluster

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy operator/kubellm runtime/kubellm tests

imports: setup
	$(VENV)/bin/lint-imports

unit: setup
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

integration: setup system-deps cluster-binaries
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

# Regenerate crds/*.yaml from the typed API models (tests fail when they are stale).
crds: setup
	$(PY) -m kubellm.operator.api.crdgen crds/

# Regenerate the Argo CD health-check snippet from the API's condition names.
argocd-health: setup
	$(PY) -m kubellm.operator.api.health examples/argocd/argocd-cm-health.yaml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache

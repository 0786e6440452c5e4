"""Security, measured on the real control plane and on real runtime processes.

1. Every pod the operator creates (its pure builders, on the examples and on specs with GPUs,
   PVCs and secrets) and every pod template the chart renders is admitted by the API server's
   own Pod Security admission in a namespace enforcing "restricted" (server-side dry-run).
2. The operator's RBAC (``rbac.yaml``) is exactly what it uses: the operator runs watching one
   namespace, then cluster-wide, each time with leader election (a Lease), through ``kubectl
   proxy`` under its ServiceAccount, while the examples go through their life cycle (optional
   children added and removed, a child deleted and restored);
   every API request it makes is turned into (group, resource, verb) as the API server's
   authorizer sees it, and compared with the rules. Extra or missing permissions fail.
3. Credentials never show: a Secret holding a canary Hub token and API key is referenced by the
   custom resources of that run; the canary must not appear in the operator's log, in any object
   of the namespace (status, events, ConfigMaps, children), nor in what ``kubellm train`` and
   ``kubellm experiment`` print or write while using it, even when the server echoes the key.
4. ``pip-audit`` on the installed dependencies, when its vulnerability service can be reached.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from kubellm.operator.api import FineTuneJobSpec, ModelDeploymentSpec, PromptExperimentSpec
from kubellm.operator.manifests import finetunejob, modeldeployment, promptexperiment
from kubellm.operator.manifests.common import Owner
from tests.api_cases import EXAMPLES, load_example, merge_patch
from tests.harness.cluster import Cluster, binaries_dir, free_port
from tests.harness.operator_process import (
    OperatorProcess,
    apply_crds,
    get_json,
    operator_kubeconfig,
    wait_for,
)
from tests.reliability.conftest import RecordFigure
from tests.reliability.test_experiment_resume import Endpoint, experiment_config, serve_endpoint, start_experiment

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubellm"
RBAC_RULES = ROOT / "operator" / "kubellm" / "operator" / "rbac.yaml"
IMAGE = "ghcr.io/kubellm/runtime:0.1.0"
KUBELLM = Path(sys.executable).with_name("kubellm")
CANARY = "SECRETcanary"
HUB_TOKEN = f"hf_{CANARY}123"
API_KEY = f"sk-{CANARY}456"
CREDENTIALS = {"name": "model-credentials", "key": "token"}
API_KEY_REF = {"name": "model-credentials", "key": "api-key"}
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}
LEASE = "kubellm-security"
FAST = ("--wait-seconds", "1", "--error-backoff-seconds", "1", "--workers", "8")
GPU = {"resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"}}}
SCHEDULING = {
    "nodeSelector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
}

# --- 1. restricted Pod Security -------------------------------------------------------------------


def _owner(kind: str, name: str) -> Owner:
    return Owner(kind=kind, name=name, namespace="ns", uid=f"uid-{name}")


def _templates(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [child["spec"]["template"]["spec"] for child in children if child["kind"] in ("Job", "Deployment")]


def operator_pod_specs() -> dict[str, dict[str, Any]]:
    """The pod specs the operator's builders make for the examples and for GPU/PVC/secret variants."""
    ftj, mdep, pexp = (load_example(name)["spec"] for name in ("finetunejob", "modeldeployment", "promptexperiment"))
    gated = {"baseModel": {"uri": "hf://org/gated-model", "tokenSecretRef": CREDENTIALS}, **GPU, **SCHEDULING}
    trainings = {"finetunejob": ftj, "finetunejob-gpu-hub-token": merge_patch(ftj, gated)}
    served = {
        "fineTuneJobRef": None,
        "model": {"uri": "hf://org/gated-model", "tokenSecretRef": CREDENTIALS},
        "adapters": [{"name": "support", "uri": "pvc://adapters/support"}],
        "apiKeySecretRef": API_KEY_REF,
        "serving": {"cache": {"enabled": True, "url": "redis://redis:6379/0", "passwordSecretRef": CREDENTIALS}},
        **GPU,
        **SCHEDULING,
    }
    adapter = modeldeployment.ServedModel(uri="pvc://kubellm-models/smollm2-dates", kind="adapter", base_uri="x")
    servers = {
        "modeldeployment": (mdep, adapter),
        "modeldeployment-gpu-pvc-secrets": (
            merge_patch(mdep, served),
            modeldeployment.ServedModel(uri="hf://org/gated-model", adapters=(("support", "pvc://adapters/support"),)),
        ),
    }
    keyed = merge_patch(pexp, {"target": {"modelDeploymentRef": None, "url": "http://llm:8000/v1"}})
    keyed["target"]["apiKeySecretRef"] = API_KEY_REF
    experiments = {"promptexperiment": pexp, "promptexperiment-api-key": keyed}
    specs: dict[str, dict[str, Any]] = {}
    for name, spec in trainings.items():
        (specs[name],) = _templates(finetunejob.build_children(_owner("FineTuneJob", name), _ftj(spec), IMAGE))
    for name, (spec, model) in servers.items():
        owner = _owner("ModelDeployment", name)
        (specs[name],) = _templates(modeldeployment.build_children(owner, _mdep(spec), model, IMAGE))
    for name, spec in experiments.items():
        owner = _owner("PromptExperiment", name)
        children = promptexperiment.build_children(owner, _pexp(spec), "http://llm:8000/v1", "m", IMAGE)
        (specs[name],) = _templates(children)
    return specs


def _ftj(spec: dict[str, Any]) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(spec)


def _mdep(spec: dict[str, Any]) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(spec)


def _pexp(spec: dict[str, Any]) -> PromptExperimentSpec:
    return PromptExperimentSpec.model_validate(spec)


CHART_VALUES = {
    "defaults": [],
    "everything-on": [
        "--set", "operator.watchNamespaces={team-a,team-b}",
        "--set", "redis.enabled=true",
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "metrics.grafanaDashboard.enabled=true",
        "--set", "networkPolicy.enabled=true",
    ],
}  # fmt: skip


def chart_pod_specs() -> dict[str, dict[str, Any]]:
    """Every pod template (or pod) ``helm template`` renders, with defaults and with everything on."""
    specs = {}
    for label, values in CHART_VALUES.items():
        helm = [
            str(binaries_dir() / "helm"),
            "template",
            "kubellm",
            str(CHART),
            "-n",
            "kubellm-system",
            "--kube-version",
            "1.36.3",
            *values,
        ]
        rendered = subprocess.run(helm, capture_output=True, text=True, check=True).stdout
        for doc in (d for d in yaml.safe_load_all(rendered) if d):
            spec = doc["spec"] if doc["kind"] == "Pod" else doc.get("spec", {}).get("template", {}).get("spec")
            if spec is None and doc["kind"] == "CronJob":
                spec = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            if spec is not None:
                specs[f"chart-{label}-{doc['kind'].lower()}-{doc['metadata']['name']}"] = _with_claims(doc, spec)
    return specs


def _with_claims(workload: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A StatefulSet's pod as the controller makes it: one PVC volume per claim template."""
    templates = workload.get("spec", {}).get("volumeClaimTemplates", [])
    claims = [{"name": t["metadata"]["name"], "persistentVolumeClaim": {"claimName": "x"}} for t in templates]
    return {**spec, "volumes": [*spec.get("volumes", []), *claims]} if claims else spec


def _violations(message: str) -> list[str]:
    """The checks a Pod Security refusal lists: 'violates PodSecurity "restricted:latest": a (..), b (..)'."""
    _, _, listed = message.partition('violates PodSecurity "restricted:latest": ')
    items, depth, current = [], 0, ""
    for char in listed:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    return [item for item in [*items, current.strip()] if item]


def _dry_run_pod(api: k8s_client.CoreV1Api, namespace: str, name: str, spec: dict[str, Any]) -> list[str]:
    """Pod Security violations the API server reports for a pod (server-side dry-run)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name[:63], "namespace": namespace}, "spec": spec}
    try:
        api.create_namespaced_pod(namespace, pod, dry_run="All")  # type: ignore[arg-type]  # a dict body is sent as is
    except k8s_client.ApiException as error:
        message = json.loads(error.body or "{}").get("message", str(error))
        found = _violations(message)
        assert found, f"{name}: refused for another reason: {message}"
        return found
    return []


@pytest.fixture
def admin_api(cluster: Cluster) -> Iterator[k8s_client.CoreV1Api]:
    """A client of the test control plane with the admin's credentials."""
    api = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
    yield k8s_client.CoreV1Api(api)
    api.close()


def test_every_pod_passes_restricted_pod_security(
    cluster: Cluster, namespace: str, admin_api: k8s_client.CoreV1Api, figure: RecordFigure
) -> None:
    cluster.kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in RESTRICTED.items()), "--overwrite")
    pods = {**operator_pod_specs(), **chart_pod_specs()}
    for account in sorted({spec.get("serviceAccountName", "default") for spec in pods.values()} - {"default"}):
        cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
    control = {"containers": [{"name": "c", "image": "busybox:1.36", "securityContext": {"privileged": True}}]}
    assert _dry_run_pod(admin_api, namespace, "privileged-control", control), "restricted is not enforced"

    found = {name: _dry_run_pod(admin_api, namespace, name, spec) for name, spec in pods.items()}
    failing = {name: checks for name, checks in found.items() if checks}
    count = sum(len(checks) for checks in failing.values())
    chart = sum(name.startswith("chart-") for name in pods)
    print(f"\n[security] {len(pods)} pod specs dry-run ({chart} from the chart); violations: {failing}")
    figure("security", "pod specs dry-run in a restricted namespace", f"{len(pods) - chart} operator + {chart} chart")
    figure("security", "restricted Pod Security violations", count, "0", count == 0)
    assert not failing
    assert len(pods) - chart == 6 and chart >= 3


def test_controllers_create_the_operators_pods_in_a_restricted_namespace(
    operator_run: OperatorRun, figure: RecordFigure
) -> None:
    pods = [item for item in json.loads(operator_run.objects)["items"] if item["kind"] == "Pod"]
    owners = sorted({ref["kind"] for pod in pods for ref in pod["metadata"].get("ownerReferences", [])})
    print(f"\n[security] {len(pods)} pods admitted under enforce=restricted, made by {owners}")
    figure("security", "operator workload pods admitted under enforce=restricted", len(pods), ">= 4", len(pods) >= 4)
    assert len(pods) >= 4 and owners == ["Job", "ReplicaSet"], owners  # 3 Jobs (2 trainings, 1 experiment), 1 server


# --- 2. RBAC against the requests the operator makes ------------------------------------------------

Permission = tuple[str, str, str]  # (API group, resource[/subresource], verb)
_PROXY_LINE = re.compile(r'"Response" verb="(\w+)" url="([^"]+)" status="(\d+)')
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}
# A permission the run cannot exercise, inferred from the same code path it does exercise: a
# ServiceMonitor or a KEDA ScaledObject is an optional child handled exactly like an Ingress, and
# this control plane has neither the Prometheus Operator's nor KEDA's CRDs (installing one would
# change what other tests see).
_SAME_PATH_AS = {
    ("monitoring.coreos.com", "servicemonitors"): ("networking.k8s.io", "ingresses"),
    ("keda.sh", "scaledobjects"): ("networking.k8s.io", "ingresses"),
}


@dataclass(frozen=True)
class ApiRequest:
    """One request the operator sent, as ``kubectl proxy -v=6`` logged it."""

    method: str
    url: str
    status: int

    def permissions(self) -> list[Permission]:
        """What the authorizer checks for it (none for discovery); an apply that created checks create too."""
        path, _, query = self.url.split("://", 1)[-1].partition("/")[2].partition("?")
        parts = path.split("/")
        if parts[0] == "api" and len(parts) > 2:
            group, rest = "", parts[2:]
        elif parts[0] == "apis" and len(parts) > 3:
            group, rest = parts[1], parts[3:]
        else:
            return []  # /api, /apis, /version, /openapi: discovery, open to every authenticated user
        if rest[0] == "namespaces" and len(rest) > 2:
            rest = rest[2:]
        resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2:3]
        if sub:
            resource = f"{resource}/{sub[0]}"
        if self.method == "GET":
            verb = "get" if name else ("watch" if re.search(r"(^|&)watch=(true|1)", query, re.IGNORECASE) else "list")
        elif self.method == "DELETE":
            verb = "delete" if name else "deletecollection"
        else:
            verb = _VERBS[self.method]
        extra = [(group, resource, "create")] if verb == "patch" and self.status == 201 else []
        return [(group, resource, verb), *extra]


def granted_permissions(rules: list[dict[str, Any]]) -> set[Permission]:
    """Every (group, resource, verb) the rules grant."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def required_permissions(requests: list[ApiRequest]) -> set[Permission]:
    """What the requests need, plus what the same code paths need elsewhere and blockOwnerDeletion needs."""
    used = {permission for request in requests for permission in request.permissions()}
    for (group, resource), (seen_group, seen_resource) in _SAME_PATH_AS.items():
        used |= {(group, resource, verb) for g, r, verb in set(used) if (g, r) == (seen_group, seen_resource)}
    # Children's owner references set blockOwnerDeletion, which clusters with the
    # OwnerReferencesPermissionEnforcement admission plugin only allow with update on the owner's
    # finalizers (an authorization check without a request of its own).
    if Owner("FineTuneJob", "x", "ns", "uid").reference().get("blockOwnerDeletion"):
        used |= {("kubellm.io", f"{plural}/finalizers", "update") for plural in _custom_plurals()}
    return used


def _custom_plurals() -> list[str]:
    from kubellm.operator import api  # noqa: PLC0415

    return [info.plural for info in api.KINDS]


@dataclass
class OperatorRun:
    """What one operator run over the examples left behind."""

    namespace: str
    requests: list[ApiRequest]
    operator_log: str
    objects: str


def _apply(cluster: Cluster, ns: str, *docs: dict[str, Any]) -> None:
    # JSON: PyYAML writes "2e-4" unquoted, which kubectl would read back as a number.
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))


def _condition(cluster: Cluster, ns: str, resource: str, kind: str, status: str) -> None:
    def met() -> bool:
        conditions = get_json(cluster, "-n", ns, resource).get("status", {}).get("conditions", [])
        return any(c["type"] == kind and c["status"] == status for c in conditions)

    wait_for(f"{resource} {kind}={status}", met, timeout=90)


def _absent(cluster: Cluster, ns: str, resource: str) -> bool:
    return cluster.kubectl("get", "-n", ns, resource, check=False).returncode != 0


def _trainings(cluster: Cluster, ns: str) -> None:
    """The FineTuneJob example and a gated-model one holding a Hub token by reference, to Succeeded."""
    tokens = [f"--from-literal=token={HUB_TOKEN}", f"--from-literal=api-key={API_KEY}"]
    cluster.kubectl("create", "secret", "generic", "model-credentials", "-n", ns, *tokens)
    documents = list(yaml.safe_load_all((EXAMPLES / "finetunejob.yaml").read_text()))
    gated = merge_patch(load_example("finetunejob"), {"metadata": {"name": "gated"}})
    gated["spec"]["baseModel"] = {"uri": "hf://org/gated-model", "tokenSecretRef": CREDENTIALS}
    _apply(cluster, ns, *documents, gated)
    _condition(cluster, ns, "ftj/gated", "Succeeded", "True")
    _condition(cluster, ns, "ftj/smollm2-dates", "Succeeded", "True")


def _serving_and_experiment(cluster: Cluster, ns: str) -> None:
    """The other examples with API keys by reference; optional children on and off, a child deleted."""
    server = load_example("modeldeployment")
    server["spec"] |= {"apiKeySecretRef": API_KEY_REF, "ingress": {"host": "llm.example.com"}}
    _apply(cluster, ns, server)
    _condition(cluster, ns, "mdep/smollm2", "Ready", "True")
    experiment = load_example("promptexperiment")
    experiment["spec"]["target"]["apiKeySecretRef"] = API_KEY_REF
    _apply(cluster, ns, experiment)
    wait_for("the experiment Job", lambda: not _absent(cluster, ns, "job/prompt-styles"))
    result = {"winner": "few-shot", "summary": "few-shot wins", "results": [], "comparisons": []}
    patch = json.dumps({"data": {"result.json": json.dumps(result)}})
    cluster.kubectl("patch", "-n", ns, "cm/prompt-styles-report", "--type=merge", "-p", patch)
    _condition(cluster, ns, "pexp/prompt-styles", "Ready", "True")
    optional_off = json.dumps({"spec": {"autoscaling": None, "ingress": None, "replicas": 1}})
    cluster.kubectl("patch", "-n", ns, "mdep/smollm2", "--type=merge", "-p", optional_off)
    gone = ("hpa/smollm2", "ingress/smollm2")
    wait_for("HPA and Ingress removed", lambda: all(_absent(cluster, ns, resource) for resource in gone))
    cluster.kubectl("delete", "-n", ns, "svc/smollm2")
    wait_for("the Service restored", lambda: not _absent(cluster, ns, "svc/smollm2"))


def _proxy(cluster: Cluster, kubeconfig: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``kubectl proxy`` with the operator's credentials, logging every request (-v=6)."""
    command = [str(cluster.bin_dir / "kubectl"), "proxy", f"--port={port}", f"--kubeconfig={kubeconfig}", "-v=6"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=cluster.env())

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            assert process.poll() is None, log.read_text()
            return False

    wait_for("kubectl proxy", up, timeout=30)
    return process


NAMESPACED_KINDS = (
    "configmaps,events,pods,jobs,deployments,replicasets,services,horizontalpodautoscalers,ingresses,"
    "serviceaccounts,roles,rolebindings,persistentvolumeclaims,finetunejobs,modeldeployments,promptexperiments"
)


@pytest.fixture(scope="module")
def operator_run(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, token_training: TokenTraining
) -> Iterator[OperatorRun]:
    """The operator through ``kubectl proxy`` in both modes, each with leader election, over the examples' life cycle.

    Watching one namespace it runs the trainings (creating the Lease, renewing it, releasing it
    on SIGTERM); then cluster-wide the serving and the experiment (taking the released Lease).
    """
    folder, ns = tmp_path_factory.mktemp("security"), f"security-{os.getpid()}"
    apply_crds(cluster)
    # Restricted here too: the pods the Job and Deployment controllers make are admitted for real.
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": RESTRICTED}}
    cluster.kubectl("create", "-f", "-", input=json.dumps(namespace))
    cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", ns, "--timeout=60s")
    port, proxy_log = free_port(), folder / "proxy.log"
    proxy = _proxy(cluster, operator_kubeconfig(cluster, folder / "operator-account"), port, proxy_log)
    kubeconfig = _proxied_kubeconfig(folder / "kubeconfig", port)
    logs = [folder / "operator-namespaced.log", folder / "operator-cluster-wide.log"]
    try:
        for log, scope, phase in ((logs[0], [ns], _trainings), (logs[1], [], _serving_and_experiment)):
            election = ("--leader-election", "--lease-namespace", ns, "--lease-name", LEASE)
            operator = OperatorProcess(kubeconfig, log, scope, *FAST, *election)
            try:
                operator.start()
                phase(cluster, ns)
                time.sleep(1.0)  # let the last reconciles finish
            finally:
                operator.stop(signal.SIGTERM)
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
    requests = [ApiRequest(match[1], match[2], int(match[3])) for match in _PROXY_LINE.finditer(proxy_log.read_text())]
    objects = cluster.kubectl("get", NAMESPACED_KINDS, "-n", ns, "-o", "json").stdout
    yield OperatorRun(ns, requests, "".join(log.read_text(errors="replace") for log in logs), objects)
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _proxied_kubeconfig(path: Path, port: int) -> Path:
    """A kubeconfig for ``kubectl proxy`` on ``port``, which adds the credentials itself."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "proxy", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "proxy", "user": {}}],
        "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
        "current-context": "proxy",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_requests_map_to_the_permissions_the_authorizer_checks() -> None:
    base = "https://127.0.0.1:6443"
    cases = {
        ("GET", "/api/v1/namespaces/ns/pods?labelSelector=a%3Db", 200): [("", "pods", "list")],
        ("GET", "/api/v1/namespaces/ns/pods?watch=true&resourceVersion=1", 200): [("", "pods", "watch")],
        ("GET", "/api/v1/namespaces", 200): [("", "namespaces", "list")],
        ("GET", "/api/v1/namespaces/ns", 200): [("", "namespaces", "get")],
        ("PATCH", "/apis/kubellm.io/v1alpha1/namespaces/ns/finetunejobs/x/status", 200): [
            ("kubellm.io", "finetunejobs/status", "patch")
        ],
        ("PATCH", "/apis/batch/v1/namespaces/ns/jobs/x?fieldManager=m&force=true", 201): [
            ("batch", "jobs", "patch"),
            ("batch", "jobs", "create"),
        ],
        ("DELETE", "/apis/networking.k8s.io/v1/namespaces/ns/ingresses/x", 200): [
            ("networking.k8s.io", "ingresses", "delete")
        ],
        ("POST", "/api/v1/namespaces/ns/events", 201): [("", "events", "create")],
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", 200): [
            ("coordination.k8s.io", "leases", "update")
        ],
        ("GET", "/apis/kubellm.io/v1alpha1", 200): [],
        ("GET", "/version", 200): [],
    }
    for (method, path, status), expected in cases.items():
        assert ApiRequest(method, base + path, status).permissions() == expected, path


def test_rbac_grants_exactly_what_the_operator_uses(operator_run: OperatorRun, figure: RecordFigure) -> None:
    requests = operator_run.requests
    assert len(requests) > 50, "the proxy saw too few requests to judge"
    # A 403 in another namespace may be one that is being deleted (left by an earlier test).
    elsewhere = re.compile(rf"/namespaces/(?!{re.escape(operator_run.namespace)}/)[^/]+/")
    denied = sorted({f"{r.method} {r.url}" for r in requests if r.status == 403 and not elsewhere.search(r.url)})
    granted = granted_permissions(yaml.safe_load(RBAC_RULES.read_text()))
    required = required_permissions(requests)
    extra, missing = sorted(granted - required), sorted(required - granted)
    print(f"\n[security] {len(requests)} API requests need {sorted(required)}")
    print(f"[security] extra {extra}; missing {missing}; denied {denied[:5]}")
    figure("security", "operator API requests recorded (namespaced + cluster-wide, leader election)", len(requests))
    figure("security", "RBAC permissions granted but unused", len(extra), "0", not extra)
    figure(
        "security", "RBAC permissions used but not granted", len(missing) + len(denied), "0", not missing and not denied
    )
    assert not any(resource.startswith("secrets") for _, resource, _ in granted)
    assert not extra, f"granted but never used: {extra}"
    assert not missing and not denied, f"used but not granted: {missing} {denied}"


# --- 3. credentials never show ------------------------------------------------------------------------


def test_credentials_never_appear_in_logs_status_events_or_configmaps(
    operator_run: OperatorRun, token_training: TokenTraining, tmp_path: Path, figure: RecordFigure
) -> None:
    hits = {
        "operator log": operator_run.operator_log.count(CANARY),
        "objects of the namespace (status, events, ConfigMaps, children)": operator_run.objects.count(CANARY),
    }
    hits |= _runtime_hits(token_training, tmp_path)
    total = sum(hits.values())
    print(f"\n[security] canary hits: {hits}")
    figure("security", "credential canary hits (operator, objects, runtime output)", total, "0", total == 0)
    references = operator_run.objects.count('"name": "model-credentials"')
    assert references >= 4, "the custom resources should reference the Secret in their pods"
    assert total == 0, hits


@dataclass
class TokenTraining:
    """``kubellm train`` holding a canary Hub token, on a gated ``hf://`` model it cannot fetch offline."""

    folder: Path
    process: subprocess.Popen[str]


@pytest.fixture(scope="module")
def token_training(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenTraining]:
    """Started before the operator run, so its model loading overlaps the wait on the control plane."""
    folder = tmp_path_factory.mktemp("token-training")
    spec = {
        "baseModel": {"uri": "hf://org/gated-model", "tokenSecretRef": CREDENTIALS},
        "dataset": {"uri": "dummy://instructions?rows=64&seed=1"},
        "training": {"method": "full", "maxSteps": 2},
    }
    config = folder / "gated.yaml"
    config.write_text(yaml.safe_dump(spec))
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "KUBELLM_TERMINATION_LOG": str(folder / "termination")}
    process = subprocess.Popen(
        [str(KUBELLM), "train", "--config", str(config), "--output", str(folder / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env, "HF_TOKEN": HUB_TOKEN},
    )
    yield TokenTraining(folder, process)
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=30)


def _runtime_hits(training: TokenTraining, tmp_path: Path) -> dict[str, int]:
    """Canary hits in what ``kubellm train`` and ``kubellm experiment`` print and write while holding it."""
    printed: list[str] = []
    for name, endpoint in (("accepted", Endpoint(api_key=API_KEY)), ("echoed", Endpoint(api_key="other", echo=True))):
        with serve_endpoint(endpoint):
            config = experiment_config(tmp_path / name, rows=4, concurrency=2)
            experiment = start_experiment(config, endpoint.url, tmp_path / name / "out", KUBELLM_TARGET_API_KEY=API_KEY)
            printed += experiment.communicate(timeout=120)
        assert experiment.returncode == (0 if name == "accepted" else 1), printed[-1]
        assert endpoint.answered if name == "accepted" else endpoint.refused[401], name
    printed += training.process.communicate(timeout=180)
    assert training.process.returncode == 2 and "gated-model" in printed[-1], printed[-1]
    files = [p for folder in (tmp_path, training.folder) for p in folder.rglob("*") if p.is_file()]
    written = "".join(p.read_text(errors="replace") for p in files)
    return {"runtime output (stdout, stderr)": "".join(printed).count(CANARY), "runtime files": written.count(CANARY)}


# --- 4. known vulnerabilities -------------------------------------------------------------------------


def test_installed_dependencies_have_no_known_vulnerabilities(tmp_path: Path, figure: RecordFigure) -> None:
    audit = shutil.which("pip-audit", path=str(Path(sys.executable).parent))
    if audit is None:
        figure("security", "dependencies audited by pip-audit", "pip-audit not installed", "all", False)
        pytest.skip("pip-audit is not installed (pip install pip-audit)")
    probe = tmp_path / "probe.txt"  # one pinned, certainly published package: does the service answer?
    probe.write_text(f"pyyaml=={_version('pyyaml')}\n")
    answered = _audit(audit, "-r", str(probe), "--no-deps", "--disable-pip")
    if all("skip_reason" in dep for dep in answered["dependencies"]):
        reason = answered["dependencies"][0].get("skip_reason", "no answer")
        figure("security", "dependencies audited by pip-audit", "0 (service unreachable)", "all", False)
        pytest.skip(f"pip-audit's vulnerability service gave no data: {reason}")
    report = _audit(audit, "--local")
    dependencies = report["dependencies"]
    # Packages not published on the index (this project, wheels built locally) cannot be audited.
    skipped = [dep["name"] for dep in dependencies if "skip_reason" in dep]
    vulnerable = {dep["name"]: [v["id"] for v in dep["vulns"]] for dep in dependencies if dep.get("vulns")}
    print(f"\n[security] pip-audit skipped {skipped}; vulnerable {vulnerable}")
    figure("security", "dependencies audited by pip-audit", f"{len(dependencies) - len(skipped)}/{len(dependencies)}")
    figure("security", "known vulnerabilities in installed dependencies", len(vulnerable), "0", not vulnerable)
    assert not vulnerable, vulnerable


def _version(distribution: str) -> str:
    from importlib.metadata import version  # noqa: PLC0415

    return version(distribution)


def _audit(audit: str, *args: str) -> dict[str, Any]:
    command = [audit, *args, "--format", "json", "--progress-spinner", "off"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.stdout.startswith("{"), f"pip-audit failed ({result.returncode}): {result.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(result.stdout)
    return report

"""The Helm chart: lint, deterministic renders, schema-valid objects, and a real install.

The install runs on a control plane of its own (the chart's CRDs are kept on uninstall, so it
must not share CRDs with the rest of the session) in a namespace that enforces Pod Security
"restricted".
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubellm.operator.settings import parse_settings
from tests.harness.cluster import Cluster, binaries_dir, running_cluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubellm"
FULL_VALUES = [
    "--set", "operator.watchNamespaces={team-a,team-b}",
    "--set", "redis.enabled=true",
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "metrics.grafanaDashboard.enabled=true",
    "--set", "networkPolicy.enabled=true",
]  # fmt: skip
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}


def _helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binaries_dir() / "helm"), *args], capture_output=True, text=True, check=check)


def _render(*values: str) -> str:
    return _helm(
        "template", "kubellm", str(CHART), "--namespace", "kubellm-system", "--kube-version", "1.36.3", *values
    ).stdout


def _docs(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def _pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    ]


def test_lint_strict_passes() -> None:
    result = _helm("lint", "--strict", str(CHART), *FULL_VALUES, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", [[], FULL_VALUES], ids=["defaults", "everything-on"])
def test_two_renders_are_byte_identical(values: list[str]) -> None:
    assert _render(*values) == _render(*values)


@pytest.mark.parametrize("values", [[], FULL_VALUES], ids=["defaults", "everything-on"])
def test_rendered_objects_validate_against_kubernetes_schemas(values: list[str]) -> None:
    checked = 0
    for doc in _docs(_render(*values)):
        if doc["kind"] == "ServiceMonitor":  # a Prometheus Operator kind: no upstream schema
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        kubernetes_validate.validate(doc, "1.36", strict=True)
        checked += 1
    assert checked >= 8


def test_schema_rejects_bad_values() -> None:
    bad = _helm("template", "x", str(CHART), "--set", "operator.image.tag=latest", check=False)
    assert bad.returncode != 0 and "/operator/image/tag" in bad.stderr
    typo = _helm("template", "x", str(CHART), "--set", "redis.enable=true", check=False)
    assert typo.returncode != 0 and "enable" in typo.stderr


def test_chart_copies_equal_their_sources() -> None:
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        assert (CHART / "files" / "crds" / crd.name).read_text() == crd.read_text(), f"run `make crds` ({crd.name})"
    operator_rules = ROOT / "operator" / "kubellm" / "operator" / "rbac.yaml"
    assert (CHART / "files" / "operator-rules.yaml").read_text() == operator_rules.read_text()


def test_rbac_is_least_privilege_and_follows_the_watch_scope() -> None:
    cluster_wide = _docs(_render())
    roles = [d for d in cluster_wide if d["kind"] == "ClusterRole"]
    assert len(roles) == 1
    operator_rules = yaml.safe_load((ROOT / "operator" / "kubellm" / "operator" / "rbac.yaml").read_text())
    assert roles[0]["rules"] == operator_rules
    assert not any("secrets" in rule["resources"] for rule in operator_rules)
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in operator_rules)
    namespaced = _docs(_render(*FULL_VALUES))
    bindings = {d["metadata"]["namespace"] for d in namespaced if d["kind"] == "RoleBinding"}
    assert bindings == {"team-a", "team-b"}
    deployment = next(d for d in namespaced if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


@pytest.mark.parametrize("values", [[], FULL_VALUES], ids=["cluster-wide", "namespaced"])
def test_operator_accepts_the_arguments_the_chart_gives_it(values: list[str]) -> None:
    deployment = next(d for d in _docs(_render(*values)) if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    settings = parse_settings(container["args"], environ={})
    assert settings.image == "ghcr.io/kubellm/runtime:0.1.0"
    assert settings.namespaces == (("team-a", "team-b") if values else ())
    assert settings.liveness_endpoint == "http://0.0.0.0:8080/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


PEERED = ["--set", "operator.replicas=3"]
PEERING_CRDS = {"kopfpeerings.kopf.dev": "Namespaced", "clusterkopfpeerings.kopf.dev": "Cluster"}


def _operator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator"))


def _peering_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["apiVersion"].startswith("kopf.dev/") or d["kind"] == "PodDisruptionBudget"]


@pytest.mark.parametrize("values", [[], FULL_VALUES], ids=["cluster-wide", "namespaced"])
def test_one_replica_runs_standalone_without_peering(values: list[str]) -> None:
    docs = _docs(_render(*values))
    assert _peering_docs(docs) == []
    assert not any(d["metadata"]["name"] in PEERING_CRDS for d in docs)  # crds/: only with --include-crds
    deployment = _operator(docs)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in container
    assert parse_settings(container["args"], environ={}).peering is None


def test_several_replicas_peer_cluster_wide() -> None:
    docs = _docs(_render("--include-crds", *PEERED))
    crds = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    for name, scope in PEERING_CRDS.items():
        crd = crds[name]
        assert crd["spec"]["scope"] == scope and crd["spec"]["group"] == "kopf.dev"
        assert crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"] == {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
        assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-2"
    peerings = [d for d in docs if d["apiVersion"] == "kopf.dev/v1"]
    assert [(d["kind"], d["metadata"]["name"]) for d in peerings] == [("ClusterKopfPeering", "kubellm")]
    assert peerings[0]["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1"

    deployment = _operator(docs)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    settings = parse_settings(container["args"], environ={})
    assert settings.peering == "kubellm" and settings.clusterwide
    assert settings.priority is None  # each replica draws its own: equal priorities would pause them all

    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    for doc in docs:
        if not doc["apiVersion"].startswith(("kopf.dev/", "monitoring.coreos.com/")):
            kubernetes_validate.validate(doc, "1.36", strict=True)


def test_several_replicas_watching_namespaces_peer_in_each() -> None:
    values = [*FULL_VALUES, *PEERED, "--set", "operator.peering.name=llm-ops", "--set", "operator.peering.lifetime=30"]
    docs = _docs(_render(*values))
    peerings = {
        (d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"))
        for d in docs
        if d["apiVersion"] == "kopf.dev/v1"
    }
    assert peerings == {("KopfPeering", "llm-ops", "team-a"), ("KopfPeering", "llm-ops", "team-b")}
    container = _operator(docs)["spec"]["template"]["spec"]["containers"][0]
    settings = parse_settings(container["args"], environ={})
    assert (settings.peering, settings.peering_lifetime, settings.namespaces) == ("llm-ops", 30, ("team-a", "team-b"))
    # The RoleBinding in each watched namespace grants the namespaced peering objects.
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        rules = roles[binding["roleRef"]["name"]]["rules"]
        assert any("kopfpeerings" in r["resources"] and "patch" in r["verbs"] for r in rules), binding
    assert _render(*values) == _render(*values)


def test_schema_rejects_bad_peering_values() -> None:
    for value, where in [
        ("operator.replicas=0", "/operator/replicas"),
        ("operator.peering.name=Not_A_Name", "/operator/peering/name"),
        ("operator.peering.lifetime=1", "/operator/peering/lifetime"),
    ]:
        bad = _helm("template", "x", str(CHART), "--kube-version", "1.36.3", "--set", value, check=False)
        assert bad.returncode != 0 and where in bad.stderr, (value, bad.stderr)


@pytest.mark.parametrize("values", [FULL_VALUES, [*FULL_VALUES, *PEERED]], ids=["one-replica", "peering"])
def test_pods_meet_restricted_pod_security(values: list[str]) -> None:
    for name, spec in _pod_specs(_docs(_render(*values))):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image


def test_sync_waves_order_crds_before_the_operator() -> None:
    waves: dict[str, set[int]] = {}
    for doc in _docs(_render("--include-crds", *PEERED)):
        wave = doc["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0")
        waves.setdefault(doc["kind"], set()).add(int(wave))
    assert waves["CustomResourceDefinition"] == {-2}
    assert waves["Deployment"] == {-1} and waves["ClusterRole"] == {-1}
    assert waves["ClusterKopfPeering"] == {-1} and waves["PodDisruptionBudget"] == {-1}


def test_recommended_labels_everywhere() -> None:
    for doc in _docs(_render(*FULL_VALUES, *PEERED)):
        labels = doc["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"):
            assert key in labels, f"{doc['kind']}/{doc['metadata']['name']} lacks {key}"
        assert labels["helm.sh/chart"] == "kubellm-0.1.0"


def test_argocd_application_points_at_the_chart() -> None:
    apps = list(yaml.safe_load_all((ROOT / "examples" / "argocd" / "application.yaml").read_text()))
    platform, models = apps
    assert platform["kind"] == models["kind"] == "Application"
    assert (ROOT / platform["spec"]["source"]["path"] / "Chart.yaml").exists()
    assert (ROOT / models["spec"]["source"]["path"] / "modeldeployment.yaml").exists()
    assert int(platform["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) < int(
        models["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
    )
    assert "ServerSideApply=true" in platform["spec"]["syncPolicy"]["syncOptions"]


@pytest.fixture(scope="module")
def chart_cluster() -> Iterator[Cluster]:
    with running_cluster() as cluster:
        yield cluster


def _namespace_restricted(cluster: Cluster, name: str) -> None:
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": RESTRICTED}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def test_install_upgrade_uninstall_in_a_restricted_namespace(chart_cluster: Cluster) -> None:
    cluster, ns = chart_cluster, "kubellm-system"
    _namespace_restricted(cluster, ns)
    values = ["--set", "redis.enabled=true", "--set", "networkPolicy.enabled=true"]
    install = cluster.helm("install", "kubellm", str(CHART), "-n", ns, *values, "--wait", "--timeout=120s")
    assert "violate" not in install.stderr.lower() and "warning" not in install.stderr.lower(), install.stderr
    cluster.kubectl("wait", "--for=condition=Available", "deployment/kubellm-operator", "-n", ns, "--timeout=90s")
    cluster.kubectl("rollout", "status", "statefulset/kubellm-redis", "-n", ns, "--timeout=90s")
    served = json.loads(cluster.kubectl("get", "crd", "modeldeployments.kubellm.io", "-o", "json").stdout)
    committed = yaml.safe_load((ROOT / "crds" / "modeldeployments.kubellm.io.yaml").read_text())
    assert served["spec"]["versions"][0]["schema"] == committed["spec"]["versions"][0]["schema"]
    cluster.kubectl("apply", "-n", ns, "--dry-run=server", "-f", str(ROOT / "examples" / "modeldeployment.yaml"))
    assert cluster.kubectl("get", "clusterkopfpeerings", "-o", "name").stdout == ""  # CRDs (crds/), no object

    values += ["--set", "operator.resources.limits.memory=300Mi"]
    upgrade = cluster.helm("upgrade", "kubellm", str(CHART), "-n", ns, *values, "--wait", "--timeout=120s")
    assert "violate" not in upgrade.stderr.lower(), upgrade.stderr
    history = json.loads(cluster.helm("history", "kubellm", "-n", ns, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    cluster.helm("uninstall", "kubellm", "-n", ns, "--wait", "--timeout=120s")
    assert cluster.kubectl("get", "deployment", "kubellm-operator", "-n", ns, check=False).returncode != 0
    kept = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/finetunejobs.kubellm.io" in kept


def test_install_with_two_replicas_creates_the_peering(chart_cluster: Cluster) -> None:
    cluster, ns = chart_cluster, "kubellm-peering"
    _namespace_restricted(cluster, ns)
    # The kubellm CRDs kept by the other release belong to it; Kopf's (crds/) are skipped if present.
    values = ["--set", "operator.replicas=2", "--set", "crds.install=false"]
    install = cluster.helm("install", "peered", str(CHART), "-n", ns, *values, "--wait", "--timeout=120s")
    assert "violate" not in install.stderr.lower() and "warning" not in install.stderr.lower(), install.stderr
    for name, scope in PEERING_CRDS.items():
        crd = json.loads(cluster.kubectl("get", "crd", name, "-o", "json").stdout)
        assert crd["spec"]["scope"] == scope
    peering = json.loads(cluster.kubectl("get", "clusterkopfpeering", "peered-kubellm", "-o", "json").stdout)
    assert peering["metadata"]["labels"]["app.kubernetes.io/instance"] == "peered"
    cluster.kubectl(
        "wait", "--for=condition=Available", "deployment/peered-kubellm-operator", "-n", ns, "--timeout=90s"
    )
    deployment = json.loads(
        cluster.kubectl("get", "deployment", "peered-kubellm-operator", "-n", ns, "-o", "json").stdout
    )
    assert deployment["spec"]["replicas"] == 2 and deployment["status"]["availableReplicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pdb = json.loads(cluster.kubectl("get", "pdb", "peered-kubellm-operator", "-n", ns, "-o", "json").stdout)
    assert pdb["status"]["currentHealthy"] == 2 and pdb["status"]["disruptionsAllowed"] == 1

    cluster.helm("uninstall", "peered", "-n", ns, "--wait", "--timeout=120s")
    assert cluster.kubectl("get", "clusterkopfpeering", "peered-kubellm", check=False).returncode != 0
    kept = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    assert {f"customresourcedefinition.apiextensions.k8s.io/{name}" for name in PEERING_CRDS} <= set(kept)

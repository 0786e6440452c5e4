"""The Helm chart: lint, deterministic renders, schema-valid objects, and a real install.

The install runs on a control plane of its own (the chart's CRDs are kept on uninstall, so it
must not share CRDs with the rest of the session) in a namespace that enforces Pod Security
"restricted".
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubellm.operator.settings import build_parser, parse_settings
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
    # All but the Lease rule, which only several replicas get, in their own namespace.
    assert roles[0]["rules"] == [rule for rule in operator_rules if "leases" not in rule["resources"]]
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


ELECTED = ["--set", "operator.replicas=3"]
OPERATOR_RULES = yaml.safe_load((ROOT / "operator" / "kubellm" / "operator" / "rbac.yaml").read_text())
LEASE_RULES = [rule for rule in OPERATOR_RULES if "leases" in rule["resources"]]


def _operator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator"))


def _election_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d["kind"] == "PodDisruptionBudget" or d["metadata"]["name"].endswith("-leader-election")
        or d["apiVersion"].startswith("kopf.dev/")
    ]  # fmt: skip


def _granted(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [rule for d in docs if d["kind"] == kind for rule in d["rules"]]


@pytest.mark.parametrize("values", [[], FULL_VALUES], ids=["cluster-wide", "namespaced"])
def test_one_replica_runs_without_leader_election(values: list[str]) -> None:
    docs = _docs(_render("--include-crds", *values))
    assert _election_docs(docs) == []
    assert not any("kopf.dev" in d["metadata"]["name"] for d in docs)  # Kopf's peering CRDs are gone
    assert not any("leases" in rule["resources"] for d in docs for rule in d.get("rules", []))
    deployment = _operator(docs)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in container
    assert not parse_settings(container["args"], environ={}).leader_election


def test_several_replicas_elect_a_leader_cluster_wide() -> None:
    docs = _docs(_render("--include-crds", *ELECTED))
    assert not any(d["apiVersion"].startswith("kopf.dev/") or "kopf.dev" in d["metadata"]["name"] for d in docs)
    deployment = _operator(docs)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    settings = parse_settings(container["args"], environ={})
    assert settings.leader_election and settings.clusterwide
    assert (settings.lease_namespace, settings.lease_name) == ("kubellm-system", "kubellm-operator")
    timings = (settings.lease_duration_seconds, settings.renew_deadline_seconds, settings.retry_period_seconds)
    assert timings == (15, 10.0, 2.0)
    assert settings.lease_identity is None  # each process names itself: the pod's name and a suffix
    assert settings.liveness_endpoint == "http://0.0.0.0:8080/healthz"  # answered by a standby too

    # The Lease rule only in a Role of the release namespace: never update on every Lease.
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert (role["metadata"]["name"], role["metadata"]["namespace"]) == (
        "kubellm-operator-leader-election",
        "kubellm-system",
    )
    assert role["rules"] == LEASE_RULES and LEASE_RULES
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"][0]["name"] == deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert _granted(docs, "ClusterRole") == [rule for rule in OPERATOR_RULES if rule not in LEASE_RULES]

    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    for doc in docs:
        if not doc["apiVersion"].startswith("monitoring.coreos.com/"):
            kubernetes_validate.validate(doc, "1.36", strict=True)


def test_several_replicas_watching_namespaces_keep_the_lease_at_home() -> None:
    lease = ["leaseDurationSeconds=30", "renewDeadlineSeconds=20", "retryPeriodSeconds=5"]
    values = [*FULL_VALUES, *ELECTED, *(arg for t in lease for arg in ("--set", f"operator.leaderElection.{t}"))]
    docs = _docs(_render(*values))
    container = _operator(docs)["spec"]["template"]["spec"]["containers"][0]
    settings = parse_settings(container["args"], environ={})
    assert settings.namespaces == ("team-a", "team-b") and settings.lease_namespace == "kubellm-system"
    timings = (settings.lease_duration_seconds, settings.renew_deadline_seconds, settings.retry_period_seconds)
    assert timings == (30, 20.0, 5.0)
    roles = {(d["metadata"]["name"], d["metadata"]["namespace"]) for d in docs if d["kind"] == "Role"}
    assert roles == {("kubellm-operator-leader-election", "kubellm-system")}
    assert not any("leases" in rule["resources"] for rule in _granted(docs, "ClusterRole"))
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding"} == {
        "team-a",
        "team-b",
        "kubellm-system",
    }
    assert _render(*values) == _render(*values)


def test_schema_rejects_bad_leader_election_values() -> None:
    for value, where in [
        ("operator.replicas=0", "/operator/replicas"),
        ("operator.leaderElection.leaseDurationSeconds=1", "/operator/leaderElection/leaseDurationSeconds"),
        ("operator.peering.name=kubellm", "peering"),
        ("operator.leaderElection.renewDeadlineSeconds=15", "retryPeriodSeconds < renewDeadlineSeconds"),
    ]:
        args = ["--set", "operator.replicas=2", "--set", value]
        bad = _helm("template", "x", str(CHART), "--kube-version", "1.36.3", *args, check=False)
        assert bad.returncode != 0 and where in bad.stderr, (value, bad.stderr)


_COMMENTED_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*(?:=[^\s,;)]*[^\s,;).])?")


def _flags_in_operator_comments() -> list[str]:
    """Every flag values.yaml's comments in the operator section suggest (as extraArgs)."""
    text = (CHART / "values.yaml").read_text()
    section = text[text.index("\noperator:") : text.index("\nruntime:")]
    return [
        flag for line in section.splitlines() if "#" in line for flag in _COMMENTED_FLAG.findall(line.split("#", 1)[1])
    ]


def test_every_flag_the_chart_can_pass_is_one_the_operator_knows() -> None:
    suggested = _flags_in_operator_comments()
    assert suggested, "values.yaml suggests no operator flag: the pattern is stale"
    variants = {
        "defaults": [],
        "namespaced": FULL_VALUES,
        "leader-election": [*FULL_VALUES, *ELECTED],
        "metrics-off": ["--set", "metrics.enabled=false"],
        "suggested-extra-args": ["--set-json", f"operator.extraArgs={json.dumps(suggested)}"],
    }
    for name, values in variants.items():
        args = _operator(_docs(_render(*values)))["spec"]["template"]["spec"]["containers"][0]["args"]
        parser = build_parser()
        parser.exit_on_error = False  # a bad value raises instead of exiting the test run
        _, unknown = parser.parse_known_args(args)
        assert not unknown, f"{name}: the operator would exit at start on {unknown}"
        parse_settings(args, environ={})  # and they make valid settings
    assert set(suggested) <= set(args)


@pytest.mark.parametrize("values", [FULL_VALUES, [*FULL_VALUES, *ELECTED]], ids=["one-replica", "leader-election"])
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
    for doc in _docs(_render("--include-crds", *ELECTED)):
        wave = doc["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0")
        waves.setdefault(doc["kind"], set()).add(int(wave))
    assert waves["CustomResourceDefinition"] == {-2}
    assert waves["Deployment"] == {-1} and waves["ClusterRole"] == {-1}
    assert waves["Role"] == {-1} and waves["PodDisruptionBudget"] == {-1}


def test_recommended_labels_everywhere() -> None:
    for doc in _docs(_render(*FULL_VALUES, *ELECTED)):
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

    values += ["--set", "operator.resources.limits.memory=300Mi"]
    upgrade = cluster.helm("upgrade", "kubellm", str(CHART), "-n", ns, *values, "--wait", "--timeout=120s")
    assert "violate" not in upgrade.stderr.lower(), upgrade.stderr
    history = json.loads(cluster.helm("history", "kubellm", "-n", ns, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    cluster.helm("uninstall", "kubellm", "-n", ns, "--wait", "--timeout=120s")
    assert cluster.kubectl("get", "deployment", "kubellm-operator", "-n", ns, check=False).returncode != 0
    kept = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/finetunejobs.kubellm.io" in kept


def _can(cluster: Cluster, account: str, verb: str, resource: str, ns: str) -> bool:
    asked = cluster.kubectl("auth", "can-i", verb, resource, "-n", ns, f"--as={account}", check=False)
    return asked.stdout.strip() == "yes"


def test_install_with_two_replicas_grants_the_lease_at_home_only(chart_cluster: Cluster) -> None:
    cluster, ns = chart_cluster, "kubellm-ha"
    _namespace_restricted(cluster, ns)
    # The kubellm CRDs kept by the other release belong to it.
    values = ["--set", "operator.replicas=2", "--set", "crds.install=false"]
    install = cluster.helm("install", "elected", str(CHART), "-n", ns, *values, "--wait", "--timeout=120s")
    assert "violate" not in install.stderr.lower() and "warning" not in install.stderr.lower(), install.stderr
    account = f"system:serviceaccount:{ns}:elected-kubellm-operator"
    assert _can(cluster, account, "update", "lease/elected-kubellm-operator", ns)
    assert _can(cluster, account, "create", "leases", ns)
    assert not _can(cluster, account, "update", "leases", "kube-system")  # other components' elections
    cluster.kubectl(
        "wait", "--for=condition=Available", "deployment/elected-kubellm-operator", "-n", ns, "--timeout=90s"
    )
    deployment = json.loads(
        cluster.kubectl("get", "deployment", "elected-kubellm-operator", "-n", ns, "-o", "json").stdout
    )
    assert deployment["spec"]["replicas"] == 2 and deployment["status"]["availableReplicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pdb = json.loads(cluster.kubectl("get", "pdb", "elected-kubellm-operator", "-n", ns, "-o", "json").stdout)
    assert pdb["status"]["currentHealthy"] == 2 and pdb["status"]["disruptionsAllowed"] == 1

    cluster.helm("uninstall", "elected", "-n", ns, "--wait", "--timeout=120s")
    assert not _can(cluster, account, "update", "lease/elected-kubellm-operator", ns)
    assert cluster.kubectl("get", "crd", "-o", "name").stdout.count("kopf.dev") == 0

"""kind-config.yaml, the Makefile's laptop path and the chart's values stay consistent with what the tests pin."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubellm"


def _pinned_kubernetes_version() -> str:
    script = (ROOT / "tests" / "harness" / "cluster-binaries.sh").read_text()
    match = re.search(r'K8S_VERSION="\$\{K8S_VERSION:-(v[0-9.]+)\}"', script)
    assert match, "cluster-binaries.sh no longer pins K8S_VERSION"
    return match.group(1)


def test_kind_config_uses_the_tested_kubernetes_version() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [node["role"] for node in config["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") >= 1
    assert {node["image"] for node in config["nodes"]} == {f"kindest/node:{_pinned_kubernetes_version()}"}


def test_makefile_has_the_laptop_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("kind-up", "images", "kind-load", "deploy", "e2e", "quickstart", "test"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"Makefile lacks `{target}`"
    assert "operator/Dockerfile" in makefile and "runtime/Dockerfile" in makefile


def _chart_values(**operator: Any) -> dict[str, Any]:
    values: dict[str, Any] = copy.deepcopy(yaml.safe_load((CHART / "values.yaml").read_text()))
    values["operator"].update(operator)
    return values


def _values_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def test_chart_defaults_run_one_standalone_operator() -> None:
    values = _chart_values()
    jsonschema.Draft7Validator.check_schema(_values_schema())
    jsonschema.Draft7Validator(_values_schema()).validate(values)
    assert values["operator"]["replicas"] == 1
    assert values["operator"]["leaderElection"] == {
        "leaseDurationSeconds": 15,
        "renewDeadlineSeconds": 10,
        "retryPeriodSeconds": 2,
    }


@pytest.mark.parametrize(
    "operator",
    [{"replicas": 3}, {"replicas": 2, "leaderElection": {"leaseDurationSeconds": 30, "renewDeadlineSeconds": 7.5}}],
    ids=["replicas", "lease-timings"],
)
def test_chart_schema_accepts_leader_election_values(operator: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(_values_schema()).validate(_chart_values(**operator))


@pytest.mark.parametrize(
    "operator",
    [
        {"replicas": 0},
        {"replicas": "2"},
        {"leaderElection": {"leaseDurationSeconds": 1}},
        {"leaderElection": {"leaseDurationSeconds": 7.5}},
        {"leaderElection": {"retryPeriodSeconds": 0}},
        {"leaderElection": {"leaseName": "x"}},  # one Lease per release, named after it
        {"peering": {"name": "kubellm"}},  # Kopf peering is gone
    ],
    ids=["zero-replicas", "string-replicas", "short-lease", "fractional-lease", "zero-retry", "lease-name", "peering"],
)
def test_chart_schema_rejects_bad_leader_election_values(operator: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(_values_schema()).validate(_chart_values(**operator))

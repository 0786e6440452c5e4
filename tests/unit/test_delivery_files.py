"""kind-config.yaml and the Makefile's laptop path stay consistent with what the tests pin."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


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

"""What the README tells users to set or do exists: spec fields it names, ways a claim reaches a pod."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from kubellm.operator.api import ModelDeploymentSpec
from kubellm.operator.manifests import modeldeployment
from kubellm.operator.manifests.common import Owner
from tests.api_cases import load_example

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SPEC_PATH = re.compile(r"`(spec(?:\.[A-Za-z][A-Za-z0-9]*)+)`")


def _spec_schemas() -> list[dict[str, Any]]:
    schemas = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        schemas += [v["schema"]["openAPIV3Schema"]["properties"]["spec"] for v in crd["spec"]["versions"]]
    return schemas


def _has_path(schema: dict[str, Any], fields: list[str]) -> bool:
    for field in fields:
        properties = schema.get("properties") or (schema.get("items") or {}).get("properties") or {}
        if field not in properties:
            return False
        schema = properties[field]
    return True


def _bullets(title: str) -> list[str]:
    """The bullets of a README section, each on one line."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return [" ".join(item.split()) for item in README[start:end].split("\n- ")[1:]]


def test_every_spec_field_the_readme_names_exists_in_a_crd() -> None:
    named = sorted(set(SPEC_PATH.findall(README)))
    assert named, "the README names no spec field: the pattern is stale"
    schemas = _spec_schemas()
    missing = [path for path in named if not any(_has_path(s, path.split(".")[1:]) for s in schemas)]
    assert not missing


def test_claims_reach_a_server_only_through_pvc_sources_and_the_readme_says_so() -> None:
    spec = ModelDeploymentSpec.model_validate(load_example("modeldeployment")["spec"])
    model = modeldeployment.ServedModel(uri="hf://org/large-model", adapters=(("a", "pvc://adapters/a"),))
    owner = Owner("ModelDeployment", "m", "ns", "uid")
    pod = modeldeployment.build_server_deployment(owner, spec, model, "image:1")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["cache"] == {"name": "cache", "emptyDir": {}}  # where hf:// downloads land: not kept
    assert [v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v] == [
        "adapters"
    ]
    # So advice to keep weights on a claim must point at pvc:// (there is no field for the cache volume).
    advice = [bullet for bullet in _bullets("Limits") if re.search(r"\bPVC\b|VolumeClaim", bullet)]
    assert advice, "the Limits section no longer says where large models go"
    assert all("pvc://" in bullet for bullet in advice), advice

"""The CRD generator: committed CRDs are current, and the schemas follow the API conventions."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from kubellm.operator import api
from kubellm.operator.api import crdgen, finetunejob
from kubellm.operator.api.common import KindInfo
from tests.api_cases import INVALID_CASES, InvalidCase, example_documents, load_example

ROOT = Path(__file__).resolve().parents[4]
CRDS = ROOT / "crds"
KIND_IDS = [info.kind for info in api.KINDS]

Node = dict[str, Any]


def _schema(info: KindInfo) -> Node:
    crd = crdgen.build_crd(info)
    root: Node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def _walk(node: Node, path: str = "") -> Iterator[tuple[str, Node]]:
    """Every schema node with its path (``.a.b``, ``[]`` for items, ``{}`` for map values)."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _properties(node: Node, path: str = "") -> Iterator[tuple[str, Node]]:
    for name, sub in node.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from _properties(sub, f"{path}.{name}")
    if "items" in node:
        yield from _properties(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _properties(node["additionalProperties"], f"{path}{{}}")


def _api_nodes(info: KindInfo) -> Iterator[tuple[str, Node]]:
    root = _schema(info)
    for part in ("spec", "status"):
        yield from _walk(root["properties"][part], f".{part}")


# --- the committed files ----------------------------------------------------------------------


def test_committed_crds_equal_generator_output() -> None:
    assert crdgen.check(CRDS) == [], "run: python -m kubellm.operator.api.crdgen crds/"


def test_main_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main([str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "finetunejobs.kubellm.io.yaml",
        "modeldeployments.kubellm.io.yaml",
        "promptexperiments.kubellm.io.yaml",
    ]
    assert crdgen.main(["--check", str(tmp_path)]) == 0
    stale = tmp_path / "modeldeployments.kubellm.io.yaml"
    stale.write_text(stale.read_text(encoding="utf-8").replace("maxLength: 1024", "maxLength: 2048", 1))
    capsys.readouterr()
    assert crdgen.main(["--check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "maxLength: 2048" in out
    assert "stale" in out


def test_output_is_deterministic() -> None:
    assert [crdgen.render(info) for info in api.KINDS] == [crdgen.render(info) for info in api.KINDS]


def test_number_like_strings_are_quoted_for_yaml_1_2_parsers() -> None:
    text = (CRDS / "finetunejobs.kubellm.io.yaml").read_text(encoding="utf-8")
    assert "default: '2e-4'" in text
    assert "default: 2e-4" not in text


# --- CRD shape ------------------------------------------------------------------------------


@pytest.mark.parametrize("info", api.KINDS, ids=KIND_IDS)
def test_names_and_subresources(info: KindInfo) -> None:
    crd = crdgen.build_crd(info)
    assert crd["metadata"]["name"] == info.crd_name
    names = crd["spec"]["names"]
    assert names["categories"] == ["kubellm"]
    assert names["shortNames"] == list(info.short_names)
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert "status" in version["subresources"]
    assert ("scale" in version["subresources"]) == (info.kind == "ModelDeployment")


def test_model_deployment_scale_paths() -> None:
    scale = crdgen.build_crd(api.modeldeployment.INFO)["spec"]["versions"][0]["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def _resolve_json_path(root: Node, json_path: str) -> Node | None:
    node: Node | None = root
    for segment in re.sub(r"\[\?\(@\.\w+==\"\w+\"\)\]", "[]", json_path).strip(".").split("."):
        if node is None:
            return None
        name, is_list = segment.removesuffix("[]"), segment.endswith("[]")
        node = node.get("properties", {}).get(name)
        if node is not None and is_list:
            node = node.get("items")
    return node


@pytest.mark.parametrize("info", api.KINDS, ids=KIND_IDS)
def test_printer_columns(info: KindInfo) -> None:
    columns = crdgen.build_crd(info)["spec"]["versions"][0]["additionalPrinterColumns"]
    summary = "Succeeded" if info.kind == "FineTuneJob" else "Ready"
    assert [c["name"] for c in columns[:2]] == [summary, "Reason"]
    assert "Age" in [c["name"] for c in columns if "priority" not in c]
    assert any(c.get("priority") == 1 for c in columns)
    root = _schema(info)
    root["properties"]["metadata"]["properties"]["creationTimestamp"] = {"type": "string"}
    for column in columns:
        assert _resolve_json_path(root, column["jsonPath"]) is not None, column


# --- schema conventions -----------------------------------------------------------------------


@pytest.mark.parametrize("info", api.KINDS, ids=KIND_IDS)
def test_every_field_has_a_description(info: KindInfo) -> None:
    root = _schema(info)
    missing = [
        path for path, node in _properties(root) if not path.startswith(".metadata") and not node.get("description")
    ]
    assert missing == []


@pytest.mark.parametrize("info", api.KINDS, ids=KIND_IDS)
def test_strings_lists_and_maps_are_bounded(info: KindInfo) -> None:
    unbounded = []
    for path, node in _api_nodes(info):
        if (
            node.get("type") == "string"
            and not ({"maxLength", "enum"} & node.keys())
            and node.get("format") != "date-time"
        ):
            unbounded.append(path)
        if node.get("type") == "array" and "maxItems" not in node:
            unbounded.append(path)
        if isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node:
            unbounded.append(path)
        if node.get("x-kubernetes-int-or-string") and "maxLength" not in node:
            unbounded.append(path)
    assert unbounded == []


@pytest.mark.parametrize("info", api.KINDS, ids=KIND_IDS)
def test_no_floats_in_spec(info: KindInfo) -> None:
    floats = [path for path, node in _walk(_schema(info)["properties"]["spec"]) if node.get("type") == "number"]
    assert floats == []


@pytest.mark.parametrize("info", api.KINDS, ids=KIND_IDS)
def test_schema_is_structural(info: KindInfo) -> None:
    forbidden = {"anyOf", "oneOf", "allOf", "not", "$ref", "$defs", "nullable", "title", "const"}
    for path, node in _walk(_schema(info)):
        assert not forbidden & node.keys(), path
        assert node.get("additionalProperties") is not False, path
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
        else:
            assert "type" in node, path
        if "properties" in node:
            assert node["type"] == "object", path
        for rule in node.get("x-kubernetes-validations", []):
            assert set(rule) <= {"rule", "message", "fieldPath", "reason"}, path
            assert rule["rule"] and rule["message"], path


@pytest.mark.parametrize("info", api.KINDS, ids=KIND_IDS)
def test_unknown_fields_are_preserved_only_under_status_kopf(info: KindInfo) -> None:
    preserved = [path for path, node in _walk(_schema(info)) if node.get("x-kubernetes-preserve-unknown-fields")]
    assert preserved == [".status.kopf"]


@pytest.mark.parametrize("info", api.KINDS, ids=KIND_IDS)
def test_metadata_restricts_only_the_name(info: KindInfo) -> None:
    metadata = _schema(info)["properties"]["metadata"]
    assert set(metadata) == {"type", "properties"}
    assert set(metadata["properties"]) == {"name"}
    assert metadata["properties"]["name"]["maxLength"] <= 63


@pytest.mark.parametrize("info", api.KINDS, ids=KIND_IDS)
def test_lists_of_named_objects_are_maps(info: KindInfo) -> None:
    for path, node in _walk(_schema(info)):
        items = node.get("items", {})
        if items.get("type") == "object" and "name" in items.get("properties", {}):
            assert node.get("x-kubernetes-list-type") == "map", path
            assert node.get("x-kubernetes-list-map-keys") == ["name"], path
            assert "name" in items["required"], path
    conditions = _schema(info)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_conditions_match_metav1_condition() -> None:
    condition = _schema(api.finetunejob.INFO)["properties"]["status"]["properties"]["conditions"]["items"]
    assert condition["required"] == ["type", "status", "lastTransitionTime", "reason", "message"]
    assert condition["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert condition["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_fine_tune_job_training_spec_is_immutable() -> None:
    spec = _schema(api.finetunejob.INFO)["properties"]["spec"]
    frozen = sorted(
        name
        for name, node in spec["properties"].items()
        if any(r["rule"] == "self == oldSelf" for r in node.get("x-kubernetes-validations", []))
    )
    assert frozen == sorted(finetunejob.IMMUTABLE_FIELDS)
    assert any("oldSelf.search" in r["rule"] for r in spec["x-kubernetes-validations"])
    mutable = {"resources", "nodeSelector", "tolerations", "image", "backoffLimit", "activeDeadlineSeconds"}
    assert mutable.isdisjoint(frozen)


def test_transition_rules_only_on_fine_tune_job() -> None:
    for info in (api.modeldeployment.INFO, api.promptexperiment.INFO):
        rules = [r["rule"] for _, n in _walk(_schema(info)) for r in n.get("x-kubernetes-validations", [])]
        assert rules and not [r for r in rules if "oldSelf" in r]


@pytest.mark.parametrize("info", api.KINDS, ids=KIND_IDS)
def test_defaults_are_valid_for_their_field(info: KindInfo) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    for path, node in _walk(_schema(info)):
        if "default" in node:
            jsonschema.validate(node["default"], _as_json_schema(node))
            if node.get("type") == "object":  # spelled out: the server checks CEL rules on it as written
                nested = {k: sub["default"] for k, sub in node["properties"].items() if "default" in sub}
                assert node["default"] == nested, path


# --- the generator itself ---------------------------------------------------------------------


class _Undescribed(BaseModel):
    size: int = 1


class _FloatUnion(BaseModel):
    value: float | str = Field("1", description="A union that is not int-or-string.")


class _Exclusive(BaseModel):
    value: int = Field(1, gt=0, description="exclusiveMinimum has no structural equivalent here.")


@pytest.mark.parametrize(
    ("model", "error"),
    [(_Undescribed, "needs a description"), (_FloatUnion, "unions"), (_Exclusive, "exclusiveMinimum")],
)
def test_generator_refuses_what_it_cannot_express(model: type[BaseModel], error: str) -> None:
    with pytest.raises(crdgen.SchemaError, match=error):
        crdgen.model_schema(model)


# --- examples and invalid manifests against the generated schema --------------------------------


def _as_json_schema(node: Node) -> Node:
    """The schema as the API server's OpenAPI validator reads it (int-or-string is integer|string)."""
    node = copy.deepcopy(node)
    for _, sub in _walk(node):
        if sub.pop("x-kubernetes-int-or-string", False):
            sub["type"] = ["integer", "string"]
    return node


def _validator(kind: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    info = next(i for i in api.KINDS if i.kind == kind)
    return jsonschema.Draft7Validator(_as_json_schema(_schema(info)))


@pytest.mark.parametrize("name", ["finetunejob", "modeldeployment", "promptexperiment"])
def test_examples_validate_against_the_schema(name: str) -> None:
    manifest = load_example(name)
    errors = [e.message for e in _validator(manifest["kind"]).iter_errors(manifest)]
    assert errors == []


def test_example_files_hold_only_known_documents() -> None:
    for name in ("finetunejob", "modeldeployment", "promptexperiment"):
        kinds = [doc["kind"] for doc in example_documents(name)]
        assert kinds[-1] in {info.kind for info in api.KINDS}, name
        assert set(kinds[:-1]) <= {"PersistentVolumeClaim"}, name


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.name)
def test_invalid_manifest_meets_the_schema_as_classified(case: InvalidCase) -> None:
    manifest = case.manifest()
    errors = list(_validator(manifest["kind"]).iter_errors(manifest))
    if case.check == "schema":
        assert errors, f"{case.name}: the schema alone should reject it"
        field = re.split(r"[.\[\]]+", case.field.rstrip("]"))
        paths = [[str(p) for p in e.absolute_path] for e in errors]
        assert any(field[: len(path)] == path for path in paths), paths  # the error is at the field or its parent
    else:
        assert errors == [], f"{case.name}: only {case.check} should catch it"


def test_generated_yaml_loads_back_identically() -> None:
    for info in api.KINDS:
        assert yaml.safe_load(crdgen.render(info)) == crdgen.build_crd(info)

"""``kubellm run`` reads manifests as the API server would: every invalid case is refused, clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubellm.operator.local.documents import ManifestError, load_manifests, manifest_files
from tests.api_cases import EXAMPLES, INVALID_CASES, InvalidCase, example_documents


def _write(folder: Path, name: str, *documents: dict[str, Any]) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump_all(documents))
    return path


def test_the_examples_folder_runs_in_dependency_order() -> None:
    manifests = load_manifests([EXAMPLES])
    assert [(r.kind, r.name) for r in manifests.resources] == [
        ("FineTuneJob", "smollm2-dates"),
        ("ModelDeployment", "smollm2"),
        ("PromptExperiment", "prompt-styles"),
    ]
    assert manifests.claims == ["kubellm-models"]
    assert manifests.resources[0].owner.uid.startswith("local-")


def test_files_are_found_like_kubectl_apply_f_does(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("")
    (tmp_path / "a.json").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in manifest_files(tmp_path)] == ["a.json", "b.yaml"]
    with pytest.raises(ManifestError, match="no such file or folder"):
        manifest_files(tmp_path / "missing")


@pytest.mark.parametrize("case", [c for c in INVALID_CASES if c.pydantic], ids=lambda c: c.name)
def test_every_invalid_case_is_refused_naming_the_resource_and_the_field(tmp_path: Path, case: InvalidCase) -> None:
    manifest = case.manifest()
    path = _write(tmp_path, "bad.yaml", manifest)
    with pytest.raises(ManifestError) as raised:
        load_manifests([path])
    text = str(raised.value)
    assert f"{path} (document 1): {manifest['kind']} {manifest['metadata']['name']}: spec" in text
    wanted = case.message or case.field.split(".")[-1].split("[")[0]
    assert wanted in text, text


def test_yaml_errors_give_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("kind: FineTuneJob\nspec:\n  a: [1, 2\n")
    with pytest.raises(ManifestError, match=r"broken.yaml: not valid YAML: .*\(line \d+, column \d+\)"):
        load_manifests([path])


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [({}, "metadata.name is required"), ({"name": "Bad_Name"}, "must be at most 50 lowercase")],
)
def test_metadata_is_checked_too(tmp_path: Path, metadata: dict[str, Any], problem: str) -> None:
    document = example_documents("modeldeployment")[0] | {"metadata": metadata}
    with pytest.raises(ManifestError, match=problem):
        load_manifests([_write(tmp_path, "m.yaml", document)])


def test_a_reference_to_a_resource_not_given_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "m.yaml", *example_documents("modeldeployment"), *example_documents("promptexperiment"))
    (tmp_path / "x.yaml").write_text("")
    with pytest.raises(ManifestError, match="serves FineTuneJob smollm2-dates, which is not among the manifests"):
        load_manifests([path])


def test_secrets_feed_pods_and_other_kinds_are_skipped(tmp_path: Path) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "keys"},
        "data": {"a": "c2VjcmV0"},
        "stringData": {"b": "plain"},
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "other"}}
    path = _write(tmp_path, "m.yaml", *example_documents("finetunejob"), secret, service)
    manifests = load_manifests([path])
    assert manifests.secrets["default", "keys"] == {"a": "secret", "b": "plain"}
    assert manifests.skipped == [f"Service other ({path} (document 4)): nothing to run locally"]


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    first = _write(tmp_path, "a.yaml", {"kind": "FineTuneJob", "apiVersion": "v1", "metadata": {"name": "a"}})
    second = tmp_path / "b.yaml"
    second.write_text("- not an object\n")
    with pytest.raises(ManifestError) as raised:
        load_manifests([first, second])
    assert "apiVersion must be kubellm.io/v1alpha1" in str(raised.value)
    assert "not a Kubernetes object" in str(raised.value)

"""``kubellm run`` with a PromptExperiment dataset in a ConfigMap: checked up front, projected into the pod."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubellm.operator.local.documents import ManifestError, load_manifests
from kubellm.operator.local.pods import LocalPod, PodError, WorkFolder, mount_map, translate_document
from kubellm.operator.local.runner import LOCAL_IMAGE
from kubellm.operator.manifests import promptexperiment as pexp_manifests
from tests.api_cases import load_example

ROWS = '{"input": "2 + 2?", "expected": "4"}\n'


def _experiment(dataset: dict[str, Any]) -> dict[str, Any]:
    manifest = load_example("promptexperiment")
    manifest["spec"]["target"] = {"url": "http://127.0.0.1:9/v1"}
    manifest["spec"]["dataset"] = dataset
    return manifest


def _config_map(data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "qa"}, "data": data}


def _write(tmp_path: Path, *documents: dict[str, Any]) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return path


def test_a_missing_configmap_or_key_stops_the_run_before_anything_starts(tmp_path: Path) -> None:
    experiment = _experiment({"configMapKeyRef": {"name": "qa", "key": "cases.jsonl"}})
    with pytest.raises(ManifestError, match=r"reads its dataset from ConfigMap qa, which is not among the manifests"):
        load_manifests([_write(tmp_path, experiment)])
    with pytest.raises(ManifestError, match=r"reads its dataset from key 'cases\.jsonl' of ConfigMap qa, which has"):
        load_manifests([_write(tmp_path, experiment, _config_map({"other.jsonl": ROWS}))])


def test_the_key_is_written_where_the_run_document_says(tmp_path: Path) -> None:
    experiment = _experiment({"configMapKeyRef": {"name": "qa", "key": "cases.jsonl"}})
    manifests = load_manifests([_write(tmp_path, experiment, _config_map({"cases.jsonl": ROWS}))])
    assert manifests.config_maps["default", "qa"] == {"cases.jsonl": ROWS}
    resource = manifests.resources[0]
    children = pexp_manifests.build_children(resource.owner, resource.spec, "http://127.0.0.1:9/v1", "m", LOCAL_IMAGE)
    work = WorkFolder(tmp_path / "work")
    pod = LocalPod(
        resource.name,
        children[-1]["spec"]["template"]["spec"],
        children[0]["data"],
        work.pod(resource.kind, resource.name),
        work,
        resource.namespace,
        config_maps=manifests.config_maps,
    )
    pod._prepare()
    document = json.loads((pod.folder / "config" / "config.yaml").read_text())
    assert document["dataset"]["uri"] == str(pod.folder / "dataset" / "cases.jsonl")
    assert Path(document["dataset"]["uri"]).read_text() == ROWS


def test_a_configmap_volume_without_its_configmap_is_a_pod_error(tmp_path: Path) -> None:
    volume = {"name": "dataset", "configMap": {"name": "absent"}}
    pod_spec = {"containers": [{"volumeMounts": []}], "volumes": [volume]}
    work = WorkFolder(tmp_path / "work")
    pod = LocalPod("e", pod_spec, {}, work.pod("PromptExperiment", "e"), work, "default")
    with pytest.raises(PodError, match="needs ConfigMap absent: add it to the manifests"):
        pod._prepare()


def test_only_mounted_paths_in_a_document_are_rewritten(tmp_path: Path) -> None:
    mapping = mount_map(
        {"containers": [{"volumeMounts": []}], "volumes": []}, tmp_path / "pod", WorkFolder(tmp_path / "w")
    )
    text = json.dumps({"a": "/mnt/pvc/evals/qa.jsonl", "b": ["/usr/share/x", "Q: /mnt/pvc"], "c": 1})
    assert json.loads(translate_document(text, mapping)) == {
        "a": f"{tmp_path}/w/pvc/evals/qa.jsonl",
        "b": ["/usr/share/x", "Q: /mnt/pvc"],
        "c": 1,
    }
    assert translate_document("not: json", mapping) == "not: json"

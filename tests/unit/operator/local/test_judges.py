"""``kubellm run`` with a PromptExperiment graded by a ModelDeployment: order, a missing judge, the local URL."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubellm.operator.local.documents import ManifestError, ManifestSet, load_manifests
from kubellm.operator.local.pods import LocalPod, WorkFolder
from kubellm.operator.local.runner import LocalRun, Server
from kubellm.operator.manifests.promptexperiment import JudgeEndpoint
from tests.api_cases import load_example


def _judged(grader: str) -> dict[str, Any]:
    manifest = copy.deepcopy(load_example("promptexperiment"))
    manifest["metadata"]["name"] = "judged"
    manifest["spec"]["target"] = {"url": "http://llm.example/v1"}
    judge = {"modelDeploymentRef": {"name": grader}, "rubric": "Correct."}
    manifest["spec"]["scorers"].append({"name": "quality", "type": "judge", "judge": judge})
    return manifest


def _write(folder: Path, *documents: dict[str, Any]) -> Path:
    path = folder / "all.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return path


def test_the_judges_model_deployment_runs_first_and_a_missing_one_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        ManifestError, match="grades with ModelDeployment nowhere \\(a judge scorer's modelDeploymentRef"
    ):
        load_manifests([_write(tmp_path, _judged("nowhere"))])
    server = load_example("modeldeployment")
    server["spec"].pop("fineTuneJobRef", None)
    server["spec"]["model"] = {"uri": "dummy://llama"}
    manifests = load_manifests([_write(tmp_path, _judged(server["metadata"]["name"]), server)])
    assert [(r.kind, r.name) for r in manifests.resources] == [
        ("ModelDeployment", server["metadata"]["name"]),
        ("PromptExperiment", "judged"),
    ]


def test_a_judge_is_sent_to_its_local_server(tmp_path: Path) -> None:
    server = load_example("modeldeployment")
    server["spec"].pop("fineTuneJobRef", None)
    server["spec"]["model"] = {"uri": "dummy://llama"}
    name = server["metadata"]["name"]
    manifests = load_manifests([_write(tmp_path, _judged(name), server)])
    run = LocalRun(manifests=ManifestSet(), work=WorkFolder(tmp_path), out=io.StringIO())
    pod = LocalPod(name=name, pod_spec={}, config={}, folder=tmp_path / "pod", work=run.work, namespace="default")
    run.servers["default", name] = Server(pod=pod, url="http://127.0.0.1:5123", model="m", api_key=None)
    resolved = {"quality": JudgeEndpoint(url=f"http://{name}.default.svc:80/v1", model="m")}
    local = run._local_judges(manifests.resources[-1], resolved)
    assert local == {"quality": JudgeEndpoint(url="http://127.0.0.1:5123/v1", model="m")}

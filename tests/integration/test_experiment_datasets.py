"""PromptExperiment datasets read from where teams keep them, against the scripted OpenAI server.

- a file in a PersistentVolumeClaim, through ``kubellm run`` (the claim is a local folder), with
  mapped columns and a seeded ``maxRows`` sample;
- an ``hf://`` dataset's split at a revision, through tests/harness/hub.py, by the runtime command
  reading a run document (as the pod does), the token from ``HF_TOKEN``; a bad reference is one
  line and exit code 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.documents import run_document
from tests.harness.hub import HubRepository, LocalHub, commit_sha, running_hub
from tests.integration import test_experiment_runner as scripted

pytestmark = pytest.mark.integration

server = scripted.server  # the scripted OpenAI-compatible server, as a fixture of this module too
TOKEN = "hf_kubellm_dataset_token"
V1 = commit_sha("kubellm-test/arithmetic@v1")


def _rows(count: int) -> str:
    """Arithmetic questions under other column names than input / expected; a, b become vars."""
    lines = [
        {"question": f"What is {i} + {i * 3 % 17}?", "answer": i + i * 3 % 17, **scripted._vars(i)}
        for i in range(count)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines)


def _experiment(url: str, dataset: dict[str, Any]) -> dict[str, Any]:
    manifest = scripted._manifest()
    manifest["spec"]["target"] = {"url": url, "model": "scripted", "api": "chat"}
    manifest["spec"]["dataset"] = {"inputField": "question", "expectedField": "answer", **dataset}
    return manifest


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "KUBELLM_TERMINATION_LOG": "/nonexistent", **extra}


def _kubellm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "kubellm.cli", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)


def _samples(result: dict[str, Any]) -> dict[str, int]:
    return {variant["name"]: variant["samples"] for variant in result["results"]}


def test_kubellm_run_reads_a_pvc_file_with_mapped_fields_and_a_seeded_sample(
    server: scripted.ScriptedServer, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    (work / "pvc" / "evals" / "arithmetic").mkdir(parents=True)
    (work / "pvc" / "evals" / "arithmetic" / "test.jsonl").write_text(_rows(60))
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "evals"}}
    dataset = {"uri": "pvc://evals/arithmetic/test.jsonl", "maxRows": 24, "seed": 5}
    manifests = tmp_path / "experiment.yaml"
    manifests.write_text(yaml.safe_dump_all([claim, _experiment(server.url, dataset)]))

    result = _kubellm("run", "-f", str(manifests), "--workdir", str(work), env=_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: winner few-shot" in result.stdout
    report = json.loads((work / "promptexperiment" / "arithmetic" / "report" / "result.json").read_text())
    assert _samples(report) == {"zero-shot": 24, "few-shot": 24, "cot": 24}
    asked = {prompt for prompt, _ in server.script.requests if prompt.startswith("Answer with a number.")}
    assert len(asked) == 24  # the sample, each row once per variant
    requests = work / "promptexperiment" / "arithmetic" / "tmp" / "kubellm-experiment" / "requests.jsonl"
    assert len(requests.read_text().splitlines()) == 72


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[LocalHub]:
    """A gated dataset repository ``kubellm-test/arithmetic`` with a test and a validation split, tag ``v1``."""
    folder = tmp_path / "arithmetic"
    folder.mkdir()
    (folder / "test.jsonl").write_text(_rows(20))
    (folder / "validation.jsonl").write_text(_rows(12))
    (folder / "README.md").write_text("# arithmetic\n")
    repo = HubRepository("kubellm-test/arithmetic", folder, TOKEN, {"v1": V1}, repo_type="dataset")
    with running_hub(repo) as local:
        yield local


def test_an_hf_dataset_split_at_a_revision_is_read_by_the_runtime(
    server: scripted.ScriptedServer, hub: LocalHub, tmp_path: Path
) -> None:
    dataset = {"uri": "hf://kubellm-test/arithmetic", "split": "validation", "revision": "v1"}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_document(_experiment(server.url, dataset))))
    env = _env(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_TOKEN=TOKEN)
    output = tmp_path / "out"

    result = _kubellm("experiment", "--config", str(config), "--output", str(output), env=env)
    assert result.returncode == 0, result.stderr
    assert _samples(json.loads((output / "result.json").read_text())) == {"zero-shot": 12, "few-shot": 12, "cot": 12}
    paths = [path for _, path, authorized in hub.requests if authorized]
    assert "/api/datasets/kubellm-test/arithmetic/revision/v1" in paths
    assert any(path.startswith(f"/datasets/kubellm-test/arithmetic/resolve/{V1}/validation.jsonl") for path in paths)


@pytest.mark.parametrize(
    ("dataset", "token", "message"),
    [
        ({"uri": "hf://kubellm-test/arithmetic", "revision": "v9"}, TOKEN, "revision not found"),
        ({"uri": "hf://kubellm-test/arithmetic"}, None, "it is gated: set tokenSecretRef"),
        ({"uri": "hf://kubellm-test/arithmetic", "split": "train"}, TOKEN, "no train split file"),
        ({"uri": "hf://kubellm-test/arithmetic", "inputField": "prompt"}, TOKEN, "no 'prompt' column"),
    ],
)
def test_a_bad_hf_dataset_is_one_line_and_exit_2(
    hub: LocalHub, tmp_path: Path, dataset: dict[str, Any], token: str | None, message: str
) -> None:
    config = tmp_path / "run.yaml"
    manifest = _experiment("http://127.0.0.1:9/v1", {})
    manifest["spec"]["dataset"].update(dataset)
    config.write_text(yaml.safe_dump(run_document(manifest)))
    env = _env(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), **({"HF_TOKEN": token} if token else {}))
    result = _kubellm("experiment", "--config", str(config), "--output", str(tmp_path / "out"), env=env)
    said = [line for line in result.stderr.splitlines() if line.startswith("kubellm experiment: ")]
    assert result.returncode == 2 and len(said) == 1, result.stderr  # (huggingface_hub's progress bars aside)
    assert message in said[0], said[0]

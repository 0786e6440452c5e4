"""The config file: a whole FineTuneJob manifest or just its spec, YAML or JSON, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubellm.runtime.training.errors import ConfigError
from kubellm.runtime.training.job import load_job_file, resolve_output

SPEC = {
    "baseModel": {"uri": "dummy://llama"},
    "dataset": {"uri": "dummy://instructions?rows=32"},
    "training": {"method": "lora", "lora": {"rank": 4}},
}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_repository_example_manifest_parses() -> None:
    job_file = load_job_file(Path("examples/finetunejob.yaml"))
    assert job_file.name == "smollm2-dates"
    assert job_file.job.training.method == "lora"
    assert job_file.job.output is not None


def test_a_bare_spec_in_json(tmp_path: Path) -> None:
    job_file = load_job_file(_write(tmp_path, "spec.json", json.dumps(SPEC)))
    assert job_file.name is None
    assert job_file.job.training.lora is not None
    assert job_file.job.training.lora.rank == 4


def test_what_the_operator_writes_parses(tmp_path: Path) -> None:
    """The operator's ConfigMap: runtime sections only, plus distributed."""
    document = {**SPEC, "dataQuality": {"minChars": 2}, "distributed": {"nodes": 1, "processesPerNode": 1}}
    assert load_job_file(_write(tmp_path, "config.yaml", json.dumps(document))).job.data_quality.min_chars == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spec: [1", "invalid YAML at line 1"),
        ("kind: PersistentVolumeClaim\nmetadata: {name: x}\n", "expected a FineTuneJob manifest or a FineTuneJob spec"),
        ("kind: FineTuneJob\n---\nkind: FineTuneJob\n", "holds 2 FineTuneJobs"),
        ("- a\n- b\n", "expected a FineTuneJob manifest"),
        (json.dumps({**SPEC, "trainng": {}}), "spec.trainng: Extra inputs are not permitted"),
        (
            json.dumps({**SPEC, "training": {"method": "full", "learningRate": 0.1}}),
            "spec.training.learningRate: Input should be a valid string",
        ),
        (json.dumps({**SPEC, "training": {"method": "full", "lora": {}}}), "lora must be omitted when method is full"),
    ],
)
def test_bad_files_give_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_job_file(_write(tmp_path, "job.yaml", text))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read: No such file"):
        load_job_file(tmp_path / "nope.yaml")


def test_output_override_then_pvc_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELLM_PVC_ROOT", str(tmp_path))
    manifest = {
        "kind": "FineTuneJob",
        "metadata": {"name": "run-1"},
        "spec": {**SPEC, "output": {"pvc": {"claimName": "m"}}},
    }
    job_file = load_job_file(_write(tmp_path, "job.json", json.dumps(manifest)))
    assert resolve_output(job_file, None) == tmp_path / "m" / "run-1"
    assert resolve_output(job_file, tmp_path / "elsewhere") == tmp_path / "elsewhere"


def test_no_output_anywhere_is_an_error(tmp_path: Path) -> None:
    job_file = load_job_file(_write(tmp_path, "spec.json", json.dumps(SPEC)))
    with pytest.raises(ConfigError, match="pass --output DIR"):
        resolve_output(job_file, None)
    bare = load_job_file(_write(tmp_path, "spec2.json", json.dumps({**SPEC, "output": {"pvc": {"claimName": "m"}}})))
    with pytest.raises(ConfigError, match=r"output\.pvc\.path is required"):
        resolve_output(bare, None)

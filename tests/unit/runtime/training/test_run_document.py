"""``kubellm train``'s run document: what the operator writes parses, one-line errors, the output folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from kubellm.operator.api.finetunejob import FineTuneJobSpec
from kubellm.operator.local.documents import load_manifests
from kubellm.operator.manifests import finetunejob
from kubellm.runtime.errors import ConfigError
from kubellm.runtime.training.command import TrainOptions, add_arguments, load_run

DOCUMENT = {
    "baseModel": {"uri": "dummy://llama"},
    "dataset": {"uri": "dummy://instructions?rows=32"},
    "training": {"method": "lora", "lora": {"rank": 4}},
}


def _options(*argv: str) -> TrainOptions:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return TrainOptions.from_args(parser.parse_args(list(argv)))


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_what_the_operator_writes_for_the_example_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELLM_PVC_ROOT", str(tmp_path))
    resource = next(r for r in load_manifests([Path("examples/finetunejob.yaml")]).resources if r.kind == "FineTuneJob")
    assert isinstance(resource.spec, FineTuneJobSpec)
    config_map = finetunejob.build_training_config_map(resource.owner, resource.spec)
    path = _write(tmp_path, "config.yaml", config_map["data"]["config.yaml"])
    job, output = load_run(_options("--config", str(path)))
    assert job.training.method == "lora"
    assert output == tmp_path / resource.spec.output.pvc.claim_name / resource.name  # the operator filled in the path


def test_a_document_in_json_and_the_output_flag(tmp_path: Path) -> None:
    job, output = load_run(
        _options("--config", str(_write(tmp_path, "doc.json", json.dumps(DOCUMENT))), "--output", "o")
    )
    assert job.training.lora is not None
    assert job.training.lora.rank == 4
    assert output == Path("o")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("training: [1", "not valid YAML or JSON at line 1"),
        ("kind: FineTuneJob\nmetadata: {name: x}\n", "not a run document; run manifests with `kubellm run FILE`"),
        ("- a\n- b\n", "expected one mapping (a run document), found list"),
        (json.dumps({**DOCUMENT, "trainng": {}}), "trainng: Extra inputs are not permitted"),
        (
            json.dumps({**DOCUMENT, "training": {"method": "full", "learningRate": 0.1}}),
            "training.learningRate: Input should be a valid string",
        ),
        (
            json.dumps({**DOCUMENT, "training": {"method": "full", "lora": {}}}),
            "lora must be omitted when method is full",
        ),
        (json.dumps(DOCUMENT), "no output folder: set output.pvc.claimName and path, or pass --output"),
    ],
)
def test_bad_documents_give_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_run(_options("--config", str(_write(tmp_path, "job.yaml", text))))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_missing_file_or_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read: No such file"):
        load_run(_options("--config", str(tmp_path / "nope.yaml")))
    with pytest.raises(ConfigError, match="pass --config FILE"):
        load_run(_options())


def test_output_flag_then_environment_then_the_documents_pvc_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBELLM_PVC_ROOT", str(tmp_path))
    document = {**DOCUMENT, "output": {"pvc": {"claimName": "m", "path": "runs/1"}}}
    config = str(_write(tmp_path, "doc.json", json.dumps(document)))
    assert load_run(_options("--config", config))[1] == tmp_path / "m" / "runs/1"
    monkeypatch.setenv("KUBELLM_OUTPUT", str(tmp_path / "env"))
    assert load_run(_options("--config", config))[1] == tmp_path / "env"
    assert load_run(_options("--config", config, "--output", "flag"))[1] == Path("flag")

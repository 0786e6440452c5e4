"""``kubellm train`` failures: the exit code says what kind, stderr has one line, status.json the reason."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from kubellm.runtime.training import command

SPEC: dict[str, Any] = {
    "baseModel": {"uri": "dummy://llama"},
    "dataset": {"uri": "dummy://instructions?rows=16"},
    "training": {"method": "full", "maxSteps": 1},
}


def _run(tmp_path: Path, spec: dict[str, Any] | str, *extra: str) -> int:
    config = tmp_path / "job.yaml"
    config.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(["--config", str(config), *extra]))


def _stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("kubellm train: ")
    return err.strip()


def test_config_errors_exit_2_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "spec: [", "--output", str(tmp_path / "out")) == 2
    assert "not valid YAML or JSON at line 1" in _stderr_line(capsys)
    assert not (tmp_path / "out").exists()
    assert _run(tmp_path, SPEC) == 2
    assert "or pass --output" in _stderr_line(capsys)


def test_unknown_architecture_exits_2_and_records_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {**SPEC, "baseModel": {"uri": "dummy://transformer-xl"}}
    assert _run(tmp_path, spec, "--output", str(tmp_path / "out")) == 2
    assert "unknown architecture 'transformer-xl'" in _stderr_line(capsys)
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert (status["phase"], status["reason"]) == ("Failed", "InvalidModelSource")


def test_malformed_dataset_line_exits_2_with_its_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n{"prompt": oops}\n')
    spec = {**SPEC, "dataset": {"uri": f"file://{data}"}}
    assert _run(tmp_path, spec, "--output", str(tmp_path / "out")) == 2
    assert "data.jsonl:3: invalid JSON" in _stderr_line(capsys)


def test_failed_data_quality_exits_3_with_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = {**SPEC, "dataQuality": {"minRows": 100}}
    out = tmp_path / "out"
    assert _run(tmp_path, spec, "--output", str(out)) == 3
    assert "fewer than minRows 100" in _stderr_line(capsys)
    report = json.loads((out / "data_quality.json").read_text())
    assert report["passed"] is False and report["rows"] == 16
    status = json.loads((out / "status.json").read_text())
    assert status["reason"] == "DataQualityCheckFailed"
    assert status["dataQuality"]["passed"] is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_qlora_without_a_gpu_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = {**SPEC, "training": {"method": "qlora", "lora": {}, "maxSteps": 1}}
    assert _run(tmp_path, spec, "--output", str(tmp_path / "out")) == 2
    assert "qlora needs a CUDA GPU" in _stderr_line(capsys)

"""``kubellm experiment``: arguments, and one clear line for input it cannot use."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from kubellm.runtime.experiments import command

EXAMPLE = Path(__file__).parents[4] / "examples" / "promptexperiment.yaml"


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="kubellm experiment")
    command.add_arguments(parser)
    return command.run(parser.parse_args(list(argv)))


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert captured.out == ""
    return lines[0]


def test_defaults() -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--config", "x.yaml"])
    assert (args.endpoint, args.output, args.dataset, args.max_retries) == (None, Path("experiment-results"), None, 4)


def test_invalid_spec_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["spec"]["primaryMetric"] = "nope"
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(manifest))
    assert _run("--config", str(config)) == 2
    assert _one_line(capsys) == (
        f"kubellm experiment: {config}: invalid spec: primaryMetric must be score or the name of a scorer"
    )


def test_model_deployment_target_needs_an_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("--config", str(EXAMPLE)) == 2
    assert "needs --endpoint" in _one_line(capsys)


def test_dataset_file_rows_are_checked_against_the_scorers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"input": "What is 1 + 1?"}\n')
    code = _run("--config", str(EXAMPLE), "--endpoint", "http://127.0.0.1:9/v1", "--dataset", str(rows))
    assert code == 2
    assert _one_line(capsys).startswith("kubellm experiment: scorers exact, contains need expected on every row")

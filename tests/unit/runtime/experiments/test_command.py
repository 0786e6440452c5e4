"""``kubellm experiment``: arguments, and one clear line for input it cannot use."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from kubellm.contract.experiments import ExperimentConfig
from kubellm.runtime.experiments import command
from kubellm.runtime.experiments.spec import ExperimentOptions

EXAMPLE = Path(__file__).parents[4] / "examples" / "promptexperiment.yaml"


def _document(tmp_path: Path, **changes: object) -> Path:
    """The example's run document (as the operator writes it, without a target URL), with ``changes``."""
    manifest = yaml.safe_load(EXAMPLE.read_text())
    keys = {field.alias or name for name, field in ExperimentConfig.model_fields.items()}
    definition: dict[str, object] = {key: value for key, value in manifest["spec"].items() if key in keys}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**definition, "name": "prompt-styles", **changes}))
    return path


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
    options = ExperimentOptions.from_args(parser.parse_args(["--config", "x.yaml"]))
    assert (options.endpoint, options.output, options.dataset, options.max_retries) == (
        None, Path("experiment-results"), None, 4
    )  # fmt: skip


def test_invalid_spec_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _document(tmp_path, primaryMetric="nope")
    assert _run("--config", str(config)) == 2
    assert _one_line(capsys) == (
        f"kubellm experiment: {config}: document: primaryMetric must be score or the name of a scorer"
    )


def test_a_document_without_a_target_url_needs_an_endpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("--config", str(_document(tmp_path))) == 2
    assert "no endpoint: pass --endpoint URL" in _one_line(capsys)


def test_a_manifest_points_to_kubellm_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("--config", str(EXAMPLE)) == 2
    assert "not a run document; run manifests with `kubellm run FILE`" in _one_line(capsys)


def test_dataset_file_rows_are_checked_against_the_scorers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"input": "What is 1 + 1?"}\n')
    code = _run("--config", str(_document(tmp_path)), "--endpoint", "http://127.0.0.1:9/v1", "--dataset", str(rows))
    assert code == 2
    assert _one_line(capsys).startswith(
        "kubellm experiment: scorers exact, contains need an expected answer on every row"
    )

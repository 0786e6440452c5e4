"""Reporting to the operator: the report ConfigMap patch, and Prometheus gauges."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from kubellm.contract.training import TrainingProgress
from kubellm.runtime.reporting import ThrottledStatus
from kubellm.runtime.training.metrics import TrainingMetrics
from kubellm.runtime.training.reporting import Reporter


class Recorder:
    """Stands in for the API server: records what would be patched."""

    def __init__(self, succeed: bool = True) -> None:
        self.sent: list[dict[str, Any]] = []
        self.succeed = succeed

    def publish(self, files: Mapping[str, str]) -> bool:
        self.sent.append(json.loads(files["status.json"]))
        return self.succeed


def _training_reporter(tmp_path: Path, recorder: Recorder) -> Reporter:
    now = [0.0]
    return Reporter(tmp_path, stream=io.StringIO(), configmap=ThrottledStatus(recorder, 60.0, lambda: now[0]))


def test_only_status_fields_reach_the_config_map(tmp_path: Path) -> None:
    recorder = Recorder()
    reporter = _training_reporter(tmp_path, recorder)
    reporter.update_status(phase="Running", progress={"step": 1}, dataQuality={"passed": True})
    assert recorder.sent == [{"progress": {"step": 1}, "dataQuality": {"passed": True}}]
    assert json.loads((tmp_path / "status.json").read_text())["phase"] == "Running"


def test_progress_is_throttled_other_news_goes_at_once_and_nothing_is_resent(tmp_path: Path) -> None:
    recorder = Recorder()
    reporter = _training_reporter(tmp_path, recorder)
    reporter.update_status(progress={"step": 1})
    reporter.update_status(progress={"step": 2})  # within the interval
    reporter.update_status(output={"uri": "pvc://models/x"})  # not progress: sent at once
    reporter.update_status(output={"uri": "pvc://models/x"})  # nothing new
    assert [sorted(sent) for sent in recorder.sent] == [["progress"], ["output", "progress"]]
    assert recorder.sent[-1]["progress"] == {"step": 2}


def test_a_failed_report_does_not_stop_training(tmp_path: Path) -> None:
    reporter = _training_reporter(tmp_path, Recorder(succeed=False))
    reporter.update_status(progress={"step": 1})
    assert json.loads((tmp_path / "status.json").read_text())["progress"] == {"step": 1}


def test_gauges_follow_progress() -> None:
    metrics = TrainingMetrics("lora")
    metrics.update(TrainingProgress(step=5, total_steps=10, loss=1.5, eta_seconds=30))
    text = generate_latest(metrics.registry).decode()
    assert 'kubellm_training_step{method="lora"} 5.0' in text
    assert 'kubellm_training_loss{method="lora"} 1.5' in text
    assert 'kubellm_training_eta_seconds{method="lora"} 30.0' in text
    assert "kubellm_training_eval_loss{" not in text  # never set, never exported
    assert metrics.serve_if_configured() is None

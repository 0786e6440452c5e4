"""Progress: JSON log lines, the status file, the termination message, and the Trainer callbacks."""

from __future__ import annotations

import io
import json
import signal
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from kubellm.runtime.training.progress import PreemptionCallback, ProgressCallback
from kubellm.runtime.training.reporting import Reporter


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def arguments(tmp_path: Path) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), report_to="none")


def test_events_are_json_lines_and_status_merges_sections(tmp_path: Path) -> None:
    stream = io.StringIO()
    reporter = Reporter(tmp_path, stream=stream)
    reporter.event("data_quality", rows=3)
    reporter.update_status(phase="Running", dataQuality={"passed": True})
    reporter.update_status(progress={"step": 1}, message="old news")
    reporter.update_status(message=None)
    [line] = _lines(stream)
    assert line["event"] == "data_quality" and line["rows"] == 3 and "time" in line
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "Running"
    assert status["dataQuality"] == {"passed": True}
    assert status["progress"] == {"step": 1}
    assert "message" not in status
    assert not list(tmp_path.glob("*.tmp"))


def test_progress_callback_reports_steps_losses_and_eta(tmp_path: Path, arguments: TrainingArguments) -> None:
    stream = io.StringIO()
    reporter = Reporter(tmp_path, stream=stream)
    callback = ProgressCallback(reporter, samples_per_step=8)
    state, control = TrainerState(max_steps=10, global_step=0), TrainerControl()
    callback.on_train_begin(arguments, state, control)
    state.global_step, state.epoch = 4, 0.4
    callback.on_step_end(arguments, state, control)
    callback.on_log(arguments, state, control, logs={"loss": 2.5, "learning_rate": 1e-4})
    callback.on_log(arguments, state, control, logs={"eval_loss": 2.25})
    callback.on_save(arguments, state, control)
    progress = json.loads((tmp_path / "status.json").read_text())["progress"]
    assert (progress["step"], progress["totalSteps"], progress["percent"]) == (4, 10, 40)
    assert (progress["loss"], progress["evalLoss"], progress["learningRate"]) == (2.5, 2.25, 1e-4)
    assert progress["lastCheckpointStep"] == 4
    assert progress["samplesPerSecond"] > 0 and progress["etaSeconds"] >= 0
    events = [line["event"] for line in _lines(stream)]
    assert events.count("progress") >= 3 and "checkpoint" in events


def test_trial_progress_goes_to_the_log_only(tmp_path: Path, arguments: TrainingArguments) -> None:
    stream = io.StringIO()
    callback = ProgressCallback(Reporter(tmp_path, stream=stream), 8, status=False, trial=2)
    state = TrainerState(max_steps=4, global_step=1)
    callback.on_log(arguments, state, TrainerControl(), logs={"loss": 1.0})
    [line] = _lines(stream)
    assert (line["event"], line["trial"], line["loss"]) == ("trial_progress", 2, 1.0)
    assert not (tmp_path / "status.json").exists()


def test_termination_message_is_compact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reporter = Reporter(tmp_path, stream=io.StringIO())
    reporter.update_status(phase="Failed", reason="X", message="m", search={"bestTrial": 1, "trials": [{"number": 1}]})
    target = tmp_path / "termination-log"
    monkeypatch.setenv("KUBELLM_TERMINATION_LOG", str(target))
    assert not reporter.write_termination_message()  # Kubernetes creates the file; outside a pod there is none
    target.write_text("")
    assert reporter.write_termination_message()
    message = json.loads(target.read_text())
    assert (message["phase"], message["search"]) == ("Failed", {"bestTrial": 1})


def test_sigterm_asks_for_a_checkpoint_and_a_stop(arguments: TrainingArguments) -> None:
    callback, state, control = PreemptionCallback(), TrainerState(), TrainerControl()
    callback.on_train_begin(arguments, state, control)
    try:
        signal.raise_signal(signal.SIGTERM)
        callback.on_step_end(arguments, state, control)
    finally:
        callback.on_train_end(arguments, state, control)
    assert callback.interrupted
    assert control.should_save and control.should_training_stop
    assert signal.getsignal(signal.SIGTERM) is not callback._handle

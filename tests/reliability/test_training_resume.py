"""A ``kubellm train`` process SIGKILLed mid-run (a preempted node: no SIGTERM, no last checkpoint)
resumes from its newest complete checkpoint when rerun with the same output folder.

The kill lands late in a checkpoint interval, the worst case short of the next checkpoint; the
figure is how many optimizer steps the rerun had to do again (at most one interval), and the
rerun must still produce the whole result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from tests.reliability.conftest import RecordFigure

MODEL = "dummy://llama?hidden_size=48&intermediate_size=96&num_attention_heads=4&seed=1"
INTERVAL = 8  # checkpointEverySteps
KUBELLM = Path(sys.executable).with_name("kubellm")


class _Run:
    """``kubellm train`` as a subprocess; its JSON-line events collected as they arrive."""

    def __init__(self, config: Path, output: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "KUBELLM_TERMINATION_LOG": "/nonexistent"}
        command = [str(KUBELLM), "train", "--config", str(config), "--output", str(output)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(err,), daemon=True) for err in (False, True)]
        for reader in self._readers:
            reader.start()

    def _read(self, stderr: bool) -> None:
        stream = self.process.stderr if stderr else self.process.stdout
        assert stream is not None
        for line in stream:
            if stderr:
                self.errors.append(line)
            elif line.startswith("{") and line.endswith("}\n"):  # not a line the SIGKILL cut short
                self.events.append(json.loads(line))

    def steps(self, event: str) -> list[int]:
        """The ``step`` of every event of one kind seen so far."""
        return [e["step"] for e in list(self.events) if e["event"] == event and e.get("step") is not None]

    def finish(self, timeout: float) -> str:
        """Wait for the exit and the last lines (the readers own the pipes); stderr."""
        self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            assert stream is not None
            stream.close()
        return "".join(self.errors)


def _config(tmp_path: Path) -> Path:
    spec = {
        "baseModel": {"uri": MODEL},
        "dataset": {"uri": "dummy://instructions?rows=480&seed=1", "validationPercent": 10},
        "training": {
            "method": "full",
            "learningRate": "1e-3",
            "epochs": 1,
            "batchSize": 8,
            "maxSeqLength": 48,
            "checkpointEverySteps": INTERVAL,
        },
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _kill_late_in_an_interval(run: _Run, deadline: float) -> int:
    """SIGKILL once a progress line shows a step at least INTERVAL - 2 past a checkpoint; that step."""
    while time.monotonic() < deadline:
        checkpoints, progress = run.steps("checkpoint"), run.steps("progress")
        if checkpoints and progress and max(progress) >= max(checkpoints) + INTERVAL - 2:
            run.process.send_signal(signal.SIGKILL)
            return max(progress)
        assert run.process.poll() is None, f"training ended before the kill: {run.finish(10)}"
        time.sleep(0.005)
    raise AssertionError("no checkpoint and progress within the deadline")


def test_sigkilled_training_resumes_within_one_checkpoint_interval(tmp_path: Path, figure: RecordFigure) -> None:
    config, output = _config(tmp_path), tmp_path / "out"
    started = time.monotonic()
    first = _Run(config, output)
    reached = _kill_late_in_an_interval(first, time.monotonic() + 120)
    first.finish(timeout=30)
    assert first.process.returncode == -signal.SIGKILL

    second = _Run(config, output)
    err = second.finish(timeout=180)
    assert second.process.returncode == 0, err
    metrics = json.loads((output / "metrics.json").read_text())
    resumed = metrics["resumedFromStep"]
    lost = reached - (resumed or 0)
    print(f"\n[training] killed at step >= {reached}, resumed from {resumed}, finished {metrics['steps']}")
    name = f"steps redone after SIGKILL (checkpoint every {INTERVAL})"
    figure("training", name, lost, f"<= {INTERVAL}", lost <= INTERVAL)
    phase = json.loads((output / "status.json").read_text())["phase"]
    done = metrics["steps"] == metrics["totalSteps"] and (output / "kubellm-output.json").is_file()
    finished = done and phase == "Succeeded"
    outcome = f"{metrics['steps']}/{metrics['totalSteps']} steps, {phase}"
    figure("training", "killed run finished on rerun", outcome, "all steps, Succeeded", finished)
    figure("training", "kill + resume wall time (s)", time.monotonic() - started)
    assert resumed is not None and resumed > 0, metrics
    assert 0 <= lost <= INTERVAL
    assert finished, (metrics, phase)
    assert [e["event"] for e in second.events].count("completed") == 1

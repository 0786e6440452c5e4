"""Data-parallel training with PyTorch's own launcher: 1 process vs 2 gloo processes on the CPU.

Same model, data, seed and global batch (8 = 8 x 1 process = 4 x 2 processes): the losses agree
within a tolerance (the order in which 2 ranks see the rows differs from 1 process's), and the
2-process output loads and generates. The pods' launcher keeps a failed data check's exit code, and
a 2-process run killed after a checkpoint resumes from it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from kubellm.contract.training import DISTRIBUTED_LAUNCHER, EXIT_DATA_QUALITY
from kubellm.runtime.models.loading import load_model
from tests.integration.test_training import MODEL, _complete_checkpoints, _dataset, _wait_for_checkpoint_after

pytestmark = pytest.mark.integration

TOLERANCE = 0.15  # relative difference of the final eval loss


def _run(tmp_path: Path, name: str, processes: int) -> dict[str, Any]:
    batch = 8 // processes
    spec = {
        "baseModel": {"uri": MODEL},
        "dataset": {"uri": _dataset(tmp_path), "validationPercent": 15},
        "dataQuality": {"maxDroppedPercent": 30},
        "training": {"method": "full", "learningRate": "3e-3", "batchSize": batch, "maxSeqLength": 48,
                     "maxSteps": 20, "checkpointEverySteps": 10, "seed": 7},
    }  # fmt: skip
    spec["distributed"] = {"processesPerNode": processes}
    config, output = tmp_path / f"{name}.yaml", tmp_path / name
    config.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "KUBELLM_DDP_BACKEND": "gloo",
           "KUBELLM_TERMINATION_LOG": "/nonexistent"}  # fmt: skip
    train = ["-m", "kubellm.cli", "train", "--config", str(config), "--output", str(output)]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    command = [sys.executable, *(launcher if processes > 1 else []), *train]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics: dict[str, Any] = json.loads((output / "metrics.json").read_text())
    return {**metrics, "output": output}


def test_two_gloo_processes_train_like_one(tmp_path: Path) -> None:
    one, two = _run(tmp_path, "one", 1), _run(tmp_path, "two", 2)
    keys = ("initialEvalLoss", "trainLoss", "evalLoss")
    print(
        "\n[ddp] 1 process:", {k: round(one[k], 4) for k in keys}, "2 processes:", {k: round(two[k], 4) for k in keys}
    )
    assert one["initialEvalLoss"] == pytest.approx(
        two["initialEvalLoss"], rel=0.02
    )  # eval rows are sharded (padded) across ranks
    assert two["evalLoss"] == pytest.approx(one["evalLoss"], rel=TOLERANCE)
    assert two["evalLoss"] < two["initialEvalLoss"]
    loaded = load_model(str(two["output"]), dtype=torch.float32)
    inputs = loaded.tokenizer("Count on from 7:", return_tensors="pt")
    with torch.no_grad():
        ids = loaded.model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert ids.shape[1] > inputs["input_ids"].shape[1]


def test_a_failed_data_check_in_two_processes_exits_with_its_own_code(tmp_path: Path) -> None:
    """torchrun alone exits 1; the pods' launcher keeps 3, so the Job fails at once, not after retries."""
    data = tmp_path / "same.jsonl"
    row = json.dumps({"prompt": "Repeat: red\nAnswer:", "response": " red"})
    data.write_text(f"{row}\n" * 40)  # 39 of 40 rows are duplicates: far past maxDroppedPercent
    spec = {"baseModel": {"uri": MODEL}, "dataset": {"uri": f"file://{data}"}, "dataQuality": {"maxDroppedPercent": 30},
            "training": {"method": "full", "maxSteps": 2}, "distributed": {"processesPerNode": 2}}  # fmt: skip
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "KUBELLM_DDP_BACKEND": "gloo",
           "KUBELLM_TERMINATION_LOG": "/nonexistent"}  # fmt: skip
    launcher = [sys.executable, "-m", DISTRIBUTED_LAUNCHER, "--standalone", "--nproc-per-node", "2"]
    train = ["-m", "kubellm.cli", "train", "--config", str(config), "--output", str(tmp_path / "out")]
    command = [*launcher, *train]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    print(f"\n[ddp] 2 processes, failed data check: launcher exit code {result.returncode}")
    assert result.returncode == EXIT_DATA_QUALITY, result.stderr[-3000:]


def _start_two(config: Path, output: Path, log: Path) -> subprocess.Popen[str]:
    """The local run of a 2-process FineTuneJob, in its own process group (as a pod's processes are)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "KUBELLM_DDP_BACKEND": "gloo",
           "KUBELLM_TERMINATION_LOG": "/nonexistent"}  # fmt: skip
    launcher = [sys.executable, "-m", DISTRIBUTED_LAUNCHER, "--standalone", "--nproc-per-node", "2"]
    train = ["-m", "kubellm.cli", "train", "--config", str(config), "--output", str(output)]
    with log.open("w") as sink:
        return subprocess.Popen([*launcher, *train], stdout=sink, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)  # fmt: skip


def _steps_logged(log: Path) -> list[int]:
    """Steps in the progress lines so far (both ranks write to the log: skip a torn or mixed line)."""
    steps = []
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("event") == "progress":
            steps.append(int(event["step"]))
    return steps


def _wait_for_step(process: subprocess.Popen[str], log: Path, step: int) -> None:
    deadline = time.monotonic() + 90
    while max(_steps_logged(log), default=0) < step:
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.02)


def _kill_the_pod(launcher: subprocess.Popen[str]) -> None:
    """SIGKILL the launcher and its workers, as a lost node does (torchrun starts each worker in its own session)."""
    tasks = Path(f"/proc/{launcher.pid}/task")
    workers = [int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()]
    os.killpg(launcher.pid, signal.SIGKILL)
    for pid in workers:
        os.killpg(pid, signal.SIGKILL)
    launcher.wait(timeout=30)


def test_two_processes_killed_after_a_checkpoint_resume_from_it(tmp_path: Path) -> None:
    """Only rank 0 saves checkpoints; a rerun's ranks all resume from the same one and finish every step."""
    spec = {
        "baseModel": {"uri": MODEL},
        "dataset": {"uri": _dataset(tmp_path, 320), "validationPercent": 15},
        "dataQuality": {"maxDroppedPercent": 30},
        "training": {"method": "full", "learningRate": "1e-3", "batchSize": 4, "maxSeqLength": 48,
                     "maxSteps": 60, "checkpointEverySteps": 10, "seed": 7},
    }  # fmt: skip
    config, output = tmp_path / "job.yaml", tmp_path / "out"
    spec["distributed"] = {"processesPerNode": 2}
    config.write_text(json.dumps(spec))

    first_log = tmp_path / "first.log"
    first = _start_two(config, output, first_log)  # the node lost: every process, no warning
    _wait_for_step(first, first_log, _wait_for_checkpoint_after(first, output, 0) + 3)
    _kill_the_pod(first)
    reached = max(_steps_logged(first_log))
    resumable = _complete_checkpoints(output)[-1]

    second = _start_two(config, output, tmp_path / "second.log")
    assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    metrics = json.loads((output / "metrics.json").read_text())
    print(
        f"\n[ddp resume] killed at step {reached} after checkpoint {resumable}; rerun resumed from"
        f" {metrics['resumedFromStep']}, redid {max(reached - resumable, 0)} steps, finished at {metrics['steps']}"
    )
    assert 0 < metrics["resumedFromStep"] == resumable < 60, metrics
    assert metrics["steps"] == metrics["totalSteps"] == 60, metrics
    assert json.loads((output / "status.json").read_text())["phase"] == "Succeeded"

"""Data-parallel training with PyTorch's own launcher: 1 process vs 2 gloo processes on the CPU.

Same model, data, seed and global batch (8 = 8 x 1 process = 4 x 2 processes): the losses agree
within a tolerance (the order in which 2 ranks see the rows differs from 1 process's), and the
2-process output loads and generates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from kubellm.runtime.config import DISTRIBUTED_LAUNCHER, TRAIN_EXIT_DATA_QUALITY
from kubellm.runtime.models.loading import load_model
from tests.integration.test_training import MODEL, _dataset

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
    config, output = tmp_path / f"{name}.yaml", tmp_path / name
    config.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "KUBELLM_DDP_BACKEND": "gloo",
           "KUBELLM_TERMINATION_LOG": "/nonexistent"}  # fmt: skip
    train = ["-m", "kubellm.runtime.cli", "train", "--config", str(config), "--output", str(output)]
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
            "training": {"method": "full", "maxSteps": 2}}  # fmt: skip
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "KUBELLM_DDP_BACKEND": "gloo",
           "KUBELLM_TERMINATION_LOG": "/nonexistent"}  # fmt: skip
    launcher = [sys.executable, "-m", DISTRIBUTED_LAUNCHER, "--standalone", "--nproc-per-node", "2"]
    train = ["-m", "kubellm.runtime.cli", "train", "--config", str(config), "--output", str(tmp_path / "out")]
    command = [*launcher, *train]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    print(f"\n[ddp] 2 processes, failed data check: launcher exit code {result.returncode}")
    assert result.returncode == TRAIN_EXIT_DATA_QUALITY, result.stderr[-3000:]

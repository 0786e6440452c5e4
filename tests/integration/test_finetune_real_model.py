"""Fine-tuning the real model (SmolLM2) on a tiny budget raises its task score on held-out rows.

``kubellm train`` runs as a pod would, on the packaged GGUF source (converted once per test
session by the ``smollm2`` fixture), LoRA on generated date rows. The task score is measured
by generating answers before and after training; the one that counts is on held-out rows the
model never trained on, so a rise means it learnt the task, not the rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.documents import run_document
from tests.harness.smollm2 import ConvertedModel

pytestmark = pytest.mark.integration


def _job(uri: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubellm.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "dates"},
        "spec": {
            "baseModel": {"uri": uri},
            "dataset": {"uri": "dummy://dates?rows=128&seed=7", "validationPercent": 10},
            "training": {
                "method": "lora",
                "lora": {
                    "rank": 16,
                    "alpha": 32,
                    "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                },
                "epochs": 1,
                "batchSize": 8,
                "learningRate": "1e-3",
                "scheduler": "cosine",
                "warmupRatio": "0.05",
                "maxSeqLength": 96,
                "checkpointEverySteps": 100,
            },
            "evaluation": {"scorer": "exact", "maxRows": 13, "maxNewTokens": 16},
            "output": {"pvc": {"claimName": "models", "path": "dates"}},
        },
    }


def test_a_small_lora_run_on_smollm2_raises_the_held_out_task_score(smollm2: ConvertedModel, tmp_path: Path) -> None:
    config = tmp_path / "ftj.yaml"
    config.write_text(yaml.safe_dump(run_document(_job(smollm2.uri))))
    output = tmp_path / "out"
    env = {**os.environ, **smollm2.env(), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "kubellm.cli", "train", "--config", str(config), "--output", str(output)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads((output / "status.json").read_text())["evaluation"]
    before, after = evaluation["before"], evaluation["after"]
    print(f"\n[real fine-tune] task score (exact, {evaluation['rows']} held-out rows): {before} -> {after}")
    assert evaluation["rows"] == 13 and evaluation["scorer"] == "exact"
    assert after["score"] >= before["score"] + 0.4, (before, after)
    assert after["truncated"] < before["truncated"] or before["truncated"] == 0
    assert (output / "adapter_config.json").is_file()

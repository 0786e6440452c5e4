"""Run planning: steps, Trainer arguments from the spec, and picking the checkpoint to resume from."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubellm.contract.training import TrainingConfig
from kubellm.runtime.training.errors import ConfigError
from kubellm.runtime.training.trainer import RunPlan, build_arguments, last_complete_checkpoint, planned_steps


def _training(**fields: object) -> TrainingConfig:
    return TrainingConfig.model_validate({"method": "full", **fields})


def test_planned_steps() -> None:
    assert planned_steps(_training(epochs=2, batchSize=8), 100) == 2 * 13
    assert planned_steps(_training(epochs=1, batchSize=8, gradientAccumulationSteps=4), 100) == 4  # 13 batches
    assert planned_steps(_training(maxSteps=7), 100) == 7
    assert planned_steps(_training(maxSteps=7), 100, max_steps=3) == 3


def test_arguments_follow_the_spec(tmp_path: Path) -> None:
    training = _training(
        learningRate="3e-4",
        scheduler="cosine",
        warmupRatio="0.1",
        weightDecay="0.01",
        batchSize=4,
        checkpointEverySteps=5,
        keepCheckpoints=3,
        seed=7,
        precision="fp32",
    )
    arguments = build_arguments(RunPlan(training, tmp_path), total_steps=40, has_eval=True)
    assert arguments.learning_rate == pytest.approx(3e-4)
    assert arguments.lr_scheduler_type == "cosine"
    assert arguments.warmup_steps == 4
    assert arguments.weight_decay == pytest.approx(0.01)
    assert (arguments.save_steps, arguments.save_total_limit, arguments.eval_steps) == (5, 3, 5)
    assert (arguments.seed, arguments.report_to) == (7, [])
    assert not arguments.bf16 and not arguments.fp16


def test_fp16_needs_a_gpu(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        build_arguments(RunPlan(_training(precision="fp16"), tmp_path), total_steps=1, has_eval=False)


def _checkpoint(run_dir: Path, step: int, complete: bool = True) -> Path:
    path = run_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_resume_picks_the_newest_complete_checkpoint_and_removes_half_written_ones(tmp_path: Path) -> None:
    assert last_complete_checkpoint(tmp_path / "none") is None
    _checkpoint(tmp_path, 10)
    second = _checkpoint(tmp_path, 20)
    third = _checkpoint(tmp_path, 30, complete=False)  # killed while saving
    jit = _checkpoint(tmp_path, 25)
    (jit / "checkpoint-is-incomplete.txt").write_text("")
    assert last_complete_checkpoint(tmp_path) == second
    assert not third.exists() and not jit.exists()
    (tmp_path / "checkpoint-x").mkdir()
    assert last_complete_checkpoint(tmp_path) == second

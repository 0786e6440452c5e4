"""One training run with transformers' Trainer: arguments, checkpoints, resume, evaluation.

The Trainer owns the loop, the optimizer (AdamW), the schedule, mixed precision and the
checkpoint format; this module maps :class:`~kubellm.contract.TrainingConfig` onto it
and adds what a preemptible pod needs:

- checkpoints every ``checkpointEverySteps`` into ``<run dir>/checkpoint-<step>``, the newest
  ``keepCheckpoints`` kept;
- on start, the newest *complete* checkpoint (one with ``trainer_state.json``, which the Trainer
  writes last) is resumed from; half-written ones, from a pod killed while saving, are removed;
- the evaluation loss before any training is measured once and kept in the run folder, so a
  resumed run still reports how much training improved it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainerState, TrainingArguments
from transformers import ProgressCallback as ProgressBarCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from kubellm.contract.training import DDP_BACKEND_ENV, TrainingConfig
from kubellm.runtime.training.encoding import EncodedExample, PadCollator
from kubellm.runtime.training.errors import ConfigError, InterruptedRunError
from kubellm.runtime.training.methods import PreparedModel
from kubellm.runtime.training.progress import PreemptionCallback, ProgressCallback

__all__ = ["RunPlan", "RunResult", "last_complete_checkpoint", "planned_steps", "run_training"]

INITIAL_EVAL_FILE = "initial_eval.json"
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_TRAINER_STATE = "trainer_state.json"
_INCOMPLETE_MARKER = "checkpoint-is-incomplete.txt"


@dataclass
class RunPlan:
    """What one run does beyond the training settings."""

    training: TrainingConfig
    run_dir: Path
    max_steps: int | None = None
    """Overrides the training budget (search trials)."""
    eval_every: int | None = None
    """Evaluate every this many steps; default: at every checkpoint."""
    checkpoints: bool = True
    measure_initial: bool = True
    """Evaluate once before training (the baseline the final evaluation loss is compared with)."""
    callbacks: list[TrainerCallback] = field(default_factory=list)


@dataclass
class RunResult:
    """How a run ended."""

    model: Any
    global_step: int
    total_steps: int
    train_loss: float | None
    eval_loss: float | None
    initial_eval_loss: float | None
    resumed_from_step: int | None
    train_seconds: float
    steps_this_process: int


def planned_steps(training: TrainingConfig, train_examples: int, max_steps: int | None = None) -> int:
    """Optimizer steps the run will take (as the Trainer counts them; ``WORLD_SIZE`` processes share each epoch)."""
    budget = max_steps or training.max_steps
    if budget:
        return budget
    batches = math.ceil(train_examples / (training.batch_size * _world_size()))
    return training.epochs * max(math.ceil(batches / training.gradient_accumulation_steps), 1)


def _world_size() -> int:
    """Processes in the run (torchrun sets ``WORLD_SIZE``; 1 when run plainly)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that was fully written; newer half-written ones are deleted."""
    if not run_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    for _, path in sorted(found, reverse=True):
        if (path / _TRAINER_STATE).is_file() and not (path / _INCOMPLETE_MARKER).exists():
            return path
        shutil.rmtree(path, ignore_errors=True)
    return None


def _precision(training: TrainingConfig) -> tuple[bool, bool]:
    """(bf16, fp16) mixed-precision flags."""
    cuda = torch.cuda.is_available()
    if training.precision == "fp16" and not cuda:
        raise ConfigError("training.precision fp16 needs a GPU; use fp32 or bf16 on CPU")
    if training.precision == "auto":
        bf16 = cuda and torch.cuda.is_bf16_supported()
        return bf16, cuda and not bf16
    return training.precision == "bf16", training.precision == "fp16"


def _scheduler(training: TrainingConfig) -> str:
    return "constant_with_warmup" if training.scheduler == "constant" else training.scheduler


def build_arguments(plan: RunPlan, total_steps: int, has_eval: bool) -> TrainingArguments:
    """The Trainer's arguments for a run of ``total_steps`` steps."""
    training = plan.training
    eval_every = plan.eval_every or training.checkpoint_every_steps
    bf16, fp16 = _precision(training)
    arguments = TrainingArguments(
        output_dir=str(plan.run_dir),
        per_device_train_batch_size=training.batch_size,
        per_device_eval_batch_size=training.batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        num_train_epochs=training.epochs,
        max_steps=plan.max_steps or training.max_steps or -1,
        learning_rate=float(training.learning_rate),
        lr_scheduler_type=_scheduler(training),
        warmup_steps=math.ceil(total_steps * float(training.warmup_ratio)),
        weight_decay=float(training.weight_decay),
        logging_steps=max(1, total_steps // 20),
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_every,
        save_strategy="steps" if plan.checkpoints else "no",
        save_steps=training.checkpoint_every_steps,
        save_total_limit=training.keep_checkpoints,
        report_to="none",
        disable_tqdm=not sys.stderr.isatty(),
        seed=training.seed,
        data_seed=training.seed,
        activation_checkpointing=training.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),  # also what lets bf16 run on a CPU
        # The operator sets it: nccl on GPUs, gloo on CPUs; a plain single process has no group.
        ddp_backend=(os.environ.get(DDP_BACKEND_ENV) or None) if _world_size() > 1 else None,
        bf16=bf16,
        fp16=fp16,
    )
    return arguments


class _QuietProgressBar(ProgressBarCallback):
    """The Trainer's terminal progress bar, without printing every log dict to stdout."""

    def on_log(self, *args: Any, **kwargs: Any) -> None:
        """Logs go out as JSON lines instead."""


def _build_trainer(
    prepared: PreparedModel,
    plan: RunPlan,
    arguments: TrainingArguments,
    train: Sequence[EncodedExample],
    evaluation: Sequence[EncodedExample],
) -> Trainer:
    trainer = Trainer(
        model=prepared.model,
        args=arguments,
        data_collator=PadCollator(pad_token_id=_pad_id(prepared.tokenizer)),
        train_dataset=[example.features() for example in train],
        eval_dataset=[example.features() for example in evaluation] or None,
        callbacks=list(plan.callbacks),
    )
    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressBarCallback) is not None:
        trainer.add_callback(_QuietProgressBar())
    return trainer


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad) if pad is not None else 0


def _initial_eval_loss(trainer: Trainer, run_dir: Path, resuming: bool) -> float | None:
    path = run_dir / INITIAL_EVAL_FILE
    if resuming and path.is_file():
        value = json.loads(path.read_text()).get("evalLoss")
        return float(value) if value is not None else None
    if trainer.eval_dataset is None:
        return None
    loss = float(trainer.evaluate()["eval_loss"])
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"evalLoss": loss}) + "\n")
    return loss


def run_training(
    prepared: PreparedModel,
    train: Sequence[EncodedExample],
    evaluation: Sequence[EncodedExample],
    plan: RunPlan,
) -> RunResult:
    """Train (resuming from the newest complete checkpoint), then evaluate; SIGTERM stops with a checkpoint."""
    total = planned_steps(plan.training, len(train), plan.max_steps)
    arguments = build_arguments(plan, total, has_eval=bool(evaluation))
    preemption = PreemptionCallback()
    plan = dataclasses.replace(plan, callbacks=[*plan.callbacks, preemption])
    trainer = _build_trainer(prepared, plan, arguments, train, evaluation)
    checkpoint = last_complete_checkpoint(plan.run_dir) if plan.checkpoints else None
    initial = (
        _initial_eval_loss(trainer, plan.run_dir, resuming=checkpoint is not None) if plan.measure_initial else None
    )
    for callback in plan.callbacks:
        if isinstance(callback, ProgressCallback):
            callback.baseline(initial)
    started, start_step = time.monotonic(), _checkpoint_step(checkpoint)
    train_loss = _train_or_restore(trainer, checkpoint)
    if preemption.interrupted:
        step = trainer.state.global_step
        raise InterruptedRunError(f"stopped by SIGTERM at step {step}; checkpoint saved, run again to resume")
    seconds = time.monotonic() - started
    eval_loss = float(trainer.evaluate()["eval_loss"]) if evaluation else None
    return RunResult(
        model=trainer.model,
        global_step=trainer.state.global_step,
        total_steps=trainer.state.max_steps,
        train_loss=train_loss,
        eval_loss=eval_loss,
        initial_eval_loss=initial,
        resumed_from_step=start_step,
        train_seconds=seconds,
        steps_this_process=trainer.state.global_step - (start_step or 0),
    )


def _train_or_restore(trainer: Trainer, checkpoint: Path | None) -> float | None:
    """Train (from the checkpoint, if any); a checkpoint of a finished run is only loaded.

    Resuming the Trainer from its final checkpoint would take one extra step, so a pod
    restarted after training ended (say, while writing the outputs) just reloads the weights.
    """
    if checkpoint is not None:
        state = TrainerState.load_from_json(str(checkpoint / _TRAINER_STATE))
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            trainer._load_from_checkpoint(str(checkpoint))
            trainer.state = state
            return None
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return float(output.training_loss)


def _checkpoint_step(checkpoint: Path | None) -> int | None:
    if checkpoint is None:
        return None
    match = _CHECKPOINT.match(checkpoint.name)
    return int(match.group(1)) if match else None

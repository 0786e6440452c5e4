"""Trainer callbacks: progress figures for the :class:`~kubellm.runtime.training.reporting.Reporter`, and preemption.

:class:`ProgressCallback` turns the Trainer's state into :class:`TrainingProgress` (step, total,
losses, throughput, ETA), written to the status file at most about once a second and logged at
every Trainer log step. :class:`PreemptionCallback` turns SIGTERM (a pod being evicted or
deleted) into "save a checkpoint at the end of this step and stop", so the next pod resumes
instead of starting over.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from kubellm.contract.training import TrainingProgress
from kubellm.runtime.training.reporting import Reporter

__all__ = ["PreemptionCallback", "ProgressCallback"]

_STATUS_INTERVAL_SECONDS = 1.0


def _now() -> datetime:
    return datetime.now(UTC)


class ProgressCallback(TrainerCallback):
    """Feeds a :class:`Reporter` from the Trainer: steps, losses, throughput and ETA."""

    def __init__(self, reporter: Reporter, samples_per_step: int, *, status: bool = True, **context: Any) -> None:
        self.reporter = reporter
        self.samples_per_step = samples_per_step
        self.status = status
        self.context = context
        self.latest = TrainingProgress()
        self._started = time.monotonic()
        self._start_step = 0
        self._last_write = 0.0

    def baseline(self, initial_eval_loss: float | None) -> None:
        """Remember the evaluation loss measured before training (reported with every update)."""
        if initial_eval_loss is not None:
            self.latest = self.latest.model_copy(update={"initial_eval_loss": initial_eval_loss})

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        """Remember where this process started (a resumed run starts past 0)."""
        self._started = time.monotonic()
        self._start_step = state.global_step
        self._refresh(state)
        self._publish(log=True)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        """Refresh the figures; the status file is rewritten at most about once a second."""
        self._refresh(state)
        if time.monotonic() - self._last_write >= _STATUS_INTERVAL_SECONDS:
            self._publish(log=False)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **_: Any,
    ) -> None:
        """Take the losses and learning rate the Trainer logs, and emit a progress line."""
        logs = logs or {}
        updates = {"loss": logs.get("loss"), "eval_loss": logs.get("eval_loss")}
        updates["learning_rate"] = logs.get("learning_rate")
        self.latest = self.latest.model_copy(update={k: v for k, v in updates.items() if v is not None})
        self._refresh(state)
        self._publish(log=True)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        """Record the newest checkpoint."""
        self.latest = self.latest.model_copy(update={"last_checkpoint_step": state.global_step})
        self.reporter.event("checkpoint", step=state.global_step, **self.context)
        self._publish(log=False)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        """Final figures of this process."""
        self._refresh(state)
        self._publish(log=False)

    def _refresh(self, state: TrainerState) -> None:
        total = state.max_steps or None
        done_here = state.global_step - self._start_step
        elapsed = time.monotonic() - self._started
        rate = done_here / elapsed if done_here > 0 and elapsed > 0 else None
        self.latest = self.latest.model_copy(
            update={
                "step": state.global_step,
                "total_steps": total,
                "percent": min(100, int(100 * state.global_step / total)) if total else 0,
                "epoch": round(state.epoch, 4) if state.epoch is not None else None,
                "samples_per_second": round(rate * self.samples_per_step, 3) if rate else None,
                "eta_seconds": int((total - state.global_step) / rate) if rate and total else None,
                "updated_at": _now(),
            }
        )

    def _publish(self, *, log: bool) -> None:
        self._last_write = time.monotonic()
        if self.status:
            self.reporter.progress(self.latest, log=log)
        elif log:
            self.reporter.event("trial_progress", **self.context, **self.latest.dump())


class PreemptionCallback(TrainerCallback):
    """On SIGTERM: finish the current step, save a checkpoint, stop (``interrupted`` becomes True)."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.interrupted = True

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        """Install the SIGTERM handler (only the main thread can)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        """Ask the Trainer to checkpoint now and stop, once a SIGTERM came."""
        if self.interrupted:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        """Put the previous handler back."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

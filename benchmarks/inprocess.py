"""The in-process baselines: Hugging Face ``model.generate`` with no server in between.

Also where the served model folder comes from: a dummy model saved with ``save_pretrained``,
so that ``kubellm serve``, ``transformers serve`` and ``generate`` load the very same weights.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.load import LoadResult, RequestRecord

__all__ = [
    "Job",
    "generated_lengths",
    "load_engine_from",
    "load_folder",
    "save_model",
    "scheduler_run",
    "sequential",
    "static_batches",
]

Job = tuple[str, int]
"""A request: the prompt and its max_tokens."""


def save_model(uri: str, folder: Path) -> int:
    """Build the model ``uri`` names and save it, with its tokenizer, into ``folder``; its parameter count."""
    from kubellm.runtime.models.loading import load_model  # noqa: PLC0415

    loaded = load_model(uri)
    loaded.model.save_pretrained(str(folder))
    loaded.tokenizer.save_pretrained(str(folder))
    return int(sum(parameter.numel() for parameter in loaded.model.parameters()))


def load_folder(folder: Path) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) from a saved folder."""
    from kubellm.runtime.models.loading import load_model  # noqa: PLC0415

    loaded = load_model(str(folder))
    return loaded.model.eval(), loaded.tokenizer


def generated_lengths(model: Any, tokenizer: Any, prompts: Sequence[str], tokens: int) -> list[int]:
    """Greedy ``generate`` on a left-padded batch; per row, the tokens generated up to its end token."""
    tokenizer.padding_side = "left"
    inputs = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    eos = _end_token_ids(model)
    rows = output[:, inputs["input_ids"].shape[1] :].tolist()
    return [next((i + 1 for i, token in enumerate(row) if token in eos), len(row)) for row in rows]


def _end_token_ids(model: Any) -> set[int]:
    """The ids that end a sequence: a generation config names one (a GGUF conversion), several, or none."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {eos} if isinstance(eos, int) else set(eos)


def sequential(model: Any, tokenizer: Any, jobs: Sequence[Job]) -> LoadResult:
    """The jobs one after another, one ``generate`` call each."""
    records = []
    started = time.perf_counter()
    for prompt, tokens in jobs:
        begun = time.perf_counter()
        (count,) = generated_lengths(model, tokenizer, [prompt], tokens)
        records.append(RequestRecord(time.perf_counter() - begun, float("nan"), count))
    return LoadResult(records, time.perf_counter() - started)


def static_batches(model: Any, tokenizer: Any, jobs: Sequence[Job], size: int) -> LoadResult:
    """The jobs in left-padded batches of ``size``; each batch runs to its longest max_tokens.

    Only the tokens a request asked for count, so a short request in a long batch shows the
    waste of static batching.
    """
    records = []
    started = time.perf_counter()
    for first in range(0, len(jobs), size):
        batch = jobs[first : first + size]
        begun = time.perf_counter()
        lengths = generated_lengths(model, tokenizer, [p for p, _ in batch], max(t for _, t in batch))
        seconds = time.perf_counter() - begun
        records += [RequestRecord(seconds, float("nan"), min(n, t)) for n, (_, t) in zip(lengths, batch, strict=True)]
    return LoadResult(records, time.perf_counter() - started)


def load_engine_from(folder: Path) -> Any:
    """kubellm's serving engine on a saved folder, as ``kubellm serve`` loads it (no quantization)."""
    from kubellm.contract.schema import ModelSource  # noqa: PLC0415
    from kubellm.runtime.serving.engine import load_engine  # noqa: PLC0415
    from kubellm.runtime.serving.settings import ServerSettings  # noqa: PLC0415

    return load_engine(ServerSettings(model=ModelSource(uri=str(folder))))


class _Finishes:
    """Records when each sequence ends, from the scheduler's thread; wakes the waiter when all have."""

    def __init__(self, count: int) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[int, float] = {}
        self._count = count
        self._lock = threading.Lock()
        self.done = threading.Event()

    def sink(self, index: int) -> Callable[[Any], None]:
        def record(event: Any) -> None:
            if event.finish_reason is None:
                return
            with self._lock:
                self.seconds[index] = time.perf_counter() - self.started
                if len(self.seconds) == self._count:
                    self.done.set()

        return record


def scheduler_run(engine: Any, jobs: Sequence[Job], max_batch_size: int) -> tuple[LoadResult, list[list[int]]]:
    """All jobs submitted at once to kubellm's scheduler (continuous batching, no HTTP); greedy.

    The caller sleeps on an event the sequences' sinks set, so it takes no CPU from the scheduler.
    Returns the timing and each sequence's output token ids.
    """
    from kubellm.runtime.serving.batching import Scheduler  # noqa: PLC0415
    from kubellm.runtime.serving.batching import Sequence as Row  # noqa: PLC0415
    from kubellm.runtime.serving.sampling import SamplingParams  # noqa: PLC0415

    scheduler = Scheduler(engine, max_batch_size=max_batch_size, batch_wait_seconds=0.0)
    finishes = _Finishes(len(jobs))
    rows = [
        Row(engine.encode(p), SamplingParams(max_tokens=t, temperature=0), finishes.sink(i))
        for i, (p, t) in enumerate(jobs)
    ]
    scheduler.start()
    finishes.started = time.perf_counter()
    scheduler.submit(rows)
    finishes.done.wait()
    seconds = time.perf_counter() - finishes.started
    scheduler.stop()
    records = [RequestRecord(finishes.seconds[i], float("nan"), len(row.output_ids)) for i, row in enumerate(rows)]
    return LoadResult(records, seconds), [row.output_ids for row in rows]

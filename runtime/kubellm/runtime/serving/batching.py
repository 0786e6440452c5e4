"""Iteration-level (continuous) batching: the :class:`Batch` type and the :class:`Scheduler`.

A :class:`Batch` holds the rows being decoded together: their sequences, the next input token
of each row, the attention mask (left padding is masked out) and the key/value cache. As in
TGI, a batch is changed only by :meth:`Batch.filter` (finished or cancelled rows leave) and
:meth:`Batch.concatenate` (freshly prefilled rows join, their caches left-padded to a common
length), so after every decoding step a waiting request can join and a finished one frees its
row. Positions are per row, so padding never shifts a row's positions.

The :class:`Scheduler` runs that loop on its own thread, off the event loop; each
:class:`Sequence` reports tokens through a thread-safe ``sink``. It sees a batch only as a
:class:`RowBatch`, so an engine with its own cache (llama.cpp keeps one per sequence id) brings
its own kind of batch, and it admits a waiting sequence only when the engine reserves room for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.nn import functional

from kubellm.runtime.serving.sampling import SamplingParams, make_generator, sample_next_tokens

__all__ = ["Batch", "RowBatch", "Scheduler", "Sequence", "SequenceEvent", "StepModel"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SequenceEvent:
    """What a sequence produced in one step: new text, the token count so far, and how it ended."""

    text: str
    completion_tokens: int
    finish_reason: str | None = None
    error: str | None = None


def _ignore(_: SequenceEvent) -> None:
    return None


@dataclass(eq=False)
class Sequence:
    """One generated answer (a request with ``n`` choices has ``n`` sequences)."""

    prompt_ids: list[int]
    params: SamplingParams
    sink: Callable[[SequenceEvent], None] = _ignore
    adapter: str | None = None
    output_ids: list[int] = field(default_factory=list)
    text: str = ""
    sent_chars: int = 0
    finish_reason: str | None = None
    cancelled: bool = False
    generator: torch.Generator = field(init=False)
    _prefix_offset: int = field(default=0, init=False, repr=False)
    _read_offset: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.generator = make_generator(self.params.seed)

    @property
    def finished(self) -> bool:
        """Done generating, or no longer wanted."""
        return self.finish_reason is not None or self.cancelled

    def advance(self, token: int, eos_token_ids: frozenset[int], detokenize: Callable[[list[int]], str]) -> None:
        """Append a token, apply stop sequences and limits, and report the new text."""
        self.output_ids.append(token)
        if token in eos_token_ids:
            self.finish_reason = "stop"
            self._add_text(detokenize, self.output_ids[:-1], final=True)
        else:
            self._add_text(detokenize, self.output_ids, final=len(self.output_ids) >= self.params.max_tokens)
        if self.finish_reason is None and len(self.output_ids) >= self.params.max_tokens:
            self.finish_reason = "length"
        self.sink(SequenceEvent(self._take_delta(), len(self.output_ids), self.finish_reason))

    def fail(self, message: str) -> None:
        """End the sequence with an error."""
        self.finish_reason = "error"
        self.sink(SequenceEvent("", len(self.output_ids), "error", error=message))

    def _add_text(self, detokenize: Callable[[list[int]], str], ids: list[int], *, final: bool) -> None:
        """Decode only the tokens past the read offset, in a window (TGI's ``decode_token``), never the whole answer.

        The window starts at the previous read offset so tokenizers that join pieces by context
        (leading spaces) decode them as in the whole text. Text ending in an incomplete character
        is not kept until a later token completes it (or the sequence ends), but a stop sequence
        before it already ends the sequence.
        """
        if len(ids) <= self._read_offset:
            return
        prefix = detokenize(ids[self._prefix_offset : self._read_offset]) if self._read_offset else ""
        window = detokenize(ids[self._prefix_offset :])
        complete = len(window) > len(prefix) and not window.endswith("\ufffd")
        if complete or final:
            self._prefix_offset, self._read_offset = self._read_offset, len(ids)
            self._extend(window[len(prefix) :], keep=True)
        elif self.params.stop:
            self._extend(window[len(prefix) :], keep=False)

    def _extend(self, new: str, *, keep: bool) -> None:
        """Add ``new`` to the text (when ``keep``), cut at a stop sequence; only the new end is searched."""
        if not new:
            return
        text = self.text + new
        start = max(0, len(self.text) - max((len(stop) for stop in self.params.stop), default=0) + 1)
        cut = min((index for index in (text.find(stop, start) for stop in self.params.stop) if index >= 0), default=-1)
        if cut >= 0:
            text, self.finish_reason = text[:cut], "stop"
        if keep or cut >= 0:
            self.text = text

    def _take_delta(self) -> str:
        """New text that can no longer change: hold back a possible stop prefix."""
        end = len(self.text)
        if self.finish_reason is None:
            end -= max((len(stop) - 1 for stop in self.params.stop), default=0)
        if end <= self.sent_chars:
            return ""
        delta, self.sent_chars = self.text[self.sent_chars : end], end
        return delta


def _cache_layers(cache: Any) -> list[Any]:
    return [layer for layer in cache.layers if getattr(layer, "keys", None) is not None]


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [missing, 0]
    return functional.pad(tensor, pad)


class RowBatch(Protocol):
    """Rows decoded together, as the scheduler sees them; each engine brings its own kind."""

    sequences: list[Sequence]

    def __len__(self) -> int:
        """The number of rows."""
        ...

    def filter(self, keep: list[int]) -> RowBatch:
        """Only the rows ``keep`` (the engine forgets the others' cache)."""
        ...

    def joined(self, other: RowBatch) -> RowBatch:
        """This batch's rows, then ``other``'s (freshly prefilled rows of the same engine)."""
        ...

    def advance(self, tokens: list[int]) -> None:
        """Feed the chosen tokens as the next inputs."""
        ...


@dataclass
class Batch:
    """Rows decoded together; ``attention_mask`` covers the cached positions plus the next token."""

    sequences: list[Sequence]
    next_tokens: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor
    cache: Any

    def __len__(self) -> int:
        return len(self.sequences)

    def filter(self, keep: list[int]) -> Batch:
        """Only the rows ``keep``, with columns that are padding in every row dropped."""
        index = torch.tensor(keep, dtype=torch.long, device=self.next_tokens.device)
        mask = self.attention_mask[index]
        unused = int(torch.argmax((mask.sum(dim=0) > 0).to(torch.int)).item())
        for layer in _cache_layers(self.cache):
            layer.keys = layer.keys[index, :, unused:]
            layer.values = layer.values[index, :, unused:]
        return Batch(
            sequences=[self.sequences[row] for row in keep],
            next_tokens=self.next_tokens[index],
            attention_mask=mask[:, unused:],
            positions=self.positions[index],
            cache=self.cache,
        )

    def joined(self, other: RowBatch) -> Batch:
        """This batch's rows, then ``other``'s."""
        assert isinstance(other, Batch)
        return Batch.concatenate([self, other])

    @classmethod
    def concatenate(cls, batches: list[Batch]) -> Batch:
        """One batch of all the rows; shorter caches are left-padded (and masked)."""
        if len(batches) == 1:
            return batches[0]
        width = max(batch.attention_mask.shape[1] for batch in batches)
        layers = [_cache_layers(batch.cache) for batch in batches]
        for depth, first_layer in enumerate(layers[0]):
            first_layer.keys = torch.cat([_left_pad(ls[depth].keys, width - 1, 2) for ls in layers], dim=0)
            first_layer.values = torch.cat([_left_pad(ls[depth].values, width - 1, 2) for ls in layers], dim=0)
        return cls(
            sequences=[sequence for batch in batches for sequence in batch.sequences],
            next_tokens=torch.cat([batch.next_tokens for batch in batches]),
            attention_mask=torch.cat([_left_pad(batch.attention_mask, width, 1) for batch in batches]),
            positions=torch.cat([batch.positions for batch in batches]),
            cache=batches[0].cache,
        )

    def advance(self, tokens: list[int]) -> None:
        """Feed the chosen tokens as the next inputs: one more column and position per row."""
        device = self.next_tokens.device
        self.next_tokens = torch.tensor(tokens, dtype=torch.long, device=device).unsqueeze(1)
        ones = torch.ones((len(tokens), 1), dtype=self.attention_mask.dtype, device=device)
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        self.positions = self.positions + 1


class StepModel(Protocol):
    """What the scheduler needs of the engine: room for sequences, forward passes and detokenization."""

    eos_token_ids: frozenset[int]

    def reserve(self, sequence: Sequence) -> bool:
        """Whether ``sequence`` may join the running batch now; if so, its room is kept until it leaves."""
        ...

    def reset(self) -> None:
        """Forget every sequence (a step failed, and with it every running sequence)."""
        ...

    def prefill(self, sequences: list[Sequence]) -> tuple[RowBatch, torch.Tensor]:
        """A new batch for ``sequences`` (prompt run through the model) and its last-position logits."""
        ...

    def decode(self, batch: RowBatch) -> torch.Tensor:
        """Run the batch's next tokens through the model; the logits of each row."""
        ...

    def decode_joining(self, batch: RowBatch, sequences: list[Sequence]) -> tuple[RowBatch, torch.Tensor] | None:
        """One pass that decodes ``batch`` and prefills ``sequences``: the joined batch and every row's logits.

        None when the engine cannot: then it decodes, and prefills in a pass of its own.
        """
        ...

    def detokenize(self, token_ids: list[int]) -> str:
        """Text of generated tokens, special tokens skipped."""
        ...


def _noop(_: int) -> None:
    return None


class Scheduler:
    """Runs prefill and decode steps on a background thread, admitting waiting sequences each step."""

    def __init__(
        self,
        model: StepModel,
        *,
        max_batch_size: int,
        batch_wait_seconds: float,
        observe_batch: Callable[[int], None] = _noop,
        observe_queue: Callable[[int], None] = _noop,
        torch_threads: int | None = None,
    ) -> None:
        self.model = model
        self.torch_threads = torch_threads
        self.max_batch_size = max_batch_size
        self.batch_wait_seconds = batch_wait_seconds
        self._observe_batch = observe_batch
        self._observe_queue = observe_queue
        self._waiting: deque[Sequence] = deque()
        self._active: RowBatch | None = None
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="kubellm-scheduler", daemon=True)

    def start(self) -> None:
        """Start the decoding thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; sequences still waiting or running end with an error."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        for sequence in [*self._waiting, *(self._active.sequences if self._active else [])]:
            sequence.fail("the server is shutting down")
        self._waiting.clear()

    def submit(self, sequences: Iterable[Sequence]) -> None:
        """Queue sequences; they join the running batch at the next step."""
        with self._wake:
            self._waiting.extend(sequences)
            self._observe_queue(len(self._waiting))
            self._wake.notify_all()

    def cancel(self, sequences: Iterable[Sequence]) -> None:
        """Stop generating for these sequences (the client went away or timed out)."""
        for sequence in sequences:
            sequence.cancelled = True

    @property
    def waiting(self) -> int:
        """Sequences not yet in the running batch."""
        return len(self._waiting)

    def _run(self) -> None:
        if self.torch_threads is not None:
            # Set here, in the decoding thread: torch's CPU thread pool serves best the thread that
            # first uses it (kubellm serve loads the model on one thread so that this one is it).
            torch.set_num_threads(self.torch_threads)
        with torch.inference_mode():
            while self._next_round():
                self._step()

    def _next_round(self) -> bool:
        """Block until there is work; with an idle batch, wait briefly so a burst is prefilled together."""
        with self._wake:
            self._wake.wait_for(lambda: self._stopping or bool(self._waiting) or self._active is not None)
            if self._active is None and self.batch_wait_seconds > 0:
                deadline = time.monotonic() + self.batch_wait_seconds
                while not self._stopping and len(self._waiting) < self.max_batch_size:
                    if not self._wake.wait(timeout=max(0.0, deadline - time.monotonic())):
                        break
            return not self._stopping

    def _admit(self) -> list[Sequence]:
        free = self.max_batch_size - (len(self._active) if self._active else 0)
        with self._wake:
            admitted: list[Sequence] = []
            while self._waiting and len(admitted) < free:
                sequence = self._waiting[0]
                if not sequence.cancelled and not self.model.reserve(sequence):
                    break  # first come, first served: the head waits for room, nobody overtakes it
                self._waiting.popleft()
                if not sequence.cancelled:
                    admitted.append(sequence)
            self._observe_queue(len(self._waiting))
        return admitted

    def _step(self) -> None:
        admitted = self._admit()
        try:
            joining = admitted
            if self._active is not None:
                self._active, joining = self._decode(self._active, admitted)
            if joining:
                self._join(joining)
        except Exception as error:  # a failed step fails its rows, never the server
            log.exception("generation step failed")
            running = self._active.sequences if self._active else []
            for sequence in [*running, *admitted]:
                if not sequence.finished:
                    sequence.fail(f"generation failed: {type(error).__name__}")
            self._active = None
            self.model.reset()

    def _decode(self, batch: RowBatch, admitted: list[Sequence]) -> tuple[RowBatch | None, list[Sequence]]:
        """One decoding step, and the sequences still to prefill (the engine may take them along in the same pass)."""
        if any(sequence.cancelled for sequence in batch.sequences):
            remaining = self._drop_finished(batch)
            if remaining is None:
                return None, admitted
            batch = remaining
        self._observe_batch(len(batch))
        joined = self.model.decode_joining(batch, admitted) if admitted else None
        if joined is not None:
            return self._sample_and_advance(*joined), []
        return self._sample_and_advance(batch, self.model.decode(batch)), admitted

    def _join(self, sequences: list[Sequence]) -> None:
        fresh = self._sample_and_advance(*self.model.prefill(sequences))
        if fresh is None:
            return
        self._active = fresh if self._active is None else self._active.joined(fresh)

    def _sample_and_advance(self, batch: RowBatch, logits: torch.Tensor) -> RowBatch | None:
        sequences = batch.sequences
        tokens = sample_next_tokens(logits, [s.params for s in sequences], [s.generator for s in sequences])
        for sequence, token in zip(sequences, tokens, strict=True):
            sequence.advance(token, self.model.eos_token_ids, self.model.detokenize)
        batch.advance(tokens)
        return self._drop_finished(batch)

    @staticmethod
    def _drop_finished(batch: RowBatch) -> RowBatch | None:
        keep = [row for row, sequence in enumerate(batch.sequences) if not sequence.finished]
        if len(keep) == len(batch):
            return batch
        remaining = batch.filter(keep)  # even to no rows: the engine frees what the finished ones held
        return remaining if keep else None

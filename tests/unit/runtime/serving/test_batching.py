"""The Batch type (filter / concatenate), sequences' stop handling, and the scheduler's equivalence."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from kubellm.runtime.serving.batching import Batch, Scheduler, Sequence, SequenceEvent
from kubellm.runtime.serving.engine import Engine
from kubellm.runtime.serving.sampling import SamplingParams


@dataclass
class _Layer:
    keys: torch.Tensor
    values: torch.Tensor


@dataclass
class _Cache:
    layers: list[_Layer] = field(default_factory=list)


def _batch(masks: list[list[int]], marker: float) -> Batch:
    """A batch whose cache entries equal ``marker + row`` where the mask is 1 (0 where padded)."""
    mask = torch.tensor(masks)
    rows, width = mask.shape
    cached = (mask[:, :-1].float() * (marker + torch.arange(rows).float()).unsqueeze(1)).view(rows, 1, width - 1, 1)
    sequences = [Sequence([1], SamplingParams()) for _ in range(rows)]
    cache = _Cache([_Layer(cached.clone(), cached.clone())])
    positions = (mask.sum(dim=1, keepdim=True) - 1).long()
    return Batch(sequences, torch.arange(rows).unsqueeze(1), mask, positions, cache)


def test_filter_keeps_rows_and_drops_columns_padded_in_every_remaining_row() -> None:
    batch = _batch([[1, 1, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1]], marker=10)
    kept = batch.filter([1, 2])
    assert kept.sequences == batch.sequences[1:]
    assert kept.attention_mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert kept.cache.layers[0].keys[:, 0, :, 0].tolist() == [[0.0, 11.0], [12.0, 12.0]]
    assert kept.positions.tolist() == [[1], [2]]
    assert kept.next_tokens.tolist() == [[1], [2]]


def test_concatenate_left_pads_the_shorter_batch() -> None:
    long, short = _batch([[1, 1, 1, 1]], marker=1), _batch([[1, 1]], marker=5)
    joined = Batch.concatenate([long, short])
    assert joined.sequences == [*long.sequences, *short.sequences]
    assert joined.attention_mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert joined.cache.layers[0].values[:, 0, :, 0].tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 5.0]]
    assert joined.positions.tolist() == [[3], [1]]


def test_advance_adds_one_column_and_one_position() -> None:
    batch = _batch([[1, 1], [0, 1]], marker=0)
    batch.advance([7, 8])
    assert batch.next_tokens.tolist() == [[7], [8]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert batch.positions.tolist() == [[2], [1]]


def _spell(text: str) -> tuple[list[int], dict[int, str]]:
    alphabet = {index: char for index, char in enumerate(sorted(set(text)), start=10)}
    codes = {char: index for index, char in alphabet.items()}
    return [codes[char] for char in text], alphabet


def test_a_stop_sequence_ends_the_text_before_it_and_is_never_sent() -> None:
    tokens, alphabet = _spell("hello END more")
    events: list[SequenceEvent] = []
    sequence = Sequence([1], SamplingParams(max_tokens=50, stop=("END",)), sink=events.append)
    for token in tokens:
        sequence.advance(token, frozenset({0}), lambda ids: "".join(alphabet[i] for i in ids))
        if sequence.finished:
            break
    assert sequence.finish_reason == "stop"
    assert "".join(event.text for event in events) == "hello "
    assert events[-1].finish_reason == "stop"


def test_eos_stops_and_max_tokens_cuts_with_length() -> None:
    stopped = Sequence([1], SamplingParams(max_tokens=5))
    stopped.advance(0, frozenset({0}), lambda ids: "")
    assert stopped.finish_reason == "stop"
    cut = Sequence([1], SamplingParams(max_tokens=2))
    for _ in range(2):
        cut.advance(5, frozenset({0}), lambda ids: "x" * len(ids))
    assert (cut.finish_reason, cut.text) == ("length", "xx")


def test_text_is_decoded_a_window_at_a_time_and_equals_the_whole_decode(engine: Engine) -> None:
    ids = engine.tokenizer.encode("naïve café ☕ über " * 8, add_special_tokens=False)
    decoded: list[int] = []

    def detokenize(window: list[int]) -> str:
        decoded.append(len(window))
        return engine.detokenize(window)

    events: list[SequenceEvent] = []
    sequence = Sequence([1], SamplingParams(max_tokens=len(ids)), sink=events.append)
    for token in ids:
        sequence.advance(token, frozenset(), detokenize)
    assert sequence.text == engine.detokenize(ids) == "".join(event.text for event in events)
    assert all("\ufffd" not in event.text for event in events)  # a character split over tokens waits
    assert max(decoded) < 8  # windows, never the whole answer again


def test_a_stop_sequence_before_an_incomplete_character_stops_at_once() -> None:
    pieces = {1: "x", 2: "b\ufffd"}  # token 2: "b" and the first byte of a character not complete yet
    sequence = Sequence([1], SamplingParams(max_tokens=10, stop=("b",)))
    for token in (1, 2):
        sequence.advance(token, frozenset({0}), lambda ids: "".join(pieces[i] for i in ids))
    assert (sequence.finish_reason, sequence.text, len(sequence.output_ids)) == ("stop", "x", 2)


def _run(
    engine: Engine, prompts: list[tuple[str, int]], *, max_batch_size: int, stagger: float = 0.0
) -> list[list[int]]:
    scheduler = Scheduler(engine, max_batch_size=max_batch_size, batch_wait_seconds=0.0)
    scheduler.start()
    sequences = [Sequence(engine.encode(p), SamplingParams(max_tokens=n, temperature=0)) for p, n in prompts]
    try:
        for sequence in sequences:
            scheduler.submit([sequence])
            time.sleep(stagger)
        deadline = time.monotonic() + 60
        while not all(sequence.finished for sequence in sequences) and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        scheduler.stop()
    return [sequence.output_ids for sequence in sequences]


def test_continuous_batching_gives_the_same_greedy_tokens_as_one_at_a_time(engine: Engine) -> None:
    texts = ["Hello there", "The quick brown fox jumps over", "a", "Question: What is the capital of France?"]
    prompts = [(text, 6 + 5 * index) for index, text in enumerate(texts)]
    alone = [_run(engine, [prompt], max_batch_size=1)[0] for prompt in prompts]
    assert _run(engine, prompts * 2, max_batch_size=3, stagger=0.002) == alone * 2


def test_a_cancelled_sequence_leaves_the_batch(engine: Engine) -> None:
    scheduler = Scheduler(engine, max_batch_size=4, batch_wait_seconds=0.0)
    scheduler.start()
    keep = Sequence(engine.encode("keep"), SamplingParams(max_tokens=30, temperature=0))
    drop = Sequence(engine.encode("drop"), SamplingParams(max_tokens=500, temperature=0))
    try:
        scheduler.submit([keep, drop])
        scheduler.cancel([drop])
        deadline = time.monotonic() + 30
        while not keep.finished and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        scheduler.stop()
    assert keep.finish_reason in ("stop", "length")
    assert len(drop.output_ids) < 500

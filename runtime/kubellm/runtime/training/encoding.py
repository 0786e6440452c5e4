"""Tokenization with the loss masked on prompts, the train/eval split, and padding into batches.

The prompt and the completion are tokenized separately and joined, so the boundary is exact
whatever the tokenizer merges: the prompt keeps the tokenizer's special tokens (e.g. BOS), the
completion gets none and ends with EOS (the model learns where to stop). Labels are ``-100``
(ignored by the loss) on the prompt tokens and on padding. Rows longer than ``maxSeqLength``
are cut at the end; a row left with no completion token is dropped (and counted).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from kubellm.runtime.training.data import Example

__all__ = ["IGNORE_INDEX", "EncodedData", "EncodedExample", "PadCollator", "encode_all", "encode_example", "split"]

IGNORE_INDEX = -100
T = TypeVar("T")


@dataclass(frozen=True)
class EncodedExample:
    """Token ids and labels of one example; ``length`` is before truncation."""

    input_ids: list[int]
    labels: list[int]
    length: int

    @property
    def trained_tokens(self) -> int:
        """Tokens the loss is computed on (the first token is never predicted)."""
        return sum(label != IGNORE_INDEX for label in self.labels[1:])

    def features(self) -> dict[str, list[int]]:
        """What the model's forward pass takes."""
        return {"input_ids": self.input_ids, "labels": self.labels, "attention_mask": [1] * len(self.input_ids)}


@dataclass
class EncodedData:
    """Examples ready to train on, plus what was dropped."""

    examples: list[EncodedExample] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    """Token lengths of the kept examples, before truncation (for the quality report)."""
    sources: list[Example] = field(default_factory=list)
    """The example each kept one was encoded from (same order)."""
    no_trained_tokens: int = 0


def _ids(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def encode_example(example: Example, tokenizer: Any, max_length: int) -> EncodedExample:
    """Token ids and prompt-masked labels of one example, cut to ``max_length`` tokens."""
    eos = tokenizer.eos_token_id
    if example.prompt:
        prompt_ids = _ids(tokenizer, example.prompt, special=True)
        completion_ids = _ids(tokenizer, example.completion, special=False)
    else:
        prompt_ids, completion_ids = [], _ids(tokenizer, example.completion, special=True)
    if eos is not None and (not completion_ids or completion_ids[-1] != eos):
        completion_ids.append(eos)
    input_ids = prompt_ids + completion_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    return EncodedExample(input_ids=input_ids[:max_length], labels=labels[:max_length], length=len(input_ids))


def encode_all(examples: Sequence[Example], tokenizer: Any, max_length: int) -> EncodedData:
    """Encode every example, dropping those truncation left without a trained token."""
    data = EncodedData()
    for example in examples:
        encoded = encode_example(example, tokenizer, max_length)
        if encoded.trained_tokens == 0:
            data.no_trained_tokens += 1
            continue
        data.examples.append(encoded)
        data.lengths.append(encoded.length)
        data.sources.append(example)
    return data


def split(examples: Sequence[T], validation_percent: int, seed: int) -> tuple[list[T], list[T]]:
    """A reproducible (train, eval) split; eval gets at least one example when a percent is asked."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held_out = round(len(order) * validation_percent / 100)
    if validation_percent > 0 and len(order) >= 2:
        held_out = min(max(held_out, 1), len(order) - 1)
    eval_indices = set(order[:held_out])
    train = [examples[i] for i in order if i not in eval_indices]
    evaluation = [examples[i] for i in sorted(eval_indices)]
    return train, evaluation


@dataclass
class PadCollator:
    """Right-pads a batch: ``pad_token_id`` for inputs, ``-100`` for labels, 0 in the attention mask."""

    pad_token_id: int

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(feature["input_ids"]) for feature in features)
        pads = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX, "attention_mask": 0}
        return {
            name: torch.tensor([feature[name] + [pad] * (width - len(feature[name])) for feature in features])
            for name, pad in pads.items()
        }

"""The in-process baseline counts the tokens generated up to the end token, however the model names it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from benchmarks.inprocess import generated_lengths

PROMPT = [[1, 1], [1, 1]]
CONTINUATIONS = [[5, 2, 7], [5, 6, 7]]


class _Model:
    """Answers every batch with the same continuations; its generation config names ``eos`` as its end."""

    def __init__(self, eos: int | list[int] | None) -> None:
        self.generation_config = SimpleNamespace(eos_token_id=eos)

    def generate(self, input_ids: torch.Tensor, **_: Any) -> torch.Tensor:
        return torch.cat([input_ids, torch.tensor(CONTINUATIONS)], dim=1)


class _Tokenizer:
    padding_side = "right"

    def __call__(self, prompts: list[str], **_: Any) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor(PROMPT[: len(prompts)])}


@pytest.mark.parametrize(
    ("eos", "lengths"),
    [(2, [2, 3]), ([6], [3, 2]), ([2, 6], [2, 2]), (None, [3, 3])],
    ids=["one id (a GGUF conversion)", "a list", "several", "none"],
)
def test_lengths_stop_at_the_end_token(eos: int | list[int] | None, lengths: list[int]) -> None:
    assert generated_lengths(_Model(eos), _Tokenizer(), ["a", "b"], 3) == lengths

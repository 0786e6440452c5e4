"""Choosing the next token of every row of a batch, each row with its own sampling settings.

Greedy rows (temperature 0) are decided together by one ``argmax``; sampled rows apply their
temperature and nucleus (top-p) filter and draw from their own ``torch.Generator``, so a
request's seed gives the same draw whatever else shares the batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

__all__ = ["GREEDY_BELOW", "SamplingParams", "make_generator", "sample_next_tokens"]

GREEDY_BELOW = 1e-5
"""Temperatures below this are greedy: dividing logits by them would overflow to inf and NaN."""


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence is generated."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default=())

    @property
    def greedy(self) -> bool:
        """Temperature 0 (or too close to it to divide by) means always the most likely token."""
        return self.temperature < GREEDY_BELOW

    @property
    def deterministic(self) -> bool:
        """Whether the same request always gets the same answer (so it may be cached)."""
        return self.greedy or self.seed is not None


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded from the request (or at random when it gave no seed)."""
    generator = torch.Generator()
    # torch takes a 64-bit seed; wrapping keeps ``seed + choice index`` (and negative seeds) valid.
    generator.manual_seed(seed % 2**64 if seed is not None else random.getrandbits(63))
    return generator


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero every token outside the smallest set whose mass reaches ``top_p``."""
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, descending=True)
    outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > top_p
    sorted_probs[outside] = 0.0
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)


def _sample_row(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    probs = torch.softmax(logits.float().cpu() / params.temperature, dim=-1)
    probs = _nucleus(probs, params.top_p)
    if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0.0:
        return int(torch.argmax(logits).item())  # degenerate logits: fall back to greedy
    return int(torch.multinomial(probs, 1, generator=generator).item())


def sample_next_tokens(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
) -> list[int]:
    """The next token of each row of ``logits`` (shape ``[rows, vocab]``)."""
    chosen = torch.argmax(logits, dim=-1).tolist()
    for row, row_params in enumerate(params):
        if not row_params.greedy:
            chosen[row] = _sample_row(logits[row], row_params, generators[row])
    return [int(token) for token in chosen]

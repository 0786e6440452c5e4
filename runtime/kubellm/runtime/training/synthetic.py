"""``dummy://<task>?rows=N&seed=S``: synthetic datasets a small model can learn, built offline.

Tasks: ``instructions`` (``prompt``/``response`` rows), ``text`` (a ``text`` column) and
``chat`` (``messages`` rows). The rows mix three skills with a large space of distinct rows
(few exact duplicates): repeating a random word sequence, stating fixed facts about animals
(the same animal always has the same colour and food) and adding small numbers. Same seed,
same rows.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from kubellm.runtime.models.sources import DummySource, ModelSourceError

__all__ = ["TASKS", "synthetic_rows"]

_WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "green",
    "quiet",
    "brave",
    "lamp",
    "orbit",
    "seven",
    "paper",
    "tiger",
    "music",
    "north",
    "window",
    "silver",
    "garden",
    "rocket",
    "honey",
    "winter",
    "bridge",
    "candle",
    "ocean",
    "forest",
    "pepper",
]
_ANIMALS = ["cat", "dog", "fox", "owl", "bear", "wolf", "frog", "duck", "goat", "lion", "mouse", "horse"]
_COLORS = ["black", "brown", "red", "white", "grey", "silver", "green", "yellow", "white", "golden", "grey", "brown"]
_FOODS = ["fish", "bones", "berries", "mice", "honey", "meat", "flies", "bread", "grass", "meat", "cheese", "hay"]
_MAX_ROWS = 1_000_000


def _pair(rng: random.Random) -> tuple[str, str]:
    """One (question, answer) pair from one of the three skills."""
    skill = rng.random()
    if skill < 0.6:
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 6)))
        return f"Repeat after me: {words}", words
    if skill < 0.75:
        index = rng.randrange(len(_ANIMALS))
        animal, phrasing = _ANIMALS[index], rng.randrange(3)
        if rng.random() < 0.5:
            question = ("What color is the {}?", "Tell me the color of the {}.", "Which color has the {}?")[phrasing]
            return question.format(animal), f"The {animal} is {_COLORS[index]}."
        question = ("What does the {} eat?", "Tell me what the {} eats.", "Which food does the {} like?")[phrasing]
        return question.format(animal), f"The {animal} eats {_FOODS[index]}."
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."


def _instruction_row(rng: random.Random) -> dict[str, Any]:
    question, answer = _pair(rng)
    return {"prompt": f"Question: {question}\nAnswer:", "response": f" {answer}"}


def _text_row(rng: random.Random) -> dict[str, Any]:
    question, answer = _pair(rng)
    return {"text": f"{question} {answer}"}


def _chat_row(rng: random.Random) -> dict[str, Any]:
    question, answer = _pair(rng)
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


TASKS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "instructions": _instruction_row,
    "text": _text_row,
    "chat": _chat_row,
}


def synthetic_rows(source: DummySource) -> list[tuple[int, dict[str, Any]]]:
    """Numbered rows (from 1) of the task the URI names."""
    task = TASKS.get(source.name)
    if task is None:
        raise ModelSourceError(
            f"{source.uri}: unknown synthetic dataset {source.name!r}; choose one of {', '.join(TASKS)}"
        )
    unknown = sorted(set(source.options) - {"rows", "seed"})
    if unknown:
        raise ModelSourceError(f"{source.uri}: unknown option(s) {', '.join(unknown)}; use rows and seed")
    rows = _int_option(source, "rows", 256)
    if not 1 <= rows <= _MAX_ROWS:
        raise ModelSourceError(f"{source.uri}: rows must be between 1 and {_MAX_ROWS}")
    rng = random.Random(_int_option(source, "seed", 0))
    return [(number, task(rng)) for number in range(1, rows + 1)]


def _int_option(source: DummySource, name: str, default: int) -> int:
    raw = source.options.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]+", raw):
        raise ModelSourceError(f"{source.uri}: {name} must be a non-negative integer, got {raw!r}")
    return int(raw)

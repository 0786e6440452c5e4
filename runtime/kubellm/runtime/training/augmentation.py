"""Data augmentation: new training rows written by a model, checked like the dataset's own rows.

Only the training split is augmented (after the validation rows are held out), so the
evaluation loss stays measured on real rows. For each training row, in the split's shuffled
order, ``rowsPerExample`` requests are planned (at most ``maxNewRows`` in all): the
instruction template filled in with the row (``{prompt}``, ``{response}``) or with the row and
two others as ``Request:``/``Answer:`` blocks (``{examples}``). A model answers each one
(:mod:`kubellm.runtime.training.generators`), and every answer goes through, in order:

1. reading it: a paraphrase is the answer without preamble or labels, a new row its
   ``Request:`` and ``Answer:`` parts; an empty or unreadable answer is dropped (``invalid``),
   and so is a paraphrase that is no rewording (small models answer instead: a question that
   came back as a statement, or with the row's answer in it); a failed request is dropped too
   (``failed``), never a crash;
2. deduplication against every row of the dataset and the new rows before it, on normalised
   text (Unicode NFKC, case folded, punctuation and runs of spaces made one space);
3. the dataset's own quality checks (empty, ``minChars``, ``maxChars``, no trained token left
   after truncation).

New rows are located ``augmented:<n>``. Every answer is logged in ``augmentation.jsonl`` in the
output folder as it arrives, so a restarted pod reuses them instead of asking again (and
trains on the same rows); a log written for other settings or rows is started afresh.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kubellm.contract.training import AugmentationConfig, AugmentationReport, DatasetConfig, TrainingRun
from kubellm.runtime.training.data import MESSAGES_FIELD, Example, RawRow, chat_row, to_examples
from kubellm.runtime.training.encoding import EncodedExample, encode_all
from kubellm.runtime.training.quality import filter_examples
from kubellm.runtime.training.reporting import Reporter

__all__ = [
    "AUGMENTATION_FILE",
    "LOCATION_PREFIX",
    "AnswerLog",
    "Augmented",
    "Output",
    "Request",
    "RowGenerator",
    "Screened",
    "Seed",
    "augment",
    "fill_template",
    "fingerprint",
    "generator_name",
    "new_row",
    "normalise",
    "parse_new_row",
    "parse_paraphrase",
    "plan_requests",
    "rewords",
    "row_key",
    "sampling_seed",
    "screen",
    "seed_of",
    "sources_of",
]

AUGMENTATION_FILE = "augmentation.jsonl"
LOCATION_PREFIX = "augmented:"
OTHER_EXAMPLES = 2
"""Rows shown besides the seed row in ``{examples}``."""
MIN_ANSWER_CHARS = 4
"""A paraphrase holding the row's (normalised) answer of at least this many characters gives it away."""

_PLACEHOLDER = re.compile(r"\{(prompt|response|examples)\}")
_LABEL = r"^[ \t*#>_-]*{name}[ \t*_]*:[ \t*_]*"
_REQUEST = re.compile(_LABEL.format(name=r"(?:rewritten |new |paraphrased )?(?:request|question|prompt)"), re.I | re.M)
_ANSWER = re.compile(_LABEL.format(name=r"(?:answer|response)"), re.I | re.M)
_PARAPHRASE_LABEL = re.compile(_LABEL.format(name=r"(?:paraphrase|rewritten|rewrite)"), re.I | re.M)
_PREAMBLE = re.compile(r"^\s*(sure|certainly|okay|ok|of course|here)\b[^\n]*:\s*\n", re.I)
_QUOTES = ('"', "'", "\u201c", "\u201d", "`")


# --- seeds, requests and templates -------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    """A training row as augmentation sees it: its prompt and response, and a chat's earlier messages."""

    location: str
    prompt: str
    response: str
    context: tuple[dict[str, str], ...] = ()
    prompt_role: str | None = None
    """The role of a chat's prompt message (None: a prompt/response row)."""


def seed_of(row: RawRow, dataset: DatasetConfig) -> Seed:
    """The seed of a row that already made a valid example (see :func:`~kubellm.runtime.training.data.to_examples`)."""
    values = row.values or {}
    if not chat_row(values, dataset):
        prompt, response = values.get(dataset.prompt_field), values.get(dataset.response_field)
        return Seed(row.location, str(prompt or ""), str(response or ""))
    messages = [{"role": m["role"], "content": m["content"]} for m in values[MESSAGES_FIELD]]
    if len(messages) < 2:
        return Seed(row.location, "", messages[-1]["content"] if messages else "")
    request, answer = messages[-2], messages[-1]
    return Seed(row.location, request["content"], answer["content"], tuple(messages[:-2]), request["role"])


@dataclass(frozen=True)
class Request:
    """One new row asked of the model: its number (``augmented:<number>``), seed row and instruction."""

    number: int
    seed: Seed
    instruction: str


def format_examples(seeds: Sequence[Seed]) -> str:
    """Rows as ``Request:``/``Answer:`` blocks, the format mode new reads answers in."""
    return "\n\n".join(f"Request: {seed.prompt.strip()}\nAnswer: {seed.response.strip()}" for seed in seeds)


def fill_template(template: str, seed: Seed, examples: Sequence[Seed]) -> str:
    """The template with its placeholders replaced in one pass (a row's own braces stay as written)."""
    values = {"prompt": seed.prompt.strip(), "response": seed.response.strip(), "examples": format_examples(examples)}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def plan_requests(seeds: Sequence[Seed], config: AugmentationConfig, seed: int) -> list[Request]:
    """``rowsPerExample`` requests per seed with a prompt, in order, at most ``maxNewRows``; the same every time."""
    usable = [s for s in seeds if s.prompt.strip()]
    limit = len(usable) * config.rows_per_example
    if config.max_new_rows is not None:
        limit = min(limit, config.max_new_rows)
    rng = random.Random(seed)
    template = config.template()
    requests: list[Request] = []
    for index, current in enumerate(usable):
        others = usable[:index] + usable[index + 1 :]
        for _ in range(config.rows_per_example):
            if len(requests) == limit:
                return requests
            shown = [current, *rng.sample(others, min(OTHER_EXAMPLES, len(others)))]
            requests.append(Request(len(requests) + 1, current, fill_template(template, current, shown)))
    return requests


# --- reading answers ---------------------------------------------------------------------------


def _unquoted(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        return text[1:-1].strip()
    return text


def parse_paraphrase(answer: str) -> str | None:
    """The reworded prompt in an answer (preamble and labels removed, cut before any answer), or None."""
    text = _PREAMBLE.sub("", answer.strip(), count=1)
    label = _REQUEST.match(text) or _PARAPHRASE_LABEL.match(text)
    if label is not None:
        text = text[label.end() :]
    cut = min((m.start() for m in (_ANSWER.search(text), _REQUEST.search(text)) if m is not None), default=len(text))
    text = _unquoted(text[:cut])
    return text or None


def parse_new_row(answer: str) -> tuple[str, str] | None:
    """(prompt, response) from the first ``Request:``/``Answer:`` pair of an answer, or None."""
    text = _PREAMBLE.sub("", answer.strip(), count=1)
    label = _ANSWER.search(text)
    if label is None:
        return None
    before, after = text[: label.start()], text[label.end() :]
    requests = list(_REQUEST.finditer(before))
    prompt = _unquoted(before[requests[-1].end() :] if requests else before)
    following = _REQUEST.search(after)
    response = _unquoted(after[: following.start()] if following else after)
    if not prompt or not response:
        return None
    return prompt, response


def _edges_like(text: str, model: str) -> str:
    """``text`` with the leading and trailing whitespace of ``model`` (a dataset's ``"Q:\\n"`` conventions)."""
    stripped = model.strip()
    if not stripped:
        return text
    start = model.index(stripped)
    return model[:start] + text + model[start + len(stripped) :]


def rewords(seed: Seed, paraphrase: str) -> bool:
    """Whether a paraphrase still asks what the row asks: a question stays one, and it does not give the answer."""
    if seed.prompt.rstrip().endswith("?") and not paraphrase.rstrip().endswith("?"):
        return False
    answer = f" {normalise(seed.response)} "
    if len(answer) < MIN_ANSWER_CHARS + 2 or answer in f" {normalise(seed.prompt)} ":
        return True
    return answer not in f" {normalise(paraphrase)} "


def new_row(request: Request, answer: str, mode: str, dataset: DatasetConfig) -> RawRow | None:
    """The row an answer makes, or None when it cannot be read."""
    seed = request.seed
    if mode == "paraphrase":
        prompt = parse_paraphrase(answer)
        prompt = prompt if prompt is not None and rewords(seed, prompt) else None
        response: str | None = seed.response
    else:
        pair = parse_new_row(answer)
        prompt, response = pair if pair is not None else (None, None)
        response = None if response is None else _edges_like(response, seed.response)
    if prompt is None or response is None:
        return None
    prompt = _edges_like(prompt, seed.prompt)
    location = f"{LOCATION_PREFIX}{request.number}"
    if seed.prompt_role is None:
        return RawRow(location, {dataset.prompt_field: prompt, dataset.response_field: response})
    context = seed.context if mode == "paraphrase" else tuple(m for m in seed.context if m["role"] == "system")
    role = seed.prompt_role if mode == "paraphrase" else "user"
    messages = [*context, {"role": role, "content": prompt}, {"role": "assistant", "content": response}]
    return RawRow(location, {MESSAGES_FIELD: messages})


# --- deduplication and counting -------------------------------------------------------------


def normalise(text: str) -> str:
    """Text as deduplication compares it: NFKC, case folded, punctuation and whitespace runs as one space."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", folded).split())


def row_key(values: dict[str, Any], dataset: DatasetConfig) -> tuple[str, ...]:
    """What makes two rows the same: their normalised prompt and response, or every chat message."""
    if chat_row(values, dataset):
        return tuple(f"{m.get('role')}:{normalise(str(m.get('content')))}" for m in values[MESSAGES_FIELD])
    return (normalise(str(values.get(dataset.prompt_field) or "")), normalise(str(values.get(dataset.response_field))))


@dataclass(frozen=True)
class Output:
    """A model's answer to one request, or why there is none."""

    text: str | None
    error: str | None = None


@dataclass
class Screened:
    """New rows that are readable and unseen, and the counts so far."""

    rows: list[RawRow]
    report: AugmentationReport


def screen(
    answers: Sequence[tuple[Request, Output]],
    originals: Sequence[RawRow],
    config: AugmentationConfig,
    dataset: DatasetConfig,
    model: str,
) -> Screened:
    """Read every answer and drop failures, unreadable answers and duplicates, counting each."""
    seen = {row_key(row.values, dataset) for row in originals if row.values is not None}
    rows: list[RawRow] = []
    counts = {"failed": 0, "invalid": 0, "duplicates": 0}
    for request, output in answers:
        row = None if output.text is None else new_row(request, output.text, config.mode, dataset)
        key = row_key(row.values or {}, dataset) if row is not None else None
        if output.text is None:
            counts["failed"] += 1
        elif row is None or key is None:
            counts["invalid"] += 1
        elif key in seen:
            counts["duplicates"] += 1
        else:
            seen.add(key)
            rows.append(row)
    generated = len(answers) - counts["failed"] - counts["invalid"]
    report = AugmentationReport(model=model, requested=len(answers), generated=generated, **counts)
    return Screened(rows=rows, report=report)


# --- the answers log ---------------------------------------------------------------------------


def fingerprint(config: AugmentationConfig, requests: Sequence[Request]) -> str:
    """What a log's answers were asked for: the settings and every instruction."""
    material = json.dumps([config.dump(), [r.instruction for r in requests]], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass(frozen=True)
class AnswerLog:
    """``augmentation.jsonl``: a fingerprint line, then one line per answer as it arrived."""

    path: Path
    fingerprint: str

    def read(self) -> dict[int, Output]:
        """The answers an earlier attempt logged for the same requests (none if the log is for others)."""
        if not self.path.is_file():
            return {}
        answers: dict[int, Output] = {}
        with self.path.open(encoding="utf-8") as lines:
            for index, line in enumerate(lines):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut short by a kill: ask again from there
                if index == 0 and entry.get("fingerprint") != self.fingerprint:
                    return {}
                if index > 0:
                    answers[int(entry["number"])] = Output(text=entry.get("text"), error=entry.get("error"))
        return answers

    def restart(self, kept: Sequence[tuple[Request, Output]]) -> None:
        """Write the log afresh with the answers kept."""
        lines = [json.dumps({"fingerprint": self.fingerprint}), *(self._line(r, o) for r, o in kept)]
        self.path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    def append(self, request: Request, output: Output) -> None:
        """Log one more answer."""
        with self.path.open("a", encoding="utf-8") as log:
            log.write(self._line(request, output) + "\n")

    @staticmethod
    def _line(request: Request, output: Output) -> str:
        entry = {"number": request.number, "seed": request.seed.location, "text": output.text, "error": output.error}
        return json.dumps(entry)


# --- the whole step ----------------------------------------------------------------------------


class RowGenerator(Protocol):
    """A model that answers instructions (a server, or the base model in-process)."""

    batch_size: int
    """Instructions handed over at once (answers are logged after each batch)."""

    def generate(self, requests: Sequence[Request]) -> list[Output]:
        """One output per request, in order; a failure is an :class:`Output` with an error, not an exception."""
        ...


@dataclass
class Augmented:
    """The new training examples and the report of how they were made."""

    examples: list[EncodedExample] = field(default_factory=list)
    report: AugmentationReport | None = None


def _chunks(items: Sequence[Request], size: int) -> Iterator[Sequence[Request]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _answers(
    requests: Sequence[Request],
    log: AnswerLog,
    open_generator: Callable[[], AbstractContextManager[RowGenerator]],
    reporter: Reporter,
) -> list[tuple[Request, Output]]:
    """Every request with its output: logged ones reused, the rest generated (the model loads only if needed)."""
    answers = log.read()
    missing = [request for request in requests if request.number not in answers]
    if missing:
        log.restart([(request, answers[request.number]) for request in requests if request.number in answers])
        with open_generator() as generator:
            for batch in _chunks(missing, generator.batch_size):
                for request, output in zip(batch, generator.generate(batch), strict=True):
                    answers[request.number] = output
                    log.append(request, output)
                reporter.event("augmentation_progress", answered=len(answers), requested=len(requests))
    return [(request, answers[request.number]) for request in requests]


def augment(
    job: TrainingRun,
    seeds: Sequence[RawRow],
    originals: Sequence[RawRow],
    tokenizer: Any,
    *,
    open_generator: Callable[[], AbstractContextManager[RowGenerator]],
    output_dir: Path,
    reporter: Reporter,
) -> Augmented:
    """Ask for new rows after ``seeds`` (training rows), keep those unseen in ``originals`` that pass the checks."""
    config = job.data_augmentation
    if config is None:
        return Augmented()
    requests = plan_requests([seed_of(row, job.dataset) for row in seeds], config, sampling_seed(job))
    log = AnswerLog(output_dir / AUGMENTATION_FILE, fingerprint(config, requests))
    pairs = _answers(requests, log, open_generator, reporter)
    screened = screen(pairs, originals, config, job.dataset, generator_name(job))
    examples = to_examples(screened.rows, job.dataset, tokenizer)
    checked = filter_examples(examples, job.data_quality, None)
    encoded = encode_all(checked.kept, tokenizer, job.training.max_seq_length)
    kept = len(encoded.examples)
    report = screened.report.model_copy(update={"kept": kept, "failed_checks": len(screened.rows) - kept})
    return Augmented(examples=encoded.examples, report=report)


def sampling_seed(job: TrainingRun) -> int:
    """The augmentation's seed, else the training seed."""
    config = job.data_augmentation
    return job.training.seed if config is None or config.seed is None else config.seed


def generator_name(job: TrainingRun) -> str:
    """What generates the rows, as the report names it: the server's URL and model, or the base model's URI."""
    server = job.augmentation_server
    return f"{server.url} ({server.model})" if server is not None else job.base_model.uri


def sources_of(examples: Sequence[Example], rows: Sequence[RawRow], chosen: Sequence[Example]) -> list[RawRow]:
    """The rows ``chosen`` examples were made from (``examples`` were made one per row, in order)."""
    row_of = {id(example): row for example, row in zip(examples, rows, strict=True)}
    return [row_of[id(example)] for example in chosen]

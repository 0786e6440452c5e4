"""Data augmentation's pure parts: templates, requests, reading answers, deduplication, counting, the log."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kubellm.contract.training import AugmentationConfig, DatasetConfig, TrainingRun
from kubellm.runtime.models.tokenizer import build_byte_tokenizer
from kubellm.runtime.training.augmentation import (
    AUGMENTATION_FILE,
    Output,
    Request,
    RowGenerator,
    Seed,
    augment,
    fill_template,
    new_row,
    normalise,
    parse_new_row,
    parse_paraphrase,
    plan_requests,
    row_key,
    screen,
    seed_of,
)
from kubellm.runtime.training.data import RawRow
from kubellm.runtime.training.reporting import Reporter

TOKENIZER = build_byte_tokenizer()
DATASET = DatasetConfig(uri="file:///data.jsonl")


def _seed(prompt: str, response: str = " 4", location: str = "data.jsonl:1") -> Seed:
    return Seed(location, prompt, response)


def _rows(pairs: Sequence[tuple[str, str]]) -> list[RawRow]:
    return [RawRow(f"data.jsonl:{n}", {"prompt": p, "response": r}) for n, (p, r) in enumerate(pairs, start=1)]


def _config(**fields: Any) -> AugmentationConfig:
    return AugmentationConfig.model_validate(fields)


# --- templates and requests ---------------------------------------------------------------------


def test_placeholders_are_filled_once_and_row_braces_stay() -> None:
    seed = _seed("Say {response} literally", " {examples}")
    text = fill_template("P={prompt} R={response} E={examples} {other}", seed, [seed])
    assert text == (
        "P=Say {response} literally R={examples} E=Request: Say {response} literally\nAnswer: {examples} {other}"
    )


def test_requests_per_row_capped_and_the_same_every_time() -> None:
    seeds = [_seed(f"question {n}", location=f"data.jsonl:{n}") for n in range(1, 6)]
    config = _config(rowsPerExample=3, mode="new")
    requests = plan_requests(seeds, config, seed=7)
    assert [r.number for r in requests] == list(range(1, 16))
    assert [r.seed.location for r in requests[:4]] == ["data.jsonl:1"] * 3 + ["data.jsonl:2"]
    assert requests == plan_requests(seeds, config, seed=7)
    assert requests[0].instruction.count("Request: question") == 3  # the row first, then two others
    assert "answers:\n\nRequest: question 1\nAnswer: 4\n\nRequest: question" in requests[0].instruction
    assert requests[0].instruction != requests[1].instruction  # other rows shown each time
    assert len(plan_requests(seeds, _config(rowsPerExample=3, maxNewRows=4), seed=7)) == 4


def test_rows_without_a_prompt_are_not_seeds() -> None:
    seeds = [_seed("   "), _seed("a real question", location="data.jsonl:2")]
    requests = plan_requests(seeds, _config(), seed=1)
    assert [r.seed.location for r in requests] == ["data.jsonl:2"]
    assert requests[0].instruction.endswith("Request: a real question")


def test_seeds_from_prompt_response_and_chat_rows() -> None:
    plain = seed_of(RawRow("a:1", {"prompt": "Q?", "response": None}), DATASET)
    assert (plain.prompt, plain.response, plain.prompt_role) == ("Q?", "", None)
    chat = RawRow(
        "a:2",
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi?"},
                {"role": "assistant", "content": "Hello."},
            ]
        },
    )
    seed = seed_of(chat, DATASET)
    assert (seed.prompt, seed.response, seed.prompt_role) == ("Hi?", "Hello.", "user")
    assert seed.context == ({"role": "system", "content": "Be brief."},)


# --- reading answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("How much is two plus two?", "How much is two plus two?"),
        ("Sure! Here is the rewritten request:\nHow much is 2 + 2?", "How much is 2 + 2?"),
        ('Request: "What do you get adding 2 and 2?"', "What do you get adding 2 and 2?"),
        ("**Rewritten request:** Add 2 to 2.\nAnswer: 4", "Add 2 to 2."),
        ("Compute 2+2.\n\nRequest: something else", "Compute 2+2."),
        ("Summarise:\n\nline one\nline two", "Summarise:\n\nline one\nline two"),
        ("   ", None),
        ("Answer: 4", None),
        ('""', None),
    ],
)
def test_paraphrases_are_read_without_preamble_labels_or_answers(answer: str, expected: str | None) -> None:
    assert parse_paraphrase(answer) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Request: What is 3 plus 5?\nAnswer: 8", ("What is 3 plus 5?", "8")),
        ("Here is one:\nRequest: Name a colour.\nAnswer: Blue.\n\nRequest: more", ("Name a colour.", "Blue.")),
        ("**Request:** Spell cat.\n**Answer:** c-a-t", ("Spell cat.", "c-a-t")),
        ("What is 1 + 1?\nAnswer: 2", ("What is 1 + 1?", "2")),
        ("Request: What is 1 + 1?\nResponse:\n2", ("What is 1 + 1?", "2")),
        ("Request: What is 1 + 1?", None),
        ("Request:\nAnswer: 2", None),
        ("Request: What is 1 + 1?\nAnswer:   ", None),
        ("", None),
    ],
)
def test_new_rows_are_read_from_request_and_answer_lines(answer: str, expected: tuple[str, str] | None) -> None:
    assert parse_new_row(answer) == expected


@pytest.mark.parametrize(
    ("paraphrase", "kept"),
    [
        ("Which city is the capital of France?", True),
        ("The capital of France is Paris.", False),  # answered: a question became a statement
        ("Is Paris the capital of France?", False),  # the answer given away
        ("Tell me the capital of France", False),
    ],
)
def test_a_paraphrase_must_still_ask_without_answering(paraphrase: str, kept: bool) -> None:
    request = Request(1, _seed("What is the capital of France?", " Paris"), "...")
    assert (new_row(request, paraphrase, "paraphrase", DATASET) is not None) == kept


def test_an_answer_in_the_prompt_itself_or_a_short_one_is_no_giveaway() -> None:
    quoted = Request(1, _seed("Spell 'banana' backwards?", "ananab banana"), "...")
    assert new_row(quoted, "How is banana written backwards?", "paraphrase", DATASET) is not None
    short = Request(2, _seed("Name three primary colours.", " red"), "...")
    assert new_row(short, "List the three primary colours, red first.", "paraphrase", DATASET) is not None
    longer = Request(3, _seed("Name three primary colours.", " red, yellow and blue"), "...")
    assert new_row(longer, "Say red, yellow and blue: the primary colours.", "paraphrase", DATASET) is None


def test_a_paraphrase_keeps_the_response_and_the_dataset_whitespace() -> None:
    request = Request(3, _seed("Question: 2+2?\n", " 4"), "...")
    row = new_row(request, "Question: what is two plus two?", "paraphrase", DATASET)
    assert row == RawRow("augmented:3", {"prompt": "what is two plus two?\n", "response": " 4"})
    new = new_row(request, "Request: 3+3?\nAnswer: 6", "new", DATASET)
    assert new == RawRow("augmented:3", {"prompt": "3+3?\n", "response": " 6"})
    assert new_row(request, "no labels", "new", DATASET) is None


def test_chat_rows_keep_their_context_or_only_the_system_message() -> None:
    system = {"role": "system", "content": "Be brief."}
    earlier = [system, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    seed = Seed("c:1", "And 2+2?", "4", tuple(earlier), "user")
    paraphrased = new_row(Request(1, seed, "..."), "What about 2+2?", "paraphrase", DATASET)
    assert paraphrased is not None and paraphrased.values is not None
    assert paraphrased.values["messages"] == [
        *earlier,
        {"role": "user", "content": "What about 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    written = new_row(Request(2, seed, "..."), "Request: 5+5?\nAnswer: 10", "new", DATASET)
    assert written is not None and written.values is not None
    assert written.values["messages"] == [
        system,
        {"role": "user", "content": "5+5?"},
        {"role": "assistant", "content": "10"},
    ]


# --- deduplication and counting ------------------------------------------------------------------


def test_normalised_text_ignores_case_punctuation_spacing_and_unicode_forms() -> None:
    assert normalise("  What IS 2+2?\n") == normalise("what is 2 + 2") == "what is 2 2"
    assert normalise("ﬁne café") == normalise("FINE CAFÉ")
    assert normalise("what is 2+3") != normalise("what is 2+2")
    assert row_key({"prompt": "Hi!", "response": "Yo"}, DATASET) == row_key(
        {"prompt": "hi", "response": "yo."}, DATASET
    )
    chat = {"messages": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Yo"}]}
    assert row_key(chat, DATASET) == ("user:hi", "assistant:yo")


def test_screening_counts_failures_unreadable_answers_and_duplicates() -> None:
    originals = _rows([("What is 2 plus 2?", " 4"), ("What is 3 plus 3?", " 6")])
    seeds = [seed_of(row, DATASET) for row in originals]
    answers = [
        (Request(1, seeds[0], ""), Output("How much is two plus two?")),
        (Request(2, seeds[0], ""), Output("HOW MUCH is two plus two ?")),  # the first one again
        (Request(3, seeds[1], ""), Output("what is 3 plus 3?")),  # the dataset's own row
        (Request(4, seeds[1], ""), Output("   ")),
        (Request(5, seeds[1], ""), Output(None, "HTTP 500: boom")),
    ]
    screened = screen(answers, originals, _config(), DATASET, "a model")
    assert [row.location for row in screened.rows] == ["augmented:1"]
    report = screened.report
    assert (report.requested, report.generated, report.invalid, report.failed, report.duplicates) == (5, 3, 1, 1, 2)


# --- the whole step, with a stand-in model ----------------------------------------------------------


@dataclass
class FakeGenerator:
    """Answers by the seed row's location; None stands for a failed request."""

    answers: Callable[[Request], str | None]
    batch_size: int = 2
    batches: int = 0

    def generate(self, requests: Sequence[Request]) -> list[Output]:
        self.batches += 1
        return [Output(a) if (a := self.answers(r)) is not None else Output(None, "HTTP 500") for r in requests]


def _opener(generator: RowGenerator) -> Callable[[], Any]:
    @contextmanager
    def opened() -> Iterator[RowGenerator]:
        yield generator

    return opened


def _never() -> Any:
    raise AssertionError("the model was loaded although every answer was logged")


ROWS = [
    ("What is 2 plus 2?", " 4"),
    ("Name a primary colour.", " Red"),
    ("Spell the word cat.", " c-a-t"),
    ("What is the capital of France?", " Paris"),
    ("Give a number above ten.", " 11"),
    ("Say hello politely.", " Good day to you."),
]
ANSWERS = {
    "data.jsonl:1": "Here is the rewritten request:\nHow much do two and two make?",  # kept
    "data.jsonl:2": "",  # invalid
    "data.jsonl:3": None,  # failed request
    "data.jsonl:4": "what is the CAPITAL of france ?",  # duplicate of the dataset's row
    "data.jsonl:5": "Hm",  # too short (minChars)
    "data.jsonl:6": "say hello, POLITELY",  # duplicate of the dataset's row, once normalised
}


def _job(**augmentation: Any) -> TrainingRun:
    return TrainingRun.model_validate(
        {
            "baseModel": {"uri": "dummy://llama"},
            "dataset": {"uri": "file:///data.jsonl"},
            "training": {"method": "full"},
            "dataQuality": {"minChars": 12},
            "dataAugmentation": augmentation or {"mode": "paraphrase"},
        }
    )


def _augment(job: TrainingRun, rows: list[RawRow], opener: Callable[[], Any], folder: Path) -> Any:
    reporter = Reporter(None, stream=io.StringIO())
    return augment(job, rows, rows, TOKENIZER, open_generator=opener, output_dir=folder, reporter=reporter)


def test_new_rows_are_counted_checked_and_logged(tmp_path: Path) -> None:
    rows = _rows(ROWS)
    generator = FakeGenerator(lambda r: ANSWERS[r.seed.location])
    result = _augment(_job(), rows, _opener(generator), tmp_path)
    report = result.report
    assert report.model == "dummy://llama"
    assert (report.requested, report.generated, report.invalid, report.failed) == (6, 4, 1, 1)
    assert (report.duplicates, report.failed_checks, report.kept) == (2, 1, 1)
    assert len(result.examples) == 1
    assert str(TOKENIZER.decode(result.examples[0].input_ids)).startswith("How much do two and two make? 4")
    assert generator.batches == 3
    log = [json.loads(line) for line in (tmp_path / AUGMENTATION_FILE).read_text().splitlines()]
    assert "fingerprint" in log[0]
    assert [entry["seed"] for entry in log[1:]] == [f"data.jsonl:{n}" for n in range(1, 7)]
    assert log[3]["error"] == "HTTP 500"

    again = _augment(_job(), rows, _never, tmp_path)  # a restarted pod: every answer is reused
    assert again.report == report


def test_a_log_cut_short_or_for_other_settings_is_not_reused(tmp_path: Path) -> None:
    rows = _rows(ROWS)
    _augment(_job(), rows, _opener(FakeGenerator(lambda r: ANSWERS[r.seed.location])), tmp_path)
    log = tmp_path / AUGMENTATION_FILE
    log.write_text(log.read_text()[:-20])  # killed while writing the last answer
    resumed = FakeGenerator(lambda r: ANSWERS[r.seed.location])
    assert _augment(_job(), rows, _opener(resumed), tmp_path).report.kept == 1
    assert resumed.batches == 1
    other = FakeGenerator(lambda r: "Another way to ask: " + r.seed.prompt)
    report = _augment(_job(mode="paraphrase", temperature="0.9"), rows, _opener(other), tmp_path).report
    assert other.batches == 3
    assert (report.kept, report.duplicates) == (6, 0)


# --- configuration -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"promptTemplate": "Rewrite this."}, "must contain {prompt} in mode paraphrase"),
        ({"mode": "new", "promptTemplate": "Rewrite {prompt}"}, "{examples} in mode new"),
        ({"model": "adapter"}, "model applies only with modelDeploymentRef"),
        ({"rowsPerExample": 2, "temperature": "0"}, "needs a temperature above 0"),
        ({"temperature": 0.7}, "string"),
        ({"maxNewRows": 0}, "greater than or equal to 1"),
    ],
)
def test_invalid_augmentation_settings_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        _config(**fields)


def test_defaults_and_templates() -> None:
    config = _config()
    assert (config.mode, config.rows_per_example, config.temperature, config.max_tokens) == (
        "paraphrase",
        1,
        "0.7",
        256,
    )
    assert "{prompt}" in config.template()
    assert "{examples}" in _config(mode="new").template()
    assert _config(mode="new", promptTemplate="More like {examples}").template() == "More like {examples}"
    assert _config(modelDeploymentRef={"name": "llm"}, model="adapter").model == "adapter"


def test_the_job_refuses_text_datasets_and_unresolved_references() -> None:
    base = {"baseModel": {"uri": "dummy://llama"}, "training": {"method": "full"}}
    text = {**base, "dataset": {"uri": "dummy://text", "textField": "text"}, "dataAugmentation": {}}
    with pytest.raises(ValidationError, match="cannot augment a textField dataset"):
        TrainingRun.model_validate(text)
    referenced = {**base, "dataset": {"uri": "dummy://chat"}, "dataAugmentation": {"modelDeploymentRef": {"name": "m"}}}
    with pytest.raises(ValidationError, match="give augmentationServer"):
        TrainingRun.model_validate(referenced)
    server = {"url": "http://m.ns.svc:80/v1", "model": "m"}
    with pytest.raises(ValidationError, match="is resolved by the operator"):
        TrainingRun.model_validate({**referenced, "augmentationServer": server})
    resolved = {**referenced, "dataAugmentation": {}, "augmentationServer": server}
    assert TrainingRun.model_validate(resolved).augmentation_server is not None

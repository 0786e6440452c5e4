"""The judge scorer: its prompt, reading the grade, scaling, the reference's position, the bias figures."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from kubellm.contract.experiments import DatasetRow, ExperimentProgress, JudgeConfig, Scorer, judge_api_key_env
from kubellm.runtime.experiments.client import ClientSettings, EndpointClient
from kubellm.runtime.experiments.judge import (
    JUDGEMENTS_FILE,
    Judge,
    JudgementKey,
    JudgementLog,
    JudgementRecord,
    grade_value,
    judge_prompt,
    judge_report,
    judge_values,
    parse_grade,
    plan_judgements,
    reference_first,
    send_judgements,
)
from kubellm.runtime.experiments.report import judge_notes, judge_section
from kubellm.runtime.experiments.results import ExperimentResult
from kubellm.runtime.experiments.runner import RequestKey
from kubellm.runtime.experiments.scorers import Answers, ScorerError, check_scorers, combined_score, score_answers

RUBRIC = "Correct and to the point."
JUDGE = JudgeConfig(url="http://judge.test/v1", rubric=RUBRIC, scale=5)
SCORER = Scorer(name="quality", type="judge", judge=JUDGE)


# --- the prompt ---------------------------------------------------------------------------------


def test_the_prompt_holds_rubric_question_reference_answer_and_the_reply_format() -> None:
    prompt = judge_prompt(JUDGE, "What is 2 + 2?", "It is 4.", "4", reference_first=True)
    assert RUBRIC in prompt and "## Question\nWhat is 2 + 2?" in prompt
    assert "## Reference answer\n4" in prompt and "## Answer to grade\nIt is 4." in prompt
    assert "from 1 (worst) to 5 (best)" in prompt and prompt.endswith("Reply with one line: Grade: N")
    assert "not how long it is" in prompt  # the verbosity instruction
    assert prompt.index("## Reference answer") < prompt.index("## Answer to grade")
    last = judge_prompt(JUDGE, "What is 2 + 2?", "It is 4.", "4", reference_first=False)
    assert last.index("## Answer to grade") < last.index("## Reference answer")


def test_without_a_reference_the_prompt_shows_none() -> None:
    prompt = judge_prompt(JUDGE, "Write a haiku.", "Autumn moon", None, reference_first=True)
    assert "Reference" not in prompt and "reference" not in prompt
    assert "## Answer to grade\nAutumn moon" in prompt


# --- reading the grade and scaling it -----------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "grade"),
    [
        ("Grade: 4", 4),
        ("**Grade:** 5", 5),
        ("The answer is right but long.\ngrade = 3", 3),
        ("Grade: 2/5", 2),
        ("I first thought Grade: 2, but on reflection Grade: 4", 4),  # the last one counts
        (" 3 ", 3),  # a reply that is only the number
        ("Grade: 7", None),  # outside the scale
        ("Grade: 0", None),
        ("A fine answer.", None),
        ("The answer has 3 parts.", None),  # a number in prose is no grade
    ],
)
def test_parse_grade(reply: str, grade: int | None) -> None:
    assert parse_grade(reply, 5) == grade


def test_grades_scale_to_zero_one() -> None:
    assert [grade_value(g, 5) for g in (1, 2, 3, 4, 5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert grade_value(2, 2) == 1.0 and grade_value(1, 10) == 0.0
    assert math.isnan(grade_value(None, 5))


def test_the_judge_block_is_required_exactly_for_judge_scorers() -> None:
    with pytest.raises(ValidationError, match="judge is required for judge scorers"):
        Scorer(name="quality", type="judge")
    with pytest.raises(ValidationError, match="allowed only for them"):
        Scorer(name="exact", type="exact", judge=JUDGE)
    with pytest.raises(ValidationError, match="exactly one of modelDeploymentRef or url"):
        JudgeConfig(rubric=RUBRIC)
    with pytest.raises(ValidationError, match="exactly one of modelDeploymentRef or url"):
        JudgeConfig.model_validate({"rubric": RUBRIC, "url": "http://j/v1", "modelDeploymentRef": {"name": "j"}})
    assert judge_api_key_env("quality-2") == "KUBELLM_JUDGE_API_KEY_QUALITY_2"


def test_a_judge_without_a_url_fails_before_any_request() -> None:
    unresolved = JudgeConfig.model_validate({"rubric": RUBRIC, "modelDeploymentRef": {"name": "grader"}})
    with pytest.raises(ScorerError, match=r"scorer 'quality': judge.url is not set"):
        check_scorers([Scorer(name="quality", type="judge", judge=unresolved)])
    check_scorers([SCORER])


def test_scores_come_from_the_judgements_failed_ones_are_excluded_not_zero() -> None:
    keys = [RequestKey("a", 0, 0), RequestKey("a", 1, 0), RequestKey("a", 2, 0), RequestKey("a", 3, 0)]
    judged = {
        JudgementKey("quality", "a", 0, 0): _record("a", 0, grade=5),
        JudgementKey("quality", "a", 1, 0): _record("a", 1, grade=None, reply="no idea"),
    }
    values = judge_values(SCORER, keys, judged)
    assert values[0] == 1.0 and all(math.isnan(v) for v in values[1:])  # unparseable, and never asked
    answers = Answers(
        texts=["x"] * 4,
        references=[None] * 4,
        latencies=[0.1] * 4,
        failed=[False, False, False, True],
        judged={"quality": values},
    )
    column = score_answers(SCORER, answers)
    assert column[0] == 1.0 and math.isnan(column[1]) and math.isnan(column[2])
    assert column[3] == 0.0  # a failed request scores 0, as on every quality scorer
    exact = Scorer(name="exact", type="exact")
    score = combined_score({"quality": column, "exact": np.ones(4)}, [SCORER, exact])
    assert score[0] == 1.0 and math.isnan(score[1])  # no judgement: no weighted score either


# --- the reference's position -------------------------------------------------------------------


def _judge(scale: int = 5) -> Judge:
    client = EndpointClient(ClientSettings(base_url="http://judge.test/v1"))
    return Judge("quality", JUDGE.model_copy(update={"scale": scale}), client, "grader")


def test_the_reference_order_is_the_same_for_every_variant_and_about_half_each_way() -> None:
    rows = [DatasetRow(input=f"q{i}", expected=f"a{i}") for i in range(400)]
    answers = {RequestKey(v, r, s): f"{v} answer {r}" for v in ("a", "b", "c") for r in range(400) for s in (0, 1)}
    seeds = dict.fromkeys(answers, 0)
    planned = plan_judgements(_judge(), rows, answers, seeds)
    order: dict[tuple[int, int], set[bool | None]] = {}
    for item in planned:
        order.setdefault((item.key.row, item.key.sample), set()).add(item.reference_first)
        text = item.body["messages"][0]["content"]
        before = text.index("## Reference answer") < text.index("## Answer to grade")
        assert before is item.reference_first
    assert all(len(seen) == 1 for seen in order.values())  # one order per row and sample, whatever the variant
    first = sum(seen == {True} for seen in order.values())
    assert 0.45 < first / len(order) < 0.55
    assert [reference_first(r, 0) for r in range(20)] == [reference_first(r, 0) for r in range(20)]  # fixed seed


def test_rows_without_a_reference_have_no_order() -> None:
    planned = plan_judgements(
        _judge(), [DatasetRow(input="q")], {RequestKey("a", 0, 0): "x"}, {RequestKey("a", 0, 0): 7}
    )
    assert planned[0].reference_first is None
    body = planned[0].body
    assert (body["model"], body["temperature"], body["seed"], body["max_tokens"]) == ("grader", 0.0, 7, 64)


# --- asking: one retry for a reply without a grade, the log --------------------------------------


def _reply(text: str) -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": text}}]})


def _ask(tmp_path: Path, replies: list[str]) -> tuple[JudgementRecord, list[dict[str, object]]]:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return _reply(replies[min(len(seen), len(replies)) - 1])

    async def go() -> JudgementRecord:
        settings = ClientSettings(base_url="http://judge.test/v1")
        async with EndpointClient(settings, transport=httpx.MockTransport(handler)) as client:
            judge = Judge("quality", JUDGE, client, "grader")
            key = RequestKey("a", 0, 0)
            planned = plan_judgements(judge, [DatasetRow(input="q", expected="4")], {key: "4"}, {key: 0})
            log = JudgementLog(tmp_path / JUDGEMENTS_FILE)
            done = await send_judgements(planned, {"quality": judge}, 2, log, log.load())
            return done[planned[0].key]

    return asyncio.run(go()), seen


def test_a_reply_without_a_grade_is_asked_again_once(tmp_path: Path) -> None:
    record, seen = _ask(tmp_path, ["Looks right to me.", "Grade: 4"])
    assert record.grade == 4 and not record.failed
    assert len(seen) == 2
    messages = seen[1]["messages"]
    assert isinstance(messages, list) and len(messages) == 3
    assert messages[1] == {"role": "assistant", "content": "Looks right to me."}
    assert "Grade: N" in messages[2]["content"]


def test_two_replies_without_a_grade_are_a_failed_judgement_and_are_not_asked_again(tmp_path: Path) -> None:
    record, seen = _ask(tmp_path, ["Looks right to me."])
    assert record.failed and record.reply == "Looks right to me." and record.error is None
    assert len(seen) == 2
    _, again = _ask(tmp_path, ["Grade: 5"])  # a restarted run reads the log
    assert again == []
    assert len((tmp_path / JUDGEMENTS_FILE).read_text().splitlines()) == 1


def test_a_failed_request_is_asked_again_by_a_restarted_run(tmp_path: Path) -> None:
    log = JudgementLog(tmp_path / JUDGEMENTS_FILE)
    planned_key = JudgementKey("quality", "a", 0, 0)
    _, first = _ask(tmp_path, ["Grade: 5"])
    fingerprint = log.load()[planned_key].fingerprint
    log.append(_record("a", 0, grade=None, error="HTTP 500: boom", fingerprint=fingerprint))
    with (tmp_path / JUDGEMENTS_FILE).open("a") as handle:
        handle.write('{"scorer": "quality", "varia')  # a line cut short by a kill
    record, again = _ask(tmp_path, ["Grade: 3"])
    assert len(first) == 1 and len(again) == 1 and record.grade == 3


# --- the bias figures --------------------------------------------------------------------------


def _record(
    variant: str,
    row: int,
    *,
    grade: int | None,
    chars: int = 10,
    first: bool | None = None,
    reply: str | None = None,
    error: str | None = None,
    fingerprint: str = "f",
) -> JudgementRecord:
    return JudgementRecord(
        scorer="quality",
        variant=variant,
        row=row,
        sample=0,
        fingerprint=fingerprint,
        grade=grade,
        answer_chars=chars,
        reference_first=first,
        reply=reply,
        error=error,
    )


def test_the_report_shows_length_beside_grade_and_their_correlation() -> None:
    terse = [_record("terse", r, grade=2 + r % 2, chars=20 + r, first=r % 2 == 0) for r in range(10)]
    wordy = [_record("wordy", r, grade=4 + r % 2, chars=400 + 10 * r, first=r % 2 == 0) for r in range(10)]
    failed = [_record("wordy", 10, grade=None, reply="hmm"), _record("terse", 10, grade=None, error="HTTP 500")]
    report = judge_report(SCORER, ["terse", "wordy"], [*terse, *wordy, *failed])
    assert (report.judged, report.failed, report.scale) == (20, 2, 5)
    by_name = {v.variant: v for v in report.variants}
    assert by_name["terse"].mean_grade == 2.5 and by_name["terse"].mean_answer_chars == 24.5
    assert by_name["wordy"].mean_grade == 4.5 and by_name["wordy"].mean_answer_chars == 445.0
    assert report.length_grade_correlation is not None and report.length_grade_correlation > 0.8
    # even rows (reference first) have the lower grade of each pair
    assert report.mean_grade_reference_first == 3.0 and report.mean_grade_reference_last == 4.0
    assert report.position_p_value is not None and report.position_p_value < 0.05


def test_no_spread_no_correlation() -> None:
    same = [_record("a", r, grade=3, chars=10 + r) for r in range(5)]
    report = judge_report(SCORER, ["a"], same)
    assert report.length_grade_correlation is None
    assert report.mean_grade_reference_first is None and report.mean_grade_reference_last is None
    assert report.position_p_value is None
    assert judge_report(SCORER, ["a"], []).variants[0].mean_grade is None


def test_the_report_notes_a_strong_length_correlation_a_position_gap_and_failed_judgements() -> None:
    records = [_record("a", r, grade=1 + r // 4, chars=10 * (r + 1), first=r >= 10) for r in range(20)]
    report = judge_report(SCORER, ["a"], [*records, _record("a", 20, grade=None, reply="?")])
    progress = ExperimentProgress(completed=21, total=21, percent=100)
    result = ExperimentResult(progress=progress, judges=[report])
    notes = judge_notes(result)
    assert any("1 failed judgements" in note for note in notes)
    assert any("correlate strongly (Spearman 0.9" in note and "longer" in note for note in notes)
    assert any(
        "before the reference got 1.8 on average, after it 4.2" in note and "favours a position" in note
        for note in notes
    )
    section = "\n".join(judge_section(result))
    assert "## Judges" in section and "mean answer length (chars)" in section and "| a | - | 3 | 105 | 20 |" in section
    assert (
        judge_notes(ExperimentResult(progress=progress)) == []
        and judge_section(ExperimentResult(progress=progress)) == []
    )

"""Templates: the sandbox, strict variables, the prompting styles and answer extraction."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kubellm.contract.experiments import DatasetRow, PromptVariant
from kubellm.runtime.experiments.templates import TemplateError, compile_variant, compile_variants, extract_answer


def _variant(**fields: Any) -> PromptVariant:
    return PromptVariant.model_validate({"name": "v1", "template": "{{ input }}", **fields})


ROW = DatasetRow(input="What is 2 + 3?", expected="5", vars={"city": "Paris"})


def test_zero_shot_renders_input_and_row_variables() -> None:
    template = compile_variant(_variant(template="Q: {{ input }}\nCity: {{ vars.city }}\nA:\n"))
    prompt = template.render(ROW, 1)
    assert prompt.user == "Q: What is 2 + 3?\nCity: Paris\nA:"
    assert prompt.messages() == [{"role": "user", "content": prompt.user}]


def test_few_shot_renders_the_examples() -> None:
    variant = _variant(
        style="fewShot",
        examples=[{"input": "1 + 1?", "output": "2"}, {"input": "2 + 2?", "output": "4"}],
        template="{% for e in examples %}Q: {{ e.input }} A: {{ e.output }}\n{% endfor %}Q: {{ input }} A:",
    )
    assert compile_variant(variant).render(ROW, 1).user == "Q: 1 + 1? A: 2\nQ: 2 + 2? A: 4\nQ: What is 2 + 3? A:"


def test_system_message_goes_first_in_chat_and_completions() -> None:
    prompt = compile_variant(_variant(system="Be brief about {{ vars.city }}.")).render(ROW, 1)
    assert prompt.messages()[0] == {"role": "system", "content": "Be brief about Paris."}
    assert prompt.prompt() == "Be brief about Paris.\n\nWhat is 2 + 3?"


def test_the_expected_answer_is_not_visible_to_templates() -> None:
    with pytest.raises(TemplateError, match=r"^variant 'v1': template uses undefined variable 'expected'"):
        compile_variant(_variant(template="{{ input }} {{ expected }}"))


def test_missing_row_variable_names_variant_variable_and_row() -> None:
    template = compile_variant(_variant(template="{{ vars.country }}"))
    message = "variant 'v1': template uses undefined variable 'vars.country' (dataset row 7)"
    with pytest.raises(TemplateError, match=f"^{re.escape(message)}$"):
        template.render(ROW, 7)


def test_missing_example_field_is_named_too() -> None:
    variant = _variant(style="fewShot", examples=[{"input": "a", "output": "b"}], template="{{ examples[0].label }}")
    with pytest.raises(TemplateError, match=r"'examples\[0\]\.label'"):
        compile_variant(variant).render(ROW, 1)


def test_defaults_and_defined_tests_still_work() -> None:
    template = compile_variant(
        _variant(template="{{ vars.tone | default('plain') }}{% if vars.city is defined %}!{% endif %}")
    )
    assert template.render(ROW, 1).user == "plain!"


def test_syntax_errors_name_the_variant_and_line() -> None:
    with pytest.raises(TemplateError, match=r"^variant 'v1': system has a syntax error on line 2: "):
        compile_variant(_variant(system="ok\n{% if %}"))


def test_the_sandbox_blocks_python_internals() -> None:
    template = compile_variant(_variant(template="{{ input.__class__.__mro__ }}"))
    with pytest.raises(TemplateError, match=r"^variant 'v1': template failed on dataset row 1: .*unsafe"):
        template.render(ROW, 1)


def test_chain_of_thought_scores_the_last_answer_line_by_default() -> None:
    template = compile_variant(_variant(style="chainOfThought"))
    output = "The answer: maybe 4? Let me check.\n2 + 3 = 5.\nFinal answer: 5"
    assert template.answer(output) == "5"
    assert template.answer("**Final Answer:** Paris.") == "Paris"
    assert template.answer("no conclusion") is None


def test_extract_pattern_takes_the_first_group_or_the_match() -> None:
    assert compile_variant(_variant(extract=r"<b>(.*?)</b>")).answer("x <b>Paris</b> y") == "Paris"
    assert extract_answer("it is 42 or 43", re.compile(r"\d+")) == "43"
    assert compile_variant(_variant()).answer("  raw output ") == "  raw output "


def test_an_extract_pattern_that_finds_nothing_gives_no_answer() -> None:
    template = compile_variant(_variant(style="chainOfThought", extract=r"<b>(.*?)</b>"))
    assert template.answer("Paris") is None  # the variant's own pattern replaces the default
    assert template.answer("<b> </b>") is None  # a blank match is no answer either
    assert template.answer("<b>Paris</b>") == "Paris"


def test_examples_as_messages_become_earlier_turns() -> None:
    variant = _variant(
        style="fewShot",
        system="Answer briefly.",
        template="Q: {{ input }}",
        examples=[{"input": "1 + 1?", "output": "2"}, {"input": "2 + 2?", "output": "4"}],
        examplesAs="messages",
    )
    prompt = compile_variant(variant).render(ROW, 1)
    assert prompt.messages() == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Q: 1 + 1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "Q: 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "Q: What is 2 + 3?"},
    ]
    assert prompt.prompt() == "Answer briefly.\n\nQ: 1 + 1?\n2\n\nQ: 2 + 2?\n4\n\nQ: What is 2 + 3?"


def test_examples_stay_in_the_template_by_default() -> None:
    variant = _variant(style="fewShot", examples=[{"input": "1 + 1?", "output": "2"}])
    assert compile_variant(variant).render(ROW, 1).turns == ()


def test_examples_as_messages_needs_examples() -> None:
    with pytest.raises(ValueError, match="examplesAs: messages needs at least one entry in examples"):
        _variant(examplesAs="messages")


def test_invalid_extract_pattern_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match=r"^variant 'v1': extract is not a valid regular expression"):
        compile_variant(_variant(extract="(unclosed"))


def test_compile_variants_keeps_order() -> None:
    names = list(compile_variants([_variant(name="b"), _variant(name="a")]))
    assert names == ["b", "a"]

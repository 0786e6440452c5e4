"""Prompt templates: a variant's Jinja template rendered per dataset row, and answer extraction.

Templates run in Jinja's sandbox with strict undefined variables, so a template cannot reach
Python internals and a typo fails loudly instead of sending an empty string to the model. A
template sees ``input`` (the row's input), ``vars`` (the row's extra variables, as
``vars.<name>``) and ``examples`` (the variant's few-shot examples, each with ``input`` and
``output``); the row's expected answer is never visible. Every error names the variant and, for
undefined variables, the variable (``vars.city``) and the row. A variant with ``examplesAs:
messages`` sends its examples as earlier turns instead: the template rendered with each example's
input, answered by its output.

A chain-of-thought variant scores only its final answer: the variant's ``extract`` pattern, or by
default the text after the last answer marker (:func:`.answers.final_answer`). An output where
nothing is found has no answer: it scores as empty and is counted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from kubellm.contract.experiments import DatasetRow, PromptVariant
from kubellm.runtime.errors import ConfigError

from .answers import final_answer

__all__ = [
    "TEMPLATE_VARIABLES",
    "Extractor",
    "RenderedPrompt",
    "TemplateError",
    "VariantTemplate",
    "compile_variants",
    "extract_answer",
]

TEMPLATE_VARIABLES = ("examples", "input", "vars")
Extractor = Callable[[str], str | None]
"""The scored part of an output, or None when it has none."""


class TemplateError(ConfigError):
    """A variant's template cannot be compiled or rendered; the message names the variant."""


class _Namespace(dict[str, Any]):
    """A dict that knows its path in the template context, so errors can say ``vars.city``."""

    def __init__(self, path: str, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self._kubellm_path = path  # underscore: the sandbox keeps templates from reading it


class _NamedUndefined(jinja2.StrictUndefined):
    """Strict undefined whose error message is just the full name of the missing variable."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        name = str(self._undefined_name)
        owner = self._undefined_obj
        if isinstance(owner, _Namespace):
            return f"{owner._kubellm_path}.{name}"
        return name


@dataclass(frozen=True)
class RenderedPrompt:
    """One rendered request: an optional system message, earlier (user, assistant) turns, the user message."""

    system: str | None
    user: str
    turns: tuple[tuple[str, str], ...] = ()

    def messages(self) -> list[dict[str, str]]:
        """Chat API messages."""
        head = [] if self.system is None else [{"role": "system", "content": self.system}]
        for asked, answered in self.turns:
            head += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
        return [*head, {"role": "user", "content": self.user}]

    def prompt(self) -> str:
        """Completions API prompt: the system text, then each turn as a paragraph, then the user text."""
        head = [] if self.system is None else [self.system]
        return "\n\n".join([*head, *(f"{asked}\n{answered}" for asked, answered in self.turns), self.user])


def _environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=_NamedUndefined, autoescape=False, keep_trailing_newline=False)


@dataclass(frozen=True)
class VariantTemplate:
    """A variant's compiled templates and answer extraction rule."""

    name: str
    user: jinja2.Template
    system: jinja2.Template | None
    examples: tuple[Mapping[str, str], ...]
    extract: Extractor | None
    examples_as: Literal["template", "messages"] = "template"

    def render(self, row: DatasetRow, row_number: int) -> RenderedPrompt:
        """Render for one row (``row_number`` counts from 1, for messages)."""
        context = self._context(row.input, row)
        system = None if self.system is None else self._render("system", self.system, context, row_number)
        user = self._render("template", self.user, context, row_number)
        return RenderedPrompt(system=system, user=user, turns=self._turns(row, row_number))

    def _context(self, text: str, row: DatasetRow) -> dict[str, Any]:
        return {
            "input": text,
            "vars": _Namespace("vars", row.vars),
            "examples": [_Namespace(f"examples[{i}]", example) for i, example in enumerate(self.examples)],
        }

    def _turns(self, row: DatasetRow, row_number: int) -> tuple[tuple[str, str], ...]:
        """The examples as earlier exchanges, when the variant sends them as messages."""
        if self.examples_as != "messages":
            return ()
        return tuple(
            (self._render("template", self.user, self._context(e["input"], row), row_number), e["output"])
            for e in self.examples
        )

    def _render(self, field: str, template: jinja2.Template, context: Mapping[str, Any], row_number: int) -> str:
        try:
            return template.render(context).strip()
        except jinja2.UndefinedError as error:
            raise TemplateError(
                f"variant {self.name!r}: {field} uses undefined variable {error.message!r} (dataset row {row_number})"
            ) from None
        except (jinja2.TemplateError, TypeError, ValueError) as error:
            raise TemplateError(f"variant {self.name!r}: {field} failed on dataset row {row_number}: {error}") from None

    def answer(self, output: str) -> str | None:
        """The part of ``output`` that is scored; None when the extraction finds nothing in it."""
        return output if self.extract is None else self.extract(output)


def extract_answer(output: str, pattern: re.Pattern[str]) -> str | None:
    """The first group (or whole match) of the last match of ``pattern``; None when none matches or it is blank."""
    last = None
    for last in pattern.finditer(output):  # noqa: B007 - keep the last match
        pass
    if last is None:
        return None
    found = (last.group(1) if pattern.groups else last.group(0)) or ""
    return found.strip() or None


def _compile(env: SandboxedEnvironment, variant: str, field: str, source: str) -> jinja2.Template:
    try:
        parsed = env.parse(source)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(
            f"variant {variant!r}: {field} has a syntax error on line {error.lineno}: {error.message}"
        ) from None
    unknown = sorted(meta.find_undeclared_variables(parsed) - set(TEMPLATE_VARIABLES))
    if unknown:
        raise TemplateError(
            f"variant {variant!r}: {field} uses undefined variable {unknown[0]!r} "
            f"(templates see {', '.join(TEMPLATE_VARIABLES)}; row variables are vars.<name>)"
        )
    return env.from_string(source)


def _extraction(variant: PromptVariant) -> Extractor | None:
    if variant.extract is None:
        return final_answer if variant.style == "chainOfThought" else None
    try:
        pattern = re.compile(variant.extract)
    except re.error as error:
        raise TemplateError(f"variant {variant.name!r}: extract is not a valid regular expression: {error}") from None
    return lambda output: extract_answer(output, pattern)


def compile_variant(variant: PromptVariant, env: SandboxedEnvironment | None = None) -> VariantTemplate:
    """Compile one variant, checking its template's syntax and variable names up front."""
    env = env or _environment()
    return VariantTemplate(
        name=variant.name,
        user=_compile(env, variant.name, "template", variant.template),
        system=None if variant.system is None else _compile(env, variant.name, "system", variant.system),
        examples=tuple({"input": e.input, "output": e.output} for e in variant.examples),
        extract=_extraction(variant),
        examples_as=variant.examples_as,
    )


def compile_variants(variants: Sequence[PromptVariant]) -> dict[str, VariantTemplate]:
    """Compile every variant, in order, keyed by name."""
    env = _environment()
    return {variant.name: compile_variant(variant, env) for variant in variants}

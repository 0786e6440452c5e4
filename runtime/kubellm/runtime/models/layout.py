"""The folder a fine-tuning run writes and a model server reads.

Training writes (see :mod:`kubellm.runtime.training.outputs`)::

    <output>/
      config.json, model.safetensors, generation_config.json    full fine-tuning: the model
      adapter_config.json, adapter_model.safetensors            LoRA/QLoRA: the adapter
      tokenizer.json, tokenizer_config.json, chat_template.jinja the tokenizer
      kubellm-output.json   this manifest: kind (model/adapter), base model URI, merged folder
      README.md             model card
      metrics.json          final figures (losses, steps, throughput, trainable parameters)
      data_quality.json     the data-quality report
      status.json           live progress, then the final state (what the operator reads)
      search.json, search.db   hyper-parameter search report and optuna storage (when searching)
      merged/               optional: base + adapter merged into a plain model
      checkpoints/checkpoint-<step>/   Trainer checkpoints for resuming

So ``AutoModelForCausalLM.from_pretrained(<output>)`` loads a full fine-tune directly,
``PeftModel.from_pretrained(base, <output>)`` an adapter, and
:func:`kubellm.runtime.models.loading.load_model` either (it reads the manifest to find an
adapter's base model, including ``dummy://`` bases).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from kubellm.contract.schema import ReportModel
from kubellm.runtime.models.sources import ModelSourceError

__all__ = [
    "CHECKPOINTS_DIR",
    "MERGED_DIR",
    "OUTPUT_MANIFEST",
    "OutputManifest",
    "read_manifest",
    "write_manifest",
]

OUTPUT_MANIFEST = "kubellm-output.json"
MERGED_DIR = "merged"
CHECKPOINTS_DIR = "checkpoints"


class OutputManifest(ReportModel):
    """What a training output folder holds."""

    kind: Literal["model", "adapter"] = Field(description="A full model, or a LoRA adapter on base_model.")
    method: Literal["full", "lora", "qlora"] = Field(description="How it was trained.")
    base_model: str = Field(description="URI of the model training started from.")
    base_revision: str | None = Field(default=None, description="Revision of an hf:// base model.")
    merged: str | None = Field(default=None, description="Folder (relative) holding base + adapter merged.")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def write_manifest(folder: Path, manifest: OutputManifest) -> Path:
    """Write the manifest into an output folder."""
    path = folder / OUTPUT_MANIFEST
    path.write_text(manifest.model_dump_json(by_alias=True, exclude_none=True, indent=2) + "\n")
    return path


def read_manifest(folder: Path) -> OutputManifest | None:
    """The manifest of an output folder, or None when the folder has none."""
    path = folder / OUTPUT_MANIFEST
    if not path.is_file():
        return None
    try:
        return OutputManifest.model_validate_json(path.read_text())
    except ValidationError as error:
        raise ModelSourceError(f"{path}: invalid output manifest ({error.error_count()} errors)") from None

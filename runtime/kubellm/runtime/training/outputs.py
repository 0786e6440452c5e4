"""What a finished run leaves in the output folder (layout: :mod:`kubellm.runtime.models.layout`).

The model (or adapter) and tokenizer are written at the top of the folder so a server loads it
with ``from_pretrained(<output>)``; for LoRA an optional ``merged/`` folder holds base + adapter
as a plain model. ``metrics.json`` has the final figures, ``README.md`` is a short model card,
and ``kubellm-output.json`` says what kind of output this is and which base it needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft import PeftModel

from kubellm.contract.training import LoraConfig, SearchReport, TrainingRun
from kubellm.runtime.models.layout import MERGED_DIR, OutputManifest, write_manifest
from kubellm.runtime.models.loading import load_model
from kubellm.runtime.models.sources import HubSource, parse_source
from kubellm.runtime.training.methods import PreparedModel
from kubellm.runtime.training.quality import DataQualityDetails
from kubellm.runtime.training.trainer import RunResult

__all__ = ["METRICS_FILE", "MODEL_CARD", "QUALITY_FILE", "FinalFigures", "save_outputs", "write_json"]

METRICS_FILE = "metrics.json"
QUALITY_FILE = "data_quality.json"
MODEL_CARD = "README.md"


@dataclass
class FinalFigures:
    """What the run measured, for metrics.json and the model card."""

    result: RunResult
    prepared: PreparedModel
    train_examples: int
    eval_examples: int
    quality: DataQualityDetails
    search: SearchReport | None = None
    samples_per_step: int = 1

    def as_dict(self) -> dict[str, Any]:
        """The figures with camelCase names."""
        result = self.result
        samples = result.steps_this_process * self.samples_per_step
        return {
            "method": self.prepared.method,
            "steps": result.global_step,
            "totalSteps": result.total_steps,
            "trainLoss": result.train_loss,
            "evalLoss": result.eval_loss,
            "initialEvalLoss": result.initial_eval_loss,
            "trainSeconds": round(result.train_seconds, 3),
            "samplesPerSecond": round(samples / result.train_seconds, 3) if result.train_seconds > 0 else None,
            "resumedFromStep": result.resumed_from_step,
            "trainableParameters": self.prepared.trainable_parameters,
            "totalParameters": self.prepared.total_parameters,
            "trainableFraction": round(self.prepared.trainable_fraction, 6),
            "trainExamples": self.train_examples,
            "evalExamples": self.eval_examples,
            "searchBestValue": self.search.best_value if self.search else None,
        }


def write_json(path: Path, payload: Any) -> None:
    """Pretty JSON with a trailing newline."""
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def save_outputs(figures: FinalFigures, job: TrainingRun, output_dir: Path, *, merge: bool) -> OutputManifest:
    """Write the model or adapter, tokenizer, optional merged model, metrics, card and manifest."""
    model = figures.result.model
    is_adapter = isinstance(model, PeftModel)
    # The vocabulary never changes here; saying so spares peft a Hub lookup of the base model.
    model.save_pretrained(str(output_dir), **({"save_embedding_layers": False} if is_adapter else {}))
    figures.prepared.tokenizer.save_pretrained(str(output_dir))
    manifest = OutputManifest(
        kind="adapter" if is_adapter else "model",
        method=job.training.method,
        base_model=job.base_model.uri,
        base_revision=job.base_model.revision,
    )
    write_manifest(output_dir, manifest)  # first: merging loads the adapter through it
    if is_adapter and merge:
        manifest = manifest.model_copy(update={"merged": _save_merged(output_dir, figures.prepared.tokenizer)})
        write_manifest(output_dir, manifest)
    write_json(output_dir / METRICS_FILE, figures.as_dict())
    (output_dir / MODEL_CARD).write_text(model_card(figures, job, manifest))
    return manifest


def _save_merged(output_dir: Path, tokenizer: Any) -> str:
    """Base in full precision + the saved adapter, merged (also right for QLoRA's 4-bit base)."""
    adapted = load_model(str(output_dir.resolve()), dtype="auto")
    merged = adapted.model.merge_and_unload()
    merged.save_pretrained(str(output_dir / MERGED_DIR))
    tokenizer.save_pretrained(str(output_dir / MERGED_DIR))
    return MERGED_DIR


def _front_matter(job: TrainingRun, manifest: OutputManifest) -> str:
    source = parse_source(job.base_model.uri, job.base_model.revision)
    lines = ["---", f"library_name: {'peft' if manifest.kind == 'adapter' else 'transformers'}"]
    if isinstance(source, HubSource):
        lines.append(f"base_model: {source.repo_id}")
    lines += ["tags:", "- kubellm", f"- {job.training.method}", "---"]
    return "\n".join(lines)


def _loading_snippet(manifest: OutputManifest) -> str:
    if manifest.kind == "model":
        return "model = AutoModelForCausalLM.from_pretrained(output)"
    return "base = AutoModelForCausalLM.from_pretrained(base_model)\nmodel = PeftModel.from_pretrained(base, output)"


def _lora_rank(job: TrainingRun) -> int:
    return (job.training.lora or LoraConfig()).rank  # no lora block: the defaults, as the trainer used


def model_card(figures: FinalFigures, job: TrainingRun, manifest: OutputManifest) -> str:
    """A short model card: provenance, data, figures, how to load."""
    numbers = figures.as_dict()
    rows = [
        ("Base model", f"`{job.base_model.uri}`"),
        ("Method", job.training.method + (f" (rank {_lora_rank(job)})" if job.training.method != "full" else "")),
        ("Trainable parameters", f"{numbers['trainableParameters']:,} of {numbers['totalParameters']:,}"),
        ("Training rows", f"{figures.train_examples} (+{figures.eval_examples} held out)"),
        ("Steps", str(numbers["steps"])),
        ("Eval loss before / after", f"{_fmt(numbers['initialEvalLoss'])} / {_fmt(numbers['evalLoss'])}"),
        ("Data quality", f"{figures.quality.rows} rows read, {figures.quality.kept} kept"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (
        f"{_front_matter(job, manifest)}\n\n# Fine-tuned {manifest.kind}\n\n"
        f"Trained by `kubellm train` from `{job.base_model.uri}` on `{job.dataset.uri}`.\n\n"
        f"| | |\n|---|---|\n{table}\n\n## Loading\n\n```python\n{_loading_snippet(manifest)}\n```\n\n"
        "Or `kubellm.runtime.models.loading.load_model(output)`, which also rebuilds `dummy://` bases.\n"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

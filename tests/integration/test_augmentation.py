"""Data augmentation end to end: ``kubellm train`` generating rows in-process, and the real SmolLM2 paraphrasing.

The random-weight model writes noise, which is what the checks are for: sampled near-greedily
(temperature 1e-4), it gives much the same few characters whatever it is asked, so a row's second
answer is a duplicate of its first, and so are the new rows of different rows that share a
response; a noise prompt with the two-letter response is shorter than ``minChars`` (it fails the
checks), one with a long response passes. SmolLM2-135M is a real instruct model, small enough for
CPU: its rows must be real text, checked like the dataset's.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubellm.contract.training import TrainingRun
from kubellm.runtime.models.loading import load_tokenizer
from kubellm.runtime.training.augmentation import AUGMENTATION_FILE, normalise
from kubellm.runtime.training.pipeline import prepare_data
from kubellm.runtime.training.reporting import Reporter
from tests.harness.smollm2 import ConvertedModel

pytestmark = pytest.mark.integration

MODEL = "dummy://llama?hidden_size=48&intermediate_size=96&num_attention_heads=4&seed=1"
KUBELLM = Path(sys.executable).parent / "kubellm"


def _rows() -> list[dict[str, str]]:
    rows = []
    for number in range(24):
        long = f" Item {number} is a small wooden box with a lid."
        rows.append(
            {"prompt": f"Tell me something about item number {number}.", "response": long if number % 2 else " ok"}
        )
    return rows


def _train(config: Path, output: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "KUBELLM_TERMINATION_LOG": "/nonexistent"}
    command = [str(KUBELLM), "train", "--config", str(config), "--output", str(output)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)


def test_kubellm_train_augments_in_process_and_drops_duplicates_and_failing_rows(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _rows()))
    spec = {
        "baseModel": {"uri": MODEL},
        "dataset": {"uri": f"file://{data}", "validationPercent": 25},
        "dataQuality": {"minChars": 30},
        "training": {"method": "full", "maxSteps": 2, "batchSize": 8, "maxSeqLength": 64},
        "dataAugmentation": {"rowsPerExample": 2, "temperature": "1e-4", "maxTokens": 4, "seed": 5},
    }
    config, output = tmp_path / "job.json", tmp_path / "out"
    config.write_text(json.dumps(spec))
    started = time.monotonic()
    run = _train(config, output)
    assert run.returncode == 0, run.stderr
    quality = json.loads((output / "data_quality.json").read_text())
    counts = quality["augmentation"]
    print(f"\n[augmentation] {counts} in {time.monotonic() - started:.1f}s (whole kubellm train)")
    assert (quality["rows"], quality["kept"]) == (24, 24)
    assert counts["model"] == MODEL
    assert counts["requested"] == 36  # 18 training rows x 2; the 6 validation rows are never seeds
    assert counts["requested"] == counts["generated"] + counts["invalid"] + counts["failed"]
    assert counts["generated"] == counts["kept"] + counts["duplicates"] + counts["failedChecks"]
    assert counts["failed"] == 0
    assert counts["duplicates"] >= 1 and counts["failedChecks"] >= 1 and counts["kept"] >= 1
    metrics = json.loads((output / "metrics.json").read_text())
    assert (metrics["trainExamples"], metrics["evalExamples"]) == (18 + counts["kept"], 6)
    status = json.loads((output / "status.json").read_text())
    assert status["dataQuality"]["augmentation"] == counts
    log = (output / AUGMENTATION_FILE).read_text().splitlines()
    assert len(log) == 1 + 36
    assert '"event": "augmentation_progress"' in run.stdout

    again = _train(config, output)  # a restarted pod: the logged answers are reused, nothing is asked again
    assert again.returncode == 0, again.stderr
    assert '"event": "augmentation_progress"' not in again.stdout
    assert json.loads((output / "data_quality.json").read_text())["augmentation"] == counts


def test_kubellm_run_augments_through_a_model_deployment(tmp_path: Path) -> None:
    """The FineTuneJob comes first in the file: the ModelDeployment still starts first, and its URL reaches the pod."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _rows()))
    api_version = "kubellm.io/v1alpha1"
    job = {
        "apiVersion": api_version,
        "kind": "FineTuneJob",
        "metadata": {"name": "augmented"},
        "spec": {
            "baseModel": {"uri": MODEL},
            "dataset": {"uri": f"file://{data}", "validationPercent": 25},
            "training": {"method": "full", "maxSteps": 2, "batchSize": 8, "maxSeqLength": 64},
            "dataAugmentation": {"modelDeploymentRef": {"name": "writer"}, "temperature": "0", "maxTokens": 8},
            "output": {"pvc": {"claimName": "models", "path": "augmented"}},
        },
    }
    server = {
        "apiVersion": api_version,
        "kind": "ModelDeployment",
        "metadata": {"name": "writer"},
        "spec": {"model": {"uri": MODEL}, "apiKeySecretRef": {"name": "writer-key", "key": "key"}},
    }
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "writer-key"}, "stringData": {"key": "sk-1"}}
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"}}
    manifests = tmp_path / "manifests.yaml"
    manifests.write_text(yaml.safe_dump_all([claim, secret, job, server]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [str(KUBELLM), "run", "-f", str(manifests), "--workdir", str(tmp_path / "work")]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.index("modeldeployment.kubellm.io/writer created") < run.stdout.index(
        "finetunejob.kubellm.io/augmented created"
    )
    line = next(line for line in run.stdout.splitlines() if "data augmentation:" in line)
    print(f"\n{line}")
    assert re.search(r"data augmentation: 18 rows asked of http://127\.0\.0\.1:\d+/v1 \(writer\), \d+ kept", line)
    assert "0 failed requests" in line  # the server took the API key from its ModelDeployment's Secret
    quality = json.loads((tmp_path / "work" / "pvc" / "models" / "augmented" / "data_quality.json").read_text())
    assert quality["augmentation"]["requested"] == 18 and quality["augmentation"]["failed"] == 0


SMALL_TALK = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Name three primary colours.", "Red, yellow and blue."),
    ("How many days are there in a week?", "There are seven days in a week."),
    ("Give me a synonym for happy.", "Joyful."),
    ("Describe the colour of the sky on a clear day.", "On a clear day the sky is blue."),
    ("Suggest a name for a black cat.", "Shadow."),
]


def _decoded(tokenizer: Any, examples: list[Any]) -> list[str]:
    return [str(tokenizer.decode(example.input_ids, skip_special_tokens=True)) for example in examples]


def test_smollm2_paraphrases_rows_in_process_into_real_text(
    smollm2: ConvertedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in SMALL_TALK))
    job = TrainingRun.model_validate(
        {
            "baseModel": {"uri": f"file://{smollm2.folder}"},
            "dataset": {"uri": f"file://{data}", "validationPercent": 0},
            "training": {"method": "full", "maxSeqLength": 128},
            "dataAugmentation": {"mode": "paraphrase", "temperature": "0", "maxTokens": 32},
        }
    )
    tokenizer = load_tokenizer(job.base_model)
    started = time.monotonic()
    prepared = prepare_data(job, tokenizer, tmp_path, Reporter(tmp_path, stream=io.StringIO()))
    seconds = time.monotonic() - started
    counts = prepared.quality.augmentation
    assert counts is not None
    answers = [json.loads(line) for line in (tmp_path / AUGMENTATION_FILE).read_text().splitlines()[1:]]
    print(f"\n[smollm2] {counts.model_dump()} in {seconds:.1f}s")
    for answer in answers:
        print(f"  {answer['seed']}: {answer['text']!r}")
    assert counts.requested == len(answers) == 6
    assert counts.failed == 0 and counts.generated + counts.invalid == 6
    assert counts.generated == counts.kept + counts.duplicates + counts.failed_checks
    assert counts.kept >= 1
    new = _decoded(tokenizer, prepared.train[len(SMALL_TALK) :])
    assert len(new) == counts.kept
    originals = {normalise(p) for p, _ in SMALL_TALK}
    for text in new:
        response = next(r for _, r in SMALL_TALK if text.endswith(r))  # a paraphrase keeps the row's response
        prompt = text[: -len(response)]
        words = re.findall(r"[A-Za-z]{2,}", prompt)
        assert len(words) >= 3 and "\ufffd" not in text, text  # words, not bytes or noise
        assert normalise(prompt) not in originals, text  # a new wording, not a copy

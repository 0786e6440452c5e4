"""Fine-tuning end to end on tiny dummy models: loss drops, outputs reload, killed runs resume, search resumes.

Real training with transformers' Trainer on CPU, one thread, models of ~100k parameters, so
the whole module runs in about a minute on two shared cores. Nothing touches the network.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from huggingface_hub import constants
from peft import PeftModel
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from kubellm.contract.training import TrainingRun
from kubellm.runtime.models.loading import load_model, load_tokenizer
from kubellm.runtime.training.errors import InterruptedRunError
from kubellm.runtime.training.methods import load_for_training, prepare_model
from kubellm.runtime.training.pipeline import TrainSummary, prepare_data, run_job
from kubellm.runtime.training.reporting import Reporter
from kubellm.runtime.training.trainer import RunPlan, run_training

pytestmark = pytest.mark.integration

MODEL = "dummy://llama?hidden_size=48&intermediate_size=96&num_attention_heads=4&seed=1"
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WORDS = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree", "river", "stone", "apple", "bread"]
RUNNER = (
    "import argparse, sys\n"
    "from kubellm.runtime.training import command\n"
    "parser = argparse.ArgumentParser()\n"
    "command.add_arguments(parser)\n"
    "sys.exit(command.run(parser.parse_args()))\n"
)


@pytest.fixture(autouse=True)
def _offline_and_single_threaded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _learnable_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    """Two patterns a small model picks up fast: copying words, and counting on from a number."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        if rng.random() < 0.5:
            words = " ".join(rng.choice(WORDS) for _ in range(4))
            rows.append({"prompt": f"Repeat: {words}\nAnswer:", "response": f" {words}"})
        else:
            start = rng.randint(0, 80)
            rows.append({"prompt": f"Count on from {start}:", "response": f" {start + 1} {start + 2} {start + 3}"})
    return rows


def _dataset(tmp_path: Path, count: int = 240) -> str:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in _learnable_rows(count)))
    return f"file://{path}"


def _spec(dataset: str, training: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "baseModel": {"uri": MODEL},
        "dataset": {"uri": dataset, "validationPercent": 15},
        "dataQuality": {"maxDroppedPercent": 30},
        "training": {"batchSize": 8, "maxSeqLength": 48, "checkpointEverySteps": 20, **training},
        **extra,
    }


def _train(spec: dict[str, Any], output: Path, *, merge: bool = False) -> TrainSummary:
    return run_job(TrainingRun.model_validate(spec), output, Reporter(output, stream=io.StringIO()), merge=merge)


def _generate(model: Any, tokenizer: Any, prompt: str) -> str:
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert ids.shape[1] > inputs["input_ids"].shape[1]
    return str(tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :]))


@pytest.mark.parametrize(
    ("method", "training", "least_drop"),
    [
        ("full", {"method": "full", "learningRate": "3e-3"}, 1.0),
        ("lora", {"method": "lora", "learningRate": "1e-2", "lora": {"rank": 8, "targetModules": ALL_LINEAR}}, 0.3),
    ],
)
def test_fine_tuning_lowers_eval_loss_and_the_output_reloads(
    tmp_path: Path, method: str, training: dict[str, Any], least_drop: float
) -> None:
    output = tmp_path / "out"
    summary = _train(_spec(_dataset(tmp_path), {**training, "maxSteps": 40}), output, merge=method == "lora")
    before, after = summary.figures["initialEvalLoss"], summary.figures["evalLoss"]
    print(f"\n[{method}] eval loss {before:.3f} -> {after:.3f}, trainable {summary.figures['trainableFraction']:.2%}")
    assert before - after > least_drop
    assert summary.manifest is not None
    assert summary.manifest.kind == ("adapter" if method == "lora" else "model")
    for name in ("README.md", "metrics.json", "data_quality.json", "kubellm-output.json", "tokenizer.json"):
        assert (output / name).is_file(), name

    reloaded = load_model(str(output), dtype=torch.float32)
    assert isinstance(reloaded.model, PeftModel) == (method == "lora")
    answer = _generate(reloaded.model, reloaded.tokenizer, "Count on from 7:")
    print(f"[{method}] generates {answer!r}")
    if method == "lora":
        merged = load_model(str(output / "merged"), dtype=torch.float32)
        prompt = reloaded.tokenizer("Repeat: red cat sun tree\nAnswer:", return_tensors="pt")
        with torch.no_grad():
            assert torch.allclose(reloaded.model(**prompt).logits, merged.model(**prompt).logits, atol=1e-4)


def _start(config: Path, output: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "KUBELLM_TERMINATION_LOG": "/nonexistent"}
    command = [sys.executable, "-c", RUNNER, "--config", str(config), "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _complete_checkpoints(output: Path) -> list[int]:
    folder = output / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()
    )


def _wait_for_checkpoint_after(process: subprocess.Popen[str], output: Path, step: int) -> int:
    """Poll until a complete checkpoint newer than ``step`` exists (the process must still run)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        newer = [s for s in _complete_checkpoints(output) if s > step]
        if newer:
            return newer[-1]
        assert process.poll() is None, f"training ended before a checkpoint: {process.communicate()}"
        time.sleep(0.02)
    raise AssertionError("no checkpoint within 90 s")


def test_a_killed_run_resumes_and_ends_at_the_same_step_count(tmp_path: Path) -> None:
    training = {"method": "full", "learningRate": "1e-3", "epochs": 4, "checkpointEverySteps": 10}
    spec = _spec(_dataset(tmp_path, 320), training)
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(spec))
    output = tmp_path / "out"

    first = _start(config, output)  # preempted without warning: SIGKILL after its first checkpoint
    _wait_for_checkpoint_after(first, output, 0)
    first.kill()
    first.communicate()
    planned = json.loads((output / "status.json").read_text())["progress"]["totalSteps"]
    resumable = _complete_checkpoints(output)[-1]

    second = _start(config, output)
    out, err = second.communicate(timeout=180)
    assert second.returncode == 0, err
    metrics = json.loads((output / "metrics.json").read_text())
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    print(f"\n[resume] planned {planned} steps, killed after checkpoint {resumable}, finished at {metrics['steps']}")
    assert 0 < metrics["resumedFromStep"] == resumable < planned, metrics
    assert metrics["steps"] == metrics["totalSteps"] == planned, metrics
    assert [event["event"] for event in events].count("completed") == 1
    assert json.loads((output / "status.json").read_text())["phase"] == "Succeeded"
    assert err.count("\n") == 1 and "eval loss" in err, err


class _SigtermAt(TrainerCallback):
    """Plays the kubelet evicting the pod: SIGTERM to this very process at a given step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if state.global_step == self.step:
            signal.raise_signal(signal.SIGTERM)


def test_sigterm_saves_a_checkpoint_and_a_new_run_continues_from_it(tmp_path: Path) -> None:
    spec = _spec(
        _dataset(tmp_path), {"method": "full", "learningRate": "1e-3", "maxSteps": 30, "checkpointEverySteps": 20}
    )
    job, output = TrainingRun.model_validate(spec), tmp_path / "out"
    reporter = Reporter(output, stream=io.StringIO())
    output.mkdir()
    data = prepare_data(job, load_tokenizer(job.base_model), output, reporter)
    prepared = prepare_model(load_for_training(job.base_model, job.training), job.training)
    plan = RunPlan(job.training, output / "checkpoints", callbacks=[_SigtermAt(7)])
    with pytest.raises(InterruptedRunError, match="stopped by SIGTERM at step 7"):
        run_training(prepared, data.train, data.evaluation, plan)
    assert _complete_checkpoints(output) == [7]  # saved on the way out, before the periodic one at 20
    summary = run_job(job, output, reporter)
    assert (summary.figures["resumedFromStep"], summary.figures["steps"]) == (7, 30)


def test_a_search_runs_real_trials_records_the_best_and_resumes(tmp_path: Path) -> None:
    search = {
        "trials": 3,
        "trialMaxSteps": 8,
        "parameters": [
            {"name": "learningRate", "type": "logUniform", "low": "1e-4", "high": "3e-2"},
            {"name": "loraRank", "type": "categorical", "choices": ["2", "8"]},
        ],
    }
    training = {"method": "lora", "lora": {"rank": 4}, "maxSteps": 12}
    spec = _spec(_dataset(tmp_path, 160), training, search=search)
    output = tmp_path / "out"
    summary = _train(spec, output)
    assert summary.search is not None
    report = json.loads((output / "search.json").read_text())
    assert len(report["trials"]) == 3 and report["trialsCompleted"] == 3
    assert {trial["state"] for trial in report["trials"]} <= {"complete", "pruned"}
    best = min(t["value"] for t in report["trials"] if t["state"] == "complete")
    assert report["bestValue"] == best
    best_params = {p["name"]: p["value"] for p in report["bestParams"]}
    adapter = json.loads((output / "adapter_config.json").read_text())
    assert adapter["r"] == int(best_params["loraRank"])  # the final model trained with the best settings
    print(f"\n[search] best trial {report['bestTrial']}: {best_params} -> eval loss {best:.3f}")

    again = _train(spec, output)  # a restarted pod: the study and the final checkpoint are reused
    assert again.search is not None
    assert len(again.search.trials) == 3
    assert again.figures["resumedFromStep"] == again.figures["steps"] == 12


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    bad_data = tmp_path / "bad.jsonl"
    bad_data.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "c" "response": "d"}\n')
    unknown_model = {**_spec("dummy://instructions", {"method": "full"}), "baseModel": {"uri": "dummy://rwkv9"}}
    cases = {  # each a real process: what a pod's log and termination show
        "data": (_spec(f"file://{bad_data}", {"method": "full"}), 2, "bad.jsonl:3: invalid JSON"),
        "model": (unknown_model, 2, "unknown architecture 'rwkv9'"),
    }
    processes = {}
    for name, (spec, _, _) in cases.items():
        config = tmp_path / f"{name}.json"
        config.write_text(json.dumps(spec))
        processes[name] = _start(config, tmp_path / name)
    for name, process in processes.items():
        _, err = process.communicate(timeout=120)
        _, code, message = cases[name]
        assert process.returncode == code, err
        assert err.count("\n") == 1 and err.startswith("kubellm train: ") and message in err, err

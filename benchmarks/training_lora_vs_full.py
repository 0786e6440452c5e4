"""Benchmark (not a test): LoRA against full fine-tuning on the same dummy model, data and machine.

Prints, for each method: trainable parameters, saved size (adapter vs whole model), median
optimizer-step time and peak memory, then the LoRA/full ratios next to the targets of
``shared/design/goals.md`` (<= 0.5% trainable, step time <= 0.9x, peak memory <= 0.6x).

Each method runs in its own process so that peak resident memory (``ru_maxrss``) is its own.
"Training memory" is the peak above the footprint after imports (Python, torch, transformers),
i.e. what the model, gradients, optimizer state and activations take; the whole-process peak is
shown too. Both runs use the real training code (:mod:`kubellm.runtime.training`).

Run it with::

    .venv/bin/python benchmarks/training_lora_vs_full.py            # about a minute on 2 cores
    .venv/bin/python benchmarks/training_lora_vs_full.py --rounds 3 --threads 2   # a busy machine
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = (
    "dummy://llama?hidden_size=768&intermediate_size=2048&num_hidden_layers=4"
    "&num_attention_heads=12&vocab_size=2048&max_position_embeddings=256&seed=0"
)
BATCH_SIZE = 4
DATASET = "dummy://instructions?rows=512&seed=0"
WARMUP_STEPS = 3


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def _job(method: str, steps: int) -> Any:
    from kubellm.runtime.training.job import TrainJob  # noqa: PLC0415

    training: dict[str, Any] = {"method": method, "maxSteps": steps, "batchSize": BATCH_SIZE, "maxSeqLength": 128}
    if method == "lora":
        training["lora"] = {"rank": 8, "alpha": 16}
    return TrainJob.model_validate(
        {
            "baseModel": {"uri": MODEL},
            "dataset": {"uri": DATASET, "validationPercent": 0},
            "dataQuality": {"maxDroppedPercent": 100},
            "training": training,
        }
    )


def measure(method: str, steps: int, threads: int) -> dict[str, Any]:
    """Train ``steps`` steps with one method in this process and return its figures."""
    import torch  # noqa: PLC0415
    from transformers import TrainerCallback  # noqa: PLC0415

    from kubellm.runtime.models.loading import load_tokenizer  # noqa: PLC0415
    from kubellm.runtime.training.methods import load_for_training, prepare_model  # noqa: PLC0415
    from kubellm.runtime.training.pipeline import prepare_data  # noqa: PLC0415
    from kubellm.runtime.training.reporting import Reporter  # noqa: PLC0415
    from kubellm.runtime.training.trainer import RunPlan, run_training  # noqa: PLC0415

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.durations: list[float] = []
            self._started = 0.0

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self._started = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.durations.append(time.perf_counter() - self._started)

    torch.set_num_threads(threads)
    idle = _peak_rss_bytes()
    job = _job(method, steps)
    with tempfile.TemporaryDirectory(prefix=f"kubellm-bench-{method}-") as scratch:
        output = Path(scratch)
        data = prepare_data(job, load_tokenizer(job.base_model), output, Reporter(output, stream=io.StringIO()))
        prepared = prepare_model(load_for_training(job.base_model, job.training), job.training)
        timer = StepTimer()
        plan = RunPlan(job.training, output / "run", checkpoints=False, measure_initial=False, callbacks=[timer])
        result = run_training(prepared, data.train, [], plan)
        peak = _peak_rss_bytes()
        result.model.save_pretrained(str(output / "saved"))
        saved = _folder_bytes(output / "saved")
    return {
        "method": method,
        "trainable": prepared.trainable_parameters,
        "total": prepared.total_parameters,
        "savedBytes": saved,
        "stepSeconds": statistics.median(timer.durations[WARMUP_STEPS:]),
        "peakBytes": peak,
        "trainingBytes": peak - idle,
        "steps": result.global_step,
    }


def _run_child(method: str, steps: int, threads: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--method", method, "--steps", str(steps), "--threads", str(threads)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise SystemExit(f"{method} run failed:\n{finished.stderr[-2000:]}")
    return dict(json.loads(finished.stdout.strip().splitlines()[-1]))


def _mb(value: float) -> str:
    return f"{value / 2**20:,.1f}"


def _ratio(full: dict[str, Any], lora: dict[str, Any], key: str, percent: bool = False) -> str:
    value = float(lora[key]) / float(full[key])
    return f"{value:.3%}" if percent else f"{value:.2f}x"


def _ms(run: dict[str, Any]) -> str:
    return f"{run['stepSeconds'] * 1000:.1f}"


def report(full: dict[str, Any], lora: dict[str, Any], steps: int, threads: int) -> str:
    """The comparison table."""
    trainable = f"{lora['trainable'] / lora['total']:.3%}"
    rows = [
        ("trainable parameters", f"{full['trainable']:,}", f"{lora['trainable']:,}", trainable, "<= 0.5%"),
        (
            "saved weights (MB)",
            _mb(full["savedBytes"]),
            _mb(lora["savedBytes"]),
            _ratio(full, lora, "savedBytes", True),
            "",
        ),
        ("step time (ms, median)", _ms(full), _ms(lora), _ratio(full, lora, "stepSeconds"), "<= 0.9x"),
        (
            "training memory (MB)",
            _mb(full["trainingBytes"]),
            _mb(lora["trainingBytes"]),
            _ratio(full, lora, "trainingBytes"),
            "<= 0.6x",
        ),
        ("process peak RSS (MB)", _mb(full["peakBytes"]), _mb(lora["peakBytes"]), _ratio(full, lora, "peakBytes"), ""),
    ]
    header = (
        f"LoRA (rank 8, q_proj/v_proj) vs full fine-tuning: {MODEL}\n"
        f"{full['total']:,} parameters, batch {BATCH_SIZE}, {steps} steps (median of the last {steps - WARMUP_STEPS}), "
        f"{threads} thread(s), CPU\n"
    )
    lines = [f"{'':24}{'full':>14}{'lora':>14}{'lora/full':>12}{'target':>10}"]
    lines += [f"{name:24}{a:>14}{b:>14}{ratio:>12}{target:>10}" for name, a, b, ratio, target in rows]
    return header + "\n".join(lines)


def main() -> int:
    """Run both methods in child processes and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per method")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--rounds", type=int, default=1, help="alternate full/lora runs; the best of each is kept")
    parser.add_argument("--method", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(measure(args.method, args.steps, args.threads)))
        return 0
    runs: dict[str, list[dict[str, Any]]] = {"full": [], "lora": []}
    for _ in range(args.rounds):  # alternating evens out a machine whose load drifts
        for method, results in runs.items():
            results.append(_run_child(method, args.steps, args.threads))
    full, lora = (min(results, key=lambda run: float(run["stepSeconds"])) for results in runs.values())
    print(report(full, lora, args.steps, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())

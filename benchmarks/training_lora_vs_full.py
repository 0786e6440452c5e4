"""Benchmark (not a test): LoRA against full fine-tuning on the same dummy model, data and machine.

Prints, for each method: trainable parameters, saved size (adapter vs whole model), median
optimizer-step time and peak memory, then the LoRA/full ratios next to the targets of
``shared/design/goals.md`` (<= 0.5% trainable, step time <= 0.9x, peak memory <= 0.6x).

Each method runs in its own process so that peak resident memory (``VmHWM``) is its own.
"Training memory" is the peak above the footprint after imports (Python, torch, transformers),
i.e. what the model, gradients, optimizer state and activations take; the whole-process peak is
shown too. Both runs use the real training code (:mod:`kubellm.runtime.training`).

Part of ``python -m benchmarks`` (family ``training``); alone::

    .venv/bin/python -m benchmarks.training_lora_vs_full --rounds 2
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.figures import Check, FamilyResult, Plot, RunOptions, Table, Target, ratio

MODEL = (
    "dummy://llama?hidden_size=768&intermediate_size=2048&num_hidden_layers=2"
    "&num_attention_heads=12&vocab_size=2048&max_position_embeddings=256&seed=0"
)
BATCH_SIZE = 4
DATASET = "dummy://instructions?rows=512&seed=0"
WARMUP_STEPS = 3
MAX_SEQ_LENGTH = 64
STEPS = 15
ROUNDS = 1
ROOT = Path(__file__).resolve().parent.parent


def _peak_rss_bytes() -> int:
    """This process's peak resident memory since its exec.

    Not ``ru_maxrss``: Linux carries it over from the forking parent across exec, so a child of a
    big benchmark process would report the parent's size.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def _job(method: str, steps: int) -> Any:
    from kubellm.contract.training import TrainingRun  # noqa: PLC0415

    training: dict[str, Any] = {
        "method": method,
        "maxSteps": steps,
        "batchSize": BATCH_SIZE,
        "maxSeqLength": MAX_SEQ_LENGTH,
    }
    if method == "lora":
        training["lora"] = {"rank": 8, "alpha": 16}
    return TrainingRun.model_validate(
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
    module = "benchmarks.training_lora_vs_full"
    command = [sys.executable, "-m", module, "--method", method, "--steps", str(steps), "--threads", str(threads)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if finished.returncode != 0:
        raise RuntimeError(f"{method} run failed: {' '.join(finished.stderr[-600:].split())}")
    return dict(json.loads(finished.stdout.strip().splitlines()[-1]))


def measure_both(steps: int, threads: int, rounds: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Alternate full/lora child runs ``rounds`` times; keep the fastest run of each."""
    runs: dict[str, list[dict[str, Any]]] = {"full": [], "lora": []}
    for _ in range(rounds):  # alternating evens out a machine whose load drifts
        for method, results in runs.items():
            results.append(_run_child(method, steps, threads))
    full, lora = (min(results, key=lambda run: float(run["stepSeconds"])) for results in runs.values())
    return full, lora


def _check(
    figure: str, full: dict[str, Any], lora: dict[str, Any], key: str, *, target: Target | None, unit: str
) -> Check:
    scale = 1000 if key == "stepSeconds" else 2**-20
    return Check(
        figure,
        ratio(float(lora[key]), float(full[key])),
        "x",
        target,
        float(lora[key]) * scale,
        "full fine-tuning",
        float(full[key]) * scale,
        unit,
        ours_name="LoRA",
    )


def _checks(full: dict[str, Any], lora: dict[str, Any]) -> list[Check]:
    trainable = float(lora["trainable"]) / float(lora["total"]) * 100
    return [
        Check(
            "LoRA trainable parameters (share of the model)",
            trainable,
            "%",
            Target(0.5, at_least=False),
            float(lora["trainable"]),
            "full fine-tuning",
            float(full["trainable"]),
            "parameters",
            ours_name="LoRA",
        ),
        _check(
            "LoRA / full median step time", full, lora, "stepSeconds", target=Target(0.9, at_least=False), unit="ms"
        ),
        _check(
            "LoRA / full training memory", full, lora, "trainingBytes", target=Target(0.6, at_least=False), unit="MiB"
        ),
        _check("LoRA / full process peak RSS", full, lora, "peakBytes", target=None, unit="MiB"),
        _check("LoRA adapter / full model saved size", full, lora, "savedBytes", target=None, unit="MiB"),
    ]


def _table(full: dict[str, Any], lora: dict[str, Any]) -> Table:
    def row(name: str, key: str, scale: float) -> list[str | float | int | None]:
        return [name, float(full[key]) * scale, float(lora[key]) * scale, ratio(float(lora[key]), float(full[key]))]

    return Table(
        "LoRA vs full fine-tuning",
        ["figure", "full", "LoRA", "LoRA / full"],
        [
            row("trainable parameters", "trainable", 1),
            row("median step time (ms)", "stepSeconds", 1000),
            row("training memory (MiB, peak above imports)", "trainingBytes", 2**-20),
            row("process peak RSS (MiB)", "peakBytes", 2**-20),
            row("saved weights (MiB)", "savedBytes", 2**-20),
        ],
    )


def run(options: RunOptions) -> FamilyResult:
    """The benchmark family: both methods in child processes, then the comparison."""
    steps, rounds = (8, 1) if options.quick else (STEPS, ROUNDS)
    full, lora = measure_both(steps, options.threads, rounds)
    return FamilyResult(
        name="training",
        title="Training: LoRA vs full fine-tuning",
        workload=(
            f"`{MODEL}` ({int(full['total']) / 1e6:.1f}M parameters), dataset `{DATASET}`, batch {BATCH_SIZE}, "
            f"sequences up to {MAX_SEQ_LENGTH} tokens, {steps} optimizer steps per method (median step time after "
            f"{WARMUP_STEPS} warm-up steps), LoRA rank 8 alpha 16 on the default target modules, each run in its "
            f"own process ({rounds} alternating round(s), the fastest kept), {options.threads} torch thread(s), CPU. "
            "Training memory is the peak resident memory above the process's footprint after imports."
        ),
        tables=[_table(full, lora)],
        checks=_checks(full, lora),
        plots=[
            Plot(
                "Step time (lower is better)",
                "ms",
                ["median step"],
                {"full": [float(full["stepSeconds"]) * 1000], "LoRA": [float(lora["stepSeconds"]) * 1000]},
            ),
            Plot(
                "Memory (lower is better)",
                "MiB",
                ["training memory", "peak RSS", "saved weights"],
                {
                    method: [float(r[k]) / 2**20 for k in ("trainingBytes", "peakBytes", "savedBytes")]
                    for method, r in (("full", full), ("LoRA", lora))
                },
            ),
        ],
        data={"full": full, "lora": lora, "steps": steps, "rounds": rounds},
    )


def main() -> int:
    """Child mode (``--method``): one method, its figures as a JSON line. Otherwise: both, printed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=STEPS, help="optimizer steps per method")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternate full/lora runs; the best of each is kept")
    parser.add_argument("--method", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(measure(args.method, args.steps, args.threads)))
        return 0
    full, lora = measure_both(args.steps, args.threads, args.rounds)
    for check in _checks(full, lora):
        print(check.sentence())
    return 0


if __name__ == "__main__":
    sys.exit(main())

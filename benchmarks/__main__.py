"""``python -m benchmarks [--quick] [--only NAME[,NAME]]``: every benchmark family in one run.

Writes ``benchmarks/results/results.json``, ``README.md`` and one PNG per family. A family
that fails is reported as failed (with its error) and the others still run. With ``--only``,
the families not run keep their figures from the results already in the folder, marked with
the run that measured them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.figures import FamilyResult, RunOptions
from benchmarks.report import write_results

FAMILIES = {
    "serving": "benchmarks.serving",
    "overhead": "benchmarks.overhead",
    "quantization": "benchmarks.quantization",
    "cache": "benchmarks.cache",
    "training": "benchmarks.training_lora_vs_full",
    "operator": "benchmarks.operator_reconcile",
    "real": "benchmarks.real_model",
}
RESULTS = Path(__file__).resolve().parent / "results"


def _chosen(only: str | None) -> list[str]:
    if not only:
        return list(FAMILIES)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(FAMILIES))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
    return [name for name in FAMILIES if name in names]


def run_family(name: str, options: RunOptions) -> FamilyResult:
    """Run one family; a failure becomes a result that says why."""
    started = time.perf_counter()
    print(f"[benchmarks] {name} ...", flush=True)
    try:
        result: FamilyResult = importlib.import_module(FAMILIES[name]).run(options)
    except Exception as error:  # one broken family must not lose the others' figures
        traceback.print_exc()
        result = FamilyResult(name, name, "", error=f"{type(error).__name__}: {' '.join(str(error).split())[:500]}")
    result.seconds = time.perf_counter() - started
    print(f"[benchmarks] {name}: {result.seconds:.0f} s{' (failed)' if result.error else ''}", flush=True)
    return result


def carried_over(folder: Path, measured: Sequence[FamilyResult]) -> tuple[list[FamilyResult], dict[str, str]]:
    """The families of ``folder/results.json`` not in ``measured``, and the start of the run that measured each."""
    path = folder / "results.json"
    if not path.is_file():
        return [], {}
    earlier = json.loads(path.read_text())
    started = earlier["run"].get("carried_over", {})
    names = {result.name for result in measured}
    kept = [FamilyResult.from_json(data) for name, data in earlier["families"].items() if name not in names]
    return kept, {result.name: started.get(result.name, earlier["run"]["started"]) for result in kept}


def _in_order(results: Sequence[FamilyResult]) -> list[FamilyResult]:
    order = {name: index for index, name in enumerate(FAMILIES)}
    return sorted(results, key=lambda result: order.get(result.name, len(order)))


def _versions() -> dict[str, str]:
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, run the families, write the results."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="smoke mode: small workloads, a few minutes")
    parser.add_argument("--only", help=f"comma-separated families among {', '.join(FAMILIES)}")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results folder (default: benchmarks/results)")
    args = parser.parse_args(argv)
    from kubellm.runtime.serving.command import default_torch_threads  # noqa: PLC0415

    options = RunOptions(quick=args.quick, threads=default_torch_threads())
    import torch  # noqa: PLC0415

    torch.set_num_threads(options.threads)  # the in-process baselines get what each server gets
    started_at, started = datetime.now(UTC), time.perf_counter()
    measured = [run_family(name, options) for name in _chosen(args.only)]
    kept, carried = carried_over(args.output, measured) if args.only else ([], {})
    run: dict[str, Any] = {
        "started": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "wall_seconds": time.perf_counter() - started,
        "mode": "quick" if args.quick else "full",
        "cores": len(os.sched_getaffinity(0)),
        "threads": options.threads,
        **_versions(),
        **({"carried_over": carried} if carried else {}),
    }
    write_results(args.output, _in_order([*measured, *kept]), run)
    print(f"[benchmarks] wrote {args.output} in {run['wall_seconds']:.0f} s", flush=True)
    return 1 if any(result.error for result in measured) else 0


if __name__ == "__main__":
    sys.exit(main())

"""``kubellm run -f PATH``: run FineTuneJob, ModelDeployment and PromptExperiment manifests locally.

Exit codes: 0 when every resource succeeded, 1 when one failed (its status and log tail are
printed), 2 for manifests that cannot run (every problem listed, nothing started).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from kubellm.operator.local.documents import ManifestError, load_manifests
from kubellm.operator.local.pods import WorkFolder
from kubellm.operator.local.runner import LocalRun, RunFailedError

__all__ = ["add_arguments", "run"]

EXIT_FAILED = 1
EXIT_BAD_MANIFESTS = 2
NEXT_STEPS = """\
Next, on a cluster: with Docker and kind, `make e2e` does all of this; on any cluster:
  helm install kubellm charts/kubellm -n kubellm-system --create-namespace
  kubectl apply -f {paths}
  kubectl get kubellm -w        # the same resources, the same status columns
With network access, put any hf:// model in the FineTuneJob's baseModel.uri; nothing else changes."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="PATH",
        help="a manifest file or a folder of manifests (repeatable), as for kubectl apply -f",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(".kubellm"),
        help="where claims, caches, pod logs and reports go (default: .kubellm)",
    )
    parser.add_argument(
        "--keep-serving", action="store_true", help="keep the model servers running at the end, until Ctrl-C"
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Validate every manifest, then run them in dependency order."""
    try:
        manifests = load_manifests([Path(p) for p in args.filename])
    except ManifestError as error:
        print(f"kubellm run: the manifests cannot run:\n{error}", file=sys.stderr)
        return EXIT_BAD_MANIFESTS
    work = WorkFolder(args.workdir)
    kinds = ", ".join(f"{r.kind} {r.name}" for r in manifests.resources)
    print(f"kubellm run: {kinds}; state in {work.root}/", flush=True)
    for claim in manifests.claims:
        print(f"  PersistentVolumeClaim {claim} -> {work.pvc_root / claim}/")
    for skipped in manifests.skipped:
        print(f"  skipped {skipped}")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        LocalRun(manifests, work, sys.stdout, keep_serving=args.keep_serving).run()
    except RunFailedError as error:
        print(f"\nkubellm run: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\nkubellm run: interrupted; the processes it started are stopped", file=sys.stderr)
        return 130
    print()
    print(NEXT_STEPS.format(paths=" ".join(args.filename)))
    return 0

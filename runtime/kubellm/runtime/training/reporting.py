"""Where progress goes: structured JSON log lines, the status file, the operator, the termination message.

Every event is one JSON object per line on stdout (``{"time", "event", ...}``; payloads use the
status field names of :mod:`kubellm.contract`, in camelCase), so a log collector or the
operator can parse them. The same figures go into ``<output>/status.json``, rewritten
atomically, and into the operator's report ConfigMap when the pod has one
(:mod:`kubellm.runtime.reporting`), shaped like the FineTuneJob status::

    {"phase": "Running", "reason": "Training", "progress": {...TrainingProgress...},
     "dataQuality": {...}, "search": {...}, "output": {...}, "message": "...", "updatedAt": "..."}

No torch or transformers here: the command reports a bad config or dataset before they load.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from kubellm.contract.training import TrainingProgress
from kubellm.runtime.reporting import ThrottledStatus
from kubellm.runtime.training.metrics import TrainingMetrics

__all__ = ["DEFAULT_TERMINATION_LOG", "STATUS_FILE", "TERMINATION_LOG_ENV", "Reporter", "is_main_process"]

STATUS_FILE = "status.json"
TERMINATION_LOG_ENV = "KUBELLM_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
_TERMINATION_LIMIT = 4096  # bytes Kubernetes keeps of a termination message


def _now() -> datetime:
    return datetime.now(UTC)


def is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun job: only rank 0 writes files and reports."""
    return os.environ.get("RANK", "0") == "0"


STATUS_FIELDS = ("progress", "dataQuality", "search", "evaluation", "output")
"""The FineTuneJob status fields the pod reports to the operator."""


class Reporter:
    """Writes events as JSON lines and keeps the status file up to date."""

    def __init__(
        self,
        output_dir: Path | None,
        stream: TextIO | None = None,
        metrics: TrainingMetrics | None = None,
        configmap: ThrottledStatus | None = None,
    ) -> None:
        self.status_path = output_dir / STATUS_FILE if output_dir is not None else None
        self.stream = stream if stream is not None else sys.stdout
        self.metrics = metrics
        self.configmap = configmap
        self.status: dict[str, Any] = {}
        self._lock = threading.Lock()

    def event(self, name: str, **fields: Any) -> None:
        """One structured log line."""
        line = json.dumps({"time": _now().isoformat(timespec="milliseconds"), "event": name, **fields}, default=str)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def update_status(self, **sections: Any) -> None:
        """Merge sections (camelCase keys; None removes one) into the status file, rewrite it, tell the operator.

        Progress alone reaches the report ConfigMap at most every few seconds; anything else
        (data quality, search, phase, output) at once.
        """
        with self._lock:
            for key, value in sections.items():
                if value is None:
                    self.status.pop(key, None)
                else:
                    self.status[key] = value
            self.status["updatedAt"] = _now().isoformat()
            if self.status_path is not None:
                temporary = self.status_path.with_suffix(".json.tmp")
                temporary.write_text(json.dumps(self.status, indent=2, default=str) + "\n")
                os.replace(temporary, self.status_path)
            if self.configmap is not None:
                reported = {key: self.status[key] for key in STATUS_FIELDS if key in self.status}
                self.configmap.update(reported, final=any(key != "progress" for key in sections))

    def write_termination_message(self) -> bool:
        """Copy the final status (trials left out) to the container's termination message file, if any.

        Kubernetes shows it in the pod's ``status.containerStatuses[].state.terminated.message``,
        so the operator can read the outcome without reading files or logs.
        """
        path = Path(os.environ.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG))
        if not path.exists():
            return False
        status = {key: value for key, value in self.status.items() if key != "search"}
        if "search" in self.status:
            status["search"] = {k: v for k, v in self.status["search"].items() if k != "trials"}
        text = json.dumps(status, separators=(",", ":"), default=str)
        if len(text.encode()) > _TERMINATION_LIMIT:
            text = json.dumps({k: status.get(k) for k in ("phase", "reason", "message", "output")}, default=str)
        path.write_text(text[:_TERMINATION_LIMIT])
        return True

    def progress(self, progress: TrainingProgress, *, log: bool) -> None:
        """Record training progress in the status file and gauges; ``log`` also emits a line."""
        payload = progress.dump()
        self.update_status(progress=payload)
        if self.metrics is not None:
            self.metrics.update(progress)
        if log:
            self.event("progress", **payload)

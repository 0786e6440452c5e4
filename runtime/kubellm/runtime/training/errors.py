"""The trainer's failures (of the :class:`~kubellm.runtime.errors.CommandError` family), each with its exit code.

Exit codes let the operator tell a permanent failure (bad spec or data: do not retry) from a
transient one (retry, resuming from the last checkpoint) with a Job ``podFailurePolicy``:

====  =================================================================================
0     success
1     training failed (out of memory, a crash): retrying may help
2     invalid configuration, model source or dataset: retrying cannot help
3     the data-quality check failed (report in ``data_quality.json`` and status)
143   stopped by SIGTERM after saving a checkpoint: run again to resume
====  =================================================================================
"""

from __future__ import annotations

from kubellm.contract.training import EXIT_DATA_QUALITY
from kubellm.runtime.errors import CommandError, ConfigError, DatasetError

__all__ = [
    "EXIT_INTERRUPTED",
    "AugmentationError",
    "ConfigError",
    "DataQualityError",
    "DatasetError",
    "InterruptedRunError",
    "TrainingError",
]

EXIT_INTERRUPTED = 143


class TrainingError(CommandError):
    """Training failed (out of memory, a crash): a retry, resuming from the last checkpoint, may help."""

    reason = "TrainingFailed"


class DataQualityError(CommandError):
    """The data failed the quality check (too few rows left, too many dropped)."""

    exit_code = EXIT_DATA_QUALITY
    reason = "DataQualityCheckFailed"


class AugmentationError(TrainingError):
    """The model that generates new rows cannot be reached; a retry may find it back."""

    reason = "AugmentationFailed"


class InterruptedRunError(TrainingError):
    """Training stopped on SIGTERM after saving a checkpoint; a new run resumes from it."""

    exit_code = EXIT_INTERRUPTED
    reason = "Interrupted"

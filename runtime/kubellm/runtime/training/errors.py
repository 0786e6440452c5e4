"""The trainer's failures, each with the exit code ``kubellm train`` ends with.

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

from kubellm.runtime.config import TRAIN_EXIT_DATA_QUALITY, TRAIN_EXIT_INVALID

__all__ = [
    "EXIT_DATA_QUALITY",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "AugmentationError",
    "ConfigError",
    "DataQualityError",
    "DatasetError",
    "InterruptedRunError",
    "TrainingError",
]

EXIT_FAILED = 1
EXIT_INVALID = TRAIN_EXIT_INVALID
EXIT_DATA_QUALITY = TRAIN_EXIT_DATA_QUALITY
EXIT_INTERRUPTED = 143


class TrainingError(Exception):
    """A failure with a one-line message; ``exit_code`` is what the command returns."""

    exit_code = EXIT_FAILED
    reason = "TrainingFailed"


class ConfigError(TrainingError):
    """The configuration file or its contents cannot work."""

    exit_code = EXIT_INVALID
    reason = "InvalidConfig"


class DatasetError(TrainingError):
    """The dataset cannot be read: a missing file, a malformed line, a missing column."""

    exit_code = EXIT_INVALID
    reason = "InvalidDataset"


class DataQualityError(TrainingError):
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

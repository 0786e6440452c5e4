"""Hugging Face Hub failures translated into one-line errors that say what to do.

transformers wraps the hub's typed errors (gated, not found, bad revision, offline) in plain
``OSError``s with multi-line messages; :func:`explain_hub_error` walks the cause chain back to
the typed error and words it for a FineTuneJob or ModelDeployment author.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from kubellm.runtime.models.sources import HF_TOKEN_ENV, ModelSourceError, hub_token

__all__ = ["explain_hub_error", "translated_hub_errors"]


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _gated_advice() -> str:
    if hub_token() is None:
        return f"it is gated: set tokenSecretRef (the {HF_TOKEN_ENV} environment variable) to a token with access"
    return f"it is gated and the token in {HF_TOKEN_ENV} has no access: request access on the model page"


def _typed_reason(error: BaseException) -> str | None:
    if isinstance(error, GatedRepoError):
        return _gated_advice()
    if isinstance(error, RepositoryNotFoundError):
        return "repository not found, or private: check the name or set tokenSecretRef"
    if isinstance(error, RevisionNotFoundError):
        return "revision not found: use an existing branch, tag or commit"
    if isinstance(error, LocalEntryNotFoundError | OfflineModeIsEnabled):
        return "not in the local cache and the Hub cannot be reached (offline, or no network)"
    if isinstance(error, EntryNotFoundError):
        return "a required file is missing from the repository"
    return None


def explain_hub_error(uri: str, error: BaseException) -> ModelSourceError:
    """A one-line :class:`ModelSourceError` for a failure to fetch ``uri`` from the Hub."""
    for cause in _causes(error):
        reason = _typed_reason(cause)
        if reason is not None:
            return ModelSourceError(f"{uri}: {reason}")
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelSourceError(f"{uri}: cannot load: {first_line}")


@contextmanager
def translated_hub_errors(uri: str) -> Iterator[None]:
    """Turn hub and loading errors raised inside the block into :class:`ModelSourceError`."""
    try:
        yield
    except ModelSourceError:
        raise
    except (OSError, ValueError) as error:
        raise explain_hub_error(uri, error) from error

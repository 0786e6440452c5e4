"""Narrow silencers for known deprecation warnings between the pinned libraries.

peft 0.21 still reads ``PreTrainedModel.is_gradient_checkpointing``, which transformers 5
deprecated (FutureWarning) in favour of ``is_activation_checkpointing``. Nothing on our side
can avoid it, so it is ignored around peft calls only; any other warning still surfaces.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["peft_deprecations_silenced"]


@contextmanager
def peft_deprecations_silenced() -> Iterator[None]:
    """Ignore the ``is_gradient_checkpointing`` FutureWarning peft triggers inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield

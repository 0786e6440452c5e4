"""The hardware limit of batch-1 decoding: this machine's memory read bandwidth, and what it allows.

At batch 1 every generated token reads every weight once, so no engine decodes faster than
``bandwidth / weight bytes`` tokens per second (caches aside: the weights of a real model are far
larger than the last-level cache). The bandwidth is measured by summing a float32 tensor several
times larger than any cache, on every core this process may use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["batch1_bound", "read_bandwidth"]


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch  # noqa: PLC0415

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def read_bandwidth(gib: float, repeats: int, threads: int | None = None) -> float:
    """Bytes per second read by ``tensor.sum()`` over ``gib`` GiB, best of ``repeats`` passes.

    ``threads`` defaults to every core this process may use: the limit is the machine's, not one core's.
    """
    import torch  # noqa: PLC0415

    if gib <= 0 or repeats < 1:
        raise ValueError(f"read_bandwidth needs gib > 0 and repeats >= 1, got {gib} and {repeats}")
    with _torch_threads(threads or len(os.sched_getaffinity(0))):
        tensor = torch.ones(int(gib * 2**30) // 4, dtype=torch.float32)
        float(tensor.sum())  # first touch of every page, outside the timing
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            float(tensor.sum())
            best = min(best, time.perf_counter() - started)
        read = tensor.numel() * tensor.element_size()
        del tensor
    return read / best


def batch1_bound(bandwidth: float, weight_bytes: int) -> float:
    """Tokens per second at batch 1 if every token only had to read the weights once at ``bandwidth``."""
    if weight_bytes <= 0:
        raise ValueError(f"weight bytes must be positive, got {weight_bytes}")
    return bandwidth / weight_bytes

"""Model and training tests run offline and single-threaded."""

from __future__ import annotations

from tests.harness.offline import offline_single_thread

__all__ = ["offline_single_thread"]

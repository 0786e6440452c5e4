"""The operator's start-up decisions: retry budget, peering priority, missing peering objects."""

from __future__ import annotations

from typing import Any

from kubellm.operator.__main__ import missing_peerings, peering_priority, retry_backoffs
from kubellm.operator.settings import OperatorSettings


def test_retries_grow_to_thirty_seconds_and_cover_the_budget() -> None:
    delays = retry_backoffs(600)
    assert delays[:8] == (1, 1, 2, 3, 5, 8, 13, 21)
    assert set(delays[8:]) == {30}
    assert sum(delays) >= 600 > sum(delays[:-1])
    assert retry_backoffs(4) == (1, 1, 2)


def test_replicas_without_a_configured_priority_pick_different_ones() -> None:
    assert peering_priority(OperatorSettings(priority=7)) == 7
    assert len({peering_priority(OperatorSettings()) for _ in range(20)}) > 1


class Objects:
    def __init__(self, *present: str) -> None:
        self.present = set(present)
        self.asked: list[str] = []

    def read(self, path: str) -> dict[str, Any] | None:
        self.asked.append(path)
        return {} if path in self.present else None


def test_missing_peering_objects_are_named() -> None:
    assert missing_peerings(Objects(), OperatorSettings()) == []  # type: ignore[arg-type]
    cluster = Objects()
    assert missing_peerings(cluster, OperatorSettings(peering="kubellm")) == ["ClusterKopfPeering kubellm"]  # type: ignore[arg-type]
    assert cluster.asked == ["/apis/kopf.dev/v1/clusterkopfpeerings/kubellm"]
    namespaced = Objects("/apis/kopf.dev/v1/namespaces/a/kopfpeerings/kubellm")
    settings = OperatorSettings(peering="kubellm", namespaces=("a", "b"))
    assert missing_peerings(namespaced, settings) == ["KopfPeering in b kubellm"]  # type: ignore[arg-type]

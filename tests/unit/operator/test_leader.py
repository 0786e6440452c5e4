"""Leader election: the Lease specs, when a standby may claim, and candidates racing over one Lease.

The Lease store here is in memory but keeps the API server's rule that makes election safe: a
create fails when the Lease exists and a replace fails when its resourceVersion is stale (409).
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from kubellm.operator.k8s import ApiError
from kubellm.operator.leader import (
    LeaderElector,
    LeaseLostError,
    LeaseRecord,
    LeaseTimings,
    Observation,
    claimed_spec,
    default_identity,
    released_spec,
    standby_health,
)
from tests.harness.cluster import free_port

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
TIMINGS = LeaseTimings(lease_duration=15, renew_deadline=10, retry_period=2)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Leases:
    """One Lease with the API server's optimistic concurrency (resourceVersion)."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.failing = False
        self.before_write: Callable[[], object] | None = None

    def _check(self) -> None:
        if self.failing:
            raise ApiError(503, "unavailable")

    def _write(self, metadata: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = {"metadata": {**metadata, "resourceVersion": str(self.version)}, "spec": dict(spec)}
        return copy.deepcopy(self.lease)

    def _interleave(self) -> None:
        hook, self.before_write = self.before_write, None
        if hook is not None:
            hook()  # another candidate writes between this one's read and its write

    def get(self) -> dict[str, Any] | None:
        self._check()
        return copy.deepcopy(self.lease)

    def create(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        self._check()
        self._interleave()
        if self.lease is not None:
            raise ApiError(409, "AlreadyExists")
        return self._write({"name": "lease"}, spec)

    def replace(self, live: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
        self._check()
        self._interleave()
        assert self.lease is not None
        if live["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict")
        return self._write(live["metadata"], spec)

    @property
    def holder(self) -> str | None:
        return None if self.lease is None else self.lease["spec"]["holderIdentity"]


def _elector(leases: Leases, identity: str, clock: Clock, timings: LeaseTimings = TIMINGS) -> LeaderElector:
    return LeaderElector(leases, identity, timings, clock=clock, wall_clock=lambda: T0)


def test_a_new_lease_a_renewal_and_a_takeover() -> None:
    new = claimed_spec(None, "a", 15, T0)
    assert new == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-01-02T03:04:05.678901Z",
        "renewTime": "2026-01-02T03:04:05.678901Z",
        "leaseTransitions": 0,
    }
    held = LeaseRecord.from_lease({"metadata": {"resourceVersion": "7"}, "spec": new})
    assert held == LeaseRecord("a", 15, "2026-01-02T03:04:05.678901Z", 0, "7")
    later = datetime(2026, 1, 2, 3, 5, tzinfo=UTC)
    renewed = claimed_spec(held, "a", 15, later)
    assert (renewed["acquireTime"], renewed["renewTime"]) == (new["acquireTime"], "2026-01-02T03:05:00.000000Z")
    assert renewed["leaseTransitions"] == 0
    taken = claimed_spec(held, "b", 15, later)
    assert taken["holderIdentity"] == "b" and taken["acquireTime"] == taken["renewTime"]
    assert taken["leaseTransitions"] == 1


def test_a_released_lease_has_no_holder() -> None:
    record = LeaseRecord("a", 15, None, 4, "9")
    released = released_spec(record, T0)
    assert released["holderIdentity"] is None and released["leaseTransitions"] == 4
    assert LeaseRecord.from_lease({"metadata": {}, "spec": released}).holder == ""
    assert LeaseRecord.from_lease({"metadata": {"resourceVersion": "1"}}) == LeaseRecord("", 0, None, 0, "1")


def test_a_standby_counts_the_lease_duration_from_the_last_change_it_saw() -> None:
    seen = Observation()
    held = LeaseRecord("a", 15, None, 0, "1")
    seen.see(held, 100.0)
    assert not seen.may_claim(held, "b", 114.9, 30)
    seen.see(held, 110.0)  # unchanged: the clock keeps running from 100
    assert seen.may_claim(held, "b", 115.0, 30)
    renewed = LeaseRecord("a", 15, None, 0, "2")
    seen.see(renewed, 112.0)
    assert not seen.may_claim(renewed, "b", 126.9, 30)
    assert seen.may_claim(renewed, "a", 112.0, 30)  # its own
    assert seen.may_claim(LeaseRecord("", 1, None, 0, "3"), "b", 112.0, 30)  # released
    assert not seen.may_claim(LeaseRecord("a", 0, None, 0, "2"), "b", 141.9, 30)  # no duration: the default


def test_timings_must_nest() -> None:
    for bad in [(10, 10, 2), (15, 10, 10), (15, 10, 0)]:
        with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
            LeaseTimings(*bad)


def test_identities_name_the_pod_and_differ_per_process() -> None:
    first, second = default_identity({"POD_NAME": "op-7d9"}), default_identity({"POD_NAME": "op-7d9"})
    assert first.startswith("op-7d9_") and second.startswith("op-7d9_") and first != second
    assert default_identity({}).startswith(socket.gethostname() + "_")


def test_one_candidate_leads_and_another_waits_until_the_lease_goes_unrenewed() -> None:
    leases, clock = Leases(), Clock()
    a, b = _elector(leases, "a", clock), _elector(leases, "b", clock)
    assert a.try_claim() and a.leading and leases.holder == "a"
    assert not b.try_claim() and not b.leading and b.holder == "a"
    for _ in range(20):  # a renews every 2 s: b never gets it
        clock.now += 2
        assert a.try_claim() and not b.try_claim()
    assert leases.lease is not None and leases.lease["spec"]["leaseTransitions"] == 0
    clock.now += 14.9  # a is gone; b saw its last renewal 14.9 s ago
    assert not b.try_claim()
    clock.now += 0.1
    assert b.try_claim() and leases.holder == "b"
    assert leases.lease["spec"]["leaseTransitions"] == 1
    with pytest.raises(LeaseLostError, match="names b"):
        a.try_claim()  # a leader that finds another holder has lost it


def test_of_two_candidates_racing_for_the_lease_one_wins() -> None:
    leases, clock = Leases(), Clock()
    a, b = _elector(leases, "a", clock), _elector(leases, "b", clock)
    leases.before_write = a.try_claim  # both saw no Lease; a creates it first
    assert not b.try_claim() and leases.holder == "a" and a.leading and not b.leading
    clock.now += 20
    c = _elector(leases, "c", clock)
    assert not c.try_claim() and not b.try_claim()  # both see a's Lease from now on
    clock.now += 15
    leases.before_write = b.try_claim  # b and c both see it expired; b replaces it first
    assert not c.try_claim() and leases.holder == "b"


def test_a_released_lease_is_taken_at_once() -> None:
    leases, clock = Leases(), Clock()
    a, b = _elector(leases, "a", clock), _elector(leases, "b", clock)
    assert a.try_claim() and not b.try_claim()
    a.release()
    released = leases.holder
    assert released is None
    assert b.try_claim() and leases.holder == "b"
    a.release()  # no longer the holder: leaves the Lease alone
    assert leases.holder == "b"


def test_acquire_retries_through_failures() -> None:
    leases = Leases()
    leases.failing = True
    elector = LeaderElector(leases, "a", LeaseTimings(2, 0.05, 0.01))
    threading.Timer(0.05, lambda: setattr(leases, "failing", False)).start()
    elector.acquire()
    assert elector.leading and leases.holder == "a"


def _kept(leases: Leases, timings: LeaseTimings) -> tuple[LeaderElector, list[str], threading.Event]:
    lost: list[str] = []
    event = threading.Event()
    elector = LeaderElector(leases, "a", timings)
    assert elector.try_claim()

    def on_lost(reason: str) -> None:
        lost.append(reason)
        event.set()

    elector.keep(on_lost)
    return elector, lost, event


def test_a_leader_that_cannot_renew_gives_up_at_the_deadline() -> None:
    leases = Leases()
    elector, lost, event = _kept(leases, LeaseTimings(2, 0.3, 0.05))
    time.sleep(0.4)
    assert not lost and leases.lease is not None and int(leases.lease["metadata"]["resourceVersion"]) > 3
    leases.failing = True
    failed = time.monotonic()
    assert event.wait(2)
    assert lost == ["not renewed for 0.3 s"]
    assert time.monotonic() - failed < 0.3 + 0.25
    elector.release()


def test_a_leader_whose_lease_is_taken_gives_up_at_the_next_renewal() -> None:
    leases = Leases()
    elector, lost, event = _kept(leases, LeaseTimings(5, 2, 0.05))
    assert leases.lease is not None
    leases.replace(leases.lease, claimed_spec(None, "intruder", 5, T0))
    assert event.wait(1)
    assert lost == ["the Lease names intruder"]
    elector.release()
    assert leases.holder == "intruder"


def test_release_stops_renewing_without_losing() -> None:
    leases = Leases()
    elector, lost, _ = _kept(leases, LeaseTimings(2, 0.2, 0.05))
    elector.release()
    version = leases.version
    time.sleep(0.4)
    assert not lost and leases.version == version and leases.holder is None


def test_a_standby_answers_the_liveness_endpoint_until_kopf_takes_it() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    with standby_health(url, lambda: {"leader": False, "holder": "a"}):
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            assert json.loads(response.read()) == {"standby": {"leader": False, "holder": "a"}}
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
    with socket.socket() as free:  # closed: Kopf can bind the same port
        free.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        free.bind(("127.0.0.1", port))
    with standby_health(None, dict):
        pass

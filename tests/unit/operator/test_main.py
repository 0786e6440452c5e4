"""The operator's start-up decisions: retry budget, the candidate for the leader Lease."""

from __future__ import annotations

from kubernetes import client

from kubellm.operator.__main__ import build_elector, retry_backoffs
from kubellm.operator.leader import LeaseApi, LeaseTimings
from kubellm.operator.settings import parse_settings


def test_retries_grow_to_thirty_seconds_and_cover_the_budget() -> None:
    delays = retry_backoffs(600)
    assert delays[:8] == (1, 1, 2, 3, 5, 8, 13, 21)
    assert set(delays[8:]) == {30}
    assert sum(delays) >= 600 > sum(delays[:-1])
    assert retry_backoffs(4) == (1, 1, 2)


def test_the_elector_follows_the_settings() -> None:
    flags = ["--leader-election", "--lease-namespace", "ops", "--lease-name", "llm", "--lease-duration-seconds", "8"]
    settings = parse_settings([*flags, "--renew-deadline-seconds", "5", "--retry-period-seconds", "1"], environ={})
    with client.ApiClient() as api:
        elector = build_elector(api, settings)
        assert elector.timings == LeaseTimings(lease_duration=8, renew_deadline=5, retry_period=1)
        assert isinstance(elector.leases, LeaseApi)
        assert (elector.leases.namespace, elector.leases.name, elector.leases.timeout) == ("ops", "llm", 2.5)
        assert elector.identity != build_elector(api, settings).identity  # one per process
        named = build_elector(api, parse_settings([*flags[:5], "--lease-identity", "op-0"], environ={}))
        assert named.identity == "op-0"

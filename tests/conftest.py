"""Shared fixtures: the real control plane, a namespace per test, a real Redis server and a real model (SmolLM2)."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator

import pytest

from tests.harness.cluster import Cluster, start_cluster, stop_cluster
from tests.harness.redis import RedisServer, running_redis
from tests.harness.smollm2 import smollm2  # noqa: F401  (a fixture: the real model, converted once per session)

_namespace_ids = itertools.count()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember failures so the cluster fixture keeps its logs for them."""
    report = yield
    if getattr(report, "failed", False):
        item.session.stash[_FAILED] = True
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One control plane for the whole session (etcd, apiserver, controllers, scheduler, kwok)."""
    started = time.monotonic()
    control_plane = start_cluster()
    print(f"\n[cluster] control plane started in {time.monotonic() - started:.1f}s at {control_plane.server}")
    yield control_plane
    stop_cluster(control_plane, keep_logs=request.session.stash.get(_FAILED, False))


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, deleted (without waiting) after the test."""
    name = f"t{os.getpid()}-{next(_namespace_ids)}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port."""
    with running_redis() as server:
        yield server

"""Leader election on a ``coordination.k8s.io/v1`` Lease: of several operator replicas, only the
holder of the Lease runs Kopf; the others open no watch and write nothing until they hold it.

- **Acquire** (:meth:`LeaderElector.acquire`): read the Lease every retry period and claim it
  when it is absent, released (no holder) or unchanged for its ``leaseDurationSeconds``. That
  time is counted on *this* process's monotonic clock from when it saw the Lease change, never
  from the ``renewTime`` another machine wrote (clocks differ between nodes). A claim is a create,
  or a replace carrying the ``resourceVersion`` that was read: of two candidates racing for it,
  the API server lets one win and answers the other 409 Conflict.
- **Keep** (:meth:`LeaderElector.keep`): renew every retry period. A watchdog ends the process
  once the renew deadline has passed since the start of the last successful renewal (an API
  outage, a hung request), and a renewal that finds another holder ends it at once. A standby
  waits the lease duration after it *saw* that renewal, and ``renew_deadline < lease_duration``,
  so the old leader has stopped before the new one starts. Ending means exiting the process
  (:data:`LEASE_LOST_EXIT_CODE`; the kubelet restarts it as a standby): Kopf's graceful stop
  would let running handlers go on writing.
- **Release** (:meth:`LeaderElector.release`): once Kopf has stopped (SIGTERM, a rolling update)
  the Lease is handed back, so a standby takes over at once instead of after the lease duration.

While standing by, :func:`standby_health` answers the liveness endpoint Kopf serves once it
runs, so the kubelet sees a healthy standby rather than restarting it.

Why not ``kubernetes.leaderelection``: its renew deadline restarts after every successful round
instead of counting from the last success, its requests have no timeout, it never releases the
Lease, and its lock uses the global default client.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn, Protocol
from urllib.parse import quote, urlsplit

from kubernetes.client import ApiClient

from kubellm.operator.k8s import ApiError

__all__ = [
    "LEASE_LOST_EXIT_CODE",
    "LeaderElector",
    "LeaseApi",
    "LeaseLostError",
    "LeaseRecord",
    "LeaseStore",
    "LeaseTimings",
    "Observation",
    "claimed_spec",
    "default_identity",
    "exit_on_lost",
    "released_spec",
    "standby_health",
]

LEASE_LOST_EXIT_CODE = 3
"""The exit code of a leader that lost its Lease (distinct from Kopf's 1 for a fatal error)."""

logger = logging.getLogger(__name__)
Clock = Callable[[], float]
WallClock = Callable[[], datetime]


def default_identity(environ: Mapping[str, str]) -> str:
    """``$POD_NAME`` (else the host name) and a random suffix: one name per process, as client-go does."""
    return f"{environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class LeaseTimings:
    """Lease duration > renew deadline > retry period, in seconds (see the module docstring)."""

    lease_duration: int
    renew_deadline: float
    retry_period: float

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(f"need 0 < retry period < renew deadline < lease duration, got {self}")


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says, and its ``resourceVersion`` (changed by every write)."""

    holder: str
    duration_seconds: int
    acquire_time: str | None
    transitions: int
    version: str

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        """The record of a Lease as the API server returns it (pure)."""
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            version=str(lease.get("metadata", {}).get("resourceVersion", "")),
        )


def micro_time(moment: datetime) -> str:
    """A Kubernetes ``MicroTime``: RFC 3339 in UTC with microseconds (pure)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claimed_spec(record: LeaseRecord | None, identity: str, duration: int, now: datetime) -> dict[str, Any]:
    """The Lease spec naming ``identity`` holder: a renewal keeps acquireTime, a takeover counts a transition (pure)."""
    stamp = micro_time(now)
    renewal = record is not None and record.holder == identity
    transitions = 0 if record is None else record.transitions + (0 if renewal else 1)
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": duration,
        "acquireTime": (record.acquire_time if record is not None and renewal else None) or stamp,
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }


def released_spec(record: LeaseRecord, now: datetime) -> dict[str, Any]:
    """The Lease spec handing it back: no holder, so any standby may claim it at once (pure)."""
    stamp = micro_time(now)
    return {
        "holderIdentity": None,
        "leaseDurationSeconds": 1,
        "acquireTime": stamp,
        "renewTime": stamp,
        "leaseTransitions": record.transitions,
    }


@dataclass
class Observation:
    """The Lease version this process last saw and since when, on its own monotonic clock."""

    version: str | None = None
    since: float = 0.0

    def see(self, record: LeaseRecord, now: float) -> None:
        """Note ``record``; the clock restarts only when its version changed."""
        if record.version != self.version:
            self.version, self.since = record.version, now

    def may_claim(self, record: LeaseRecord, identity: str, now: float, default_duration: int) -> bool:
        """Whether ``identity`` may take the Lease: free, its own, or not renewed for its duration (pure)."""
        duration = record.duration_seconds or default_duration
        return not record.holder or record.holder == identity or now - self.since >= duration


class LeaseLostError(RuntimeError):
    """The leader's Lease names another holder, or was not renewed within the deadline."""


class LeaseStore(Protocol):
    """The three requests election makes; :class:`LeaseApi` sends them to the API server."""

    def get(self) -> dict[str, Any] | None:
        """The Lease, or None when it does not exist."""

    def create(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Create the Lease; :class:`ApiError` 409 when it exists."""

    def replace(self, live: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the Lease read as ``live``; :class:`ApiError` 409 when it changed since."""


@dataclass
class LeaseApi:
    """The Lease ``namespace/name`` on the API server; every request gives up after ``timeout`` seconds."""

    api: ApiClient
    namespace: str
    name: str
    timeout: float

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any] | None:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        serialized = self.api.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = self.api.call_api(*serialized, _request_timeout=self.timeout)
        data: bytes = response.response.data
        if response.status == 404 and method == "GET":
            return None
        if response.status >= 400:
            raise ApiError(response.status, data.decode(errors="replace")[:2000])
        result: dict[str, Any] = json.loads(data)
        return result

    @property
    def _collection(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{quote(self.namespace)}/leases"

    def get(self) -> dict[str, Any] | None:
        """The Lease, or None when it does not exist."""
        return self._request("GET", f"{self._collection}/{quote(self.name)}")

    def create(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Create the Lease; :class:`ApiError` 409 when it exists."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": dict(spec),
        }
        created = self._request("POST", self._collection, body)
        assert created is not None
        return created

    def replace(self, live: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the Lease read as ``live`` (its metadata carries the resourceVersion); 409 when it changed since."""
        replaced = self._request("PUT", f"{self._collection}/{quote(self.name)}", {**live, "spec": dict(spec)})
        assert replaced is not None
        return replaced


def _conflict(error: ApiError) -> bool:
    """Another candidate wrote first (409 Conflict); anything else is a failure to report."""
    return error.status == 409


class LeaderElector:
    """One candidate for the Lease: :meth:`acquire`, then :meth:`keep` while leading, :meth:`release` at the end."""

    def __init__(
        self,
        leases: LeaseStore,
        identity: str,
        timings: LeaseTimings,
        *,
        clock: Clock = time.monotonic,
        wall_clock: WallClock = lambda: datetime.now(UTC),
    ) -> None:
        self.leases = leases
        self.identity = identity
        self.timings = timings
        self.clock = clock
        self.wall_clock = wall_clock
        self.observation = Observation()
        self.holder = ""
        self.renewed_at: float | None = None
        """Monotonic time at the start of the last successful claim; None until this process leads."""
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def leading(self) -> bool:
        """Whether this process has held the Lease (it exits when it loses it)."""
        return self.renewed_at is not None

    def try_claim(self) -> bool:
        """One attempt to take or renew the Lease; whether this process holds it now.

        Raises :class:`LeaseLostError` when this process leads and the Lease names another holder.
        """
        started = self.clock()
        live = self.leases.get()
        if live is None:
            return self._write(started, lambda: self.leases.create(self._claim(None)))
        record = LeaseRecord.from_lease(live)
        self.observation.see(record, self.clock())
        self.holder = record.holder
        if self.leading and record.holder != self.identity:
            raise LeaseLostError(f"the Lease names {record.holder or 'no holder'}")
        if not self.observation.may_claim(record, self.identity, self.clock(), self.timings.lease_duration):
            return False
        return self._write(started, lambda: self.leases.replace(live, self._claim(record)))

    def _claim(self, record: LeaseRecord | None) -> dict[str, Any]:
        return claimed_spec(record, self.identity, self.timings.lease_duration, self.wall_clock())

    def _write(self, started: float, write: Callable[[], dict[str, Any]]) -> bool:
        try:
            written = write()
        except ApiError as error:
            if _conflict(error):
                return False
            raise
        self.observation.see(LeaseRecord.from_lease(written), self.clock())
        self.holder, self.renewed_at = self.identity, started
        return True

    def acquire(self) -> None:
        """Block until this process holds the Lease, trying every retry period (failures are logged)."""
        logger.info("Standing by for the leader Lease as %s.", self.identity)
        while True:
            try:
                if self.try_claim():
                    logger.info("Acquired the leader Lease as %s.", self.identity)
                    return
            except Exception as error:  # an API outage: keep trying, a standby does no harm
                logger.warning("Could not read or claim the leader Lease: %s", error)
            time.sleep(self.timings.retry_period)

    def keep(self, on_lost: Callable[[str], object]) -> None:
        """Renew the Lease every retry period in the background; ``on_lost(reason)`` once it is lost."""
        assert self.leading, "acquire the Lease first"
        for target in (self._renew, self._watch):
            thread = threading.Thread(target=target, args=(on_lost,), name=f"lease-{target.__name__[1:]}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _renew(self, on_lost: Callable[[str], object]) -> None:
        while not self._stopping.wait(self.timings.retry_period):
            try:
                self.try_claim()  # a conflict (someone touched the Lease) is retried next period
            except LeaseLostError as lost:
                on_lost(str(lost))
                return
            except Exception as error:  # the watchdog decides when failures have lasted too long
                logger.warning("Could not renew the leader Lease: %s", error)

    def _watch(self, on_lost: Callable[[str], object]) -> None:
        while True:
            assert self.renewed_at is not None
            remaining = self.renewed_at + self.timings.renew_deadline - self.clock()
            if remaining <= 0:
                on_lost(f"not renewed for {self.timings.renew_deadline:g} s")
                return
            if self._stopping.wait(remaining):
                return

    def release(self) -> None:
        """Stop renewing and hand the Lease back if this process still holds it (failures are logged)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=self.timings.renew_deadline)
        try:
            live = self.leases.get()
            if live is not None and (record := LeaseRecord.from_lease(live)).holder == self.identity:
                self.leases.replace(live, released_spec(record, self.wall_clock()))
                logger.info("Released the leader Lease.")
        except Exception as error:  # a standby then takes over after the lease duration instead
            logger.warning("Could not release the leader Lease: %s", error)

    def describe(self) -> dict[str, Any]:
        """What the standby's health endpoint reports."""
        return {"leader": self.leading, "identity": self.identity, "holder": self.holder}


def exit_on_lost(reason: str) -> NoReturn:
    """End the process at once: a leader without its Lease must not make one more request."""
    logger.critical("Lost the leader Lease (%s): exiting so that only the new leader acts.", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(LEASE_LOST_EXIT_CODE)


@contextmanager
def standby_health(endpoint: str | None, describe: Callable[[], dict[str, Any]]) -> Iterator[None]:
    """Answer Kopf's liveness ``endpoint`` (200, JSON) while standing by; closed before Kopf serves it."""
    if not endpoint:
        yield
        return
    parts = urlsplit(endpoint)
    path = parts.path or "/"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path.split("?", 1)[0] == path
            body = json.dumps({"standby": describe()} if found else {}).encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Probes every few seconds are not worth a log line."""

    server = ThreadingHTTPServer((parts.hostname or "0.0.0.0", parts.port or 80), Handler)
    thread = threading.Thread(target=server.serve_forever, name="standby-health", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

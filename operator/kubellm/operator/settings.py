"""The operator's one settings object, built in :func:`kubellm.operator.__main__.main` and passed down.

Every field can be set by a command-line flag (``--wait-seconds``) or an environment variable
(``KUBELLM_OPERATOR_WAIT_SECONDS``); flags win. Nothing is parsed at import time.

Several replicas (``--leader-election``): only the replica holding the Lease
``--lease-namespace``/``--lease-name`` runs Kopf; the others open no watch and write nothing
until they hold it (:mod:`kubellm.operator.leader`). A standby takes over once the Lease has not
been renewed for ``--lease-duration-seconds`` (at once when the leader exits cleanly and hands it
back); a leader that cannot renew within ``--renew-deadline-seconds`` exits. Without it (one
replica, Deployment strategy ``Recreate``) Kopf starts at once. Kopf itself always runs
standalone: its own peering lets two replicas act at once for a moment, which the Lease does not.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ENV_PREFIX", "OperatorSettings", "default_image", "parse_settings"]

ENV_PREFIX = "KUBELLM_OPERATOR_"
IMAGE_REPOSITORY = "ghcr.io/kubellm/runtime"


def default_image() -> str:
    """``ghcr.io/kubellm/runtime:<package version>``: the runtime image matching this operator."""
    try:
        tag = version("kubellm")
    except PackageNotFoundError:  # pragma: no cover - only in a source tree without metadata
        tag = "0.1.0"
    return f"{IMAGE_REPOSITORY}:{tag}"


class OperatorSettings(BaseModel):
    """What the operator process needs to know; immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = Field(default=(), description="Namespaces to watch; empty means cluster-wide.")
    image: str = Field(default_factory=default_image, description="Runtime image when a spec sets none.")
    field_manager: str = Field(default="kubellm-operator", description="Server-side apply field manager.")
    wait_seconds: float = Field(default=15.0, gt=0, description="Retry delay while waiting on another object.")
    error_backoff_seconds: float = Field(default=10.0, gt=0, description="Retry delay after an unexpected error.")
    workers: int = Field(default=16, ge=1, description="Threads running the (synchronous) handlers.")
    liveness_endpoint: str | None = Field(
        default="http://0.0.0.0:8080/healthz", description="Health URL: Kopf's, answered by a standby too."
    )
    metrics_port: int | None = Field(default=9090, ge=0, le=65_535, description="Prometheus port; 0 disables it.")
    server_timeout: int = Field(default=300, gt=0, description="Watch duration the API server is asked for.")
    client_timeout: float = Field(default=330.0, gt=0, description="Client-side cut-off of a stalled watch.")
    connect_timeout: float = Field(default=30.0, gt=0, description="TCP connect timeout of watches.")
    api_retry_seconds: float = Field(
        default=600.0, gt=0, description="How long a failing API request (a watch too) is retried before giving up."
    )
    leader_election: bool = Field(
        default=False, description="Run Kopf only while holding the leader Lease (several replicas); off: at once."
    )
    lease_name: str = Field(default="kubellm-operator", min_length=1, description="Name of the leader Lease.")
    lease_namespace: str | None = Field(
        default=None, description="Namespace of the leader Lease (the operator's own); required with leader election."
    )
    lease_identity: str | None = Field(
        default=None, description="This replica's name in the Lease; unset: $POD_NAME (else the host name) + a suffix."
    )
    lease_duration_seconds: int = Field(
        default=15, ge=2, description="Seconds a standby waits after the Lease's last renewal before taking it over."
    )
    renew_deadline_seconds: float = Field(
        default=10.0, gt=0, description="Seconds a leader goes without renewing before it exits (< lease duration)."
    )
    retry_period_seconds: float = Field(
        default=2.0, gt=0, description="Seconds between attempts to acquire or renew the Lease (< renew deadline)."
    )

    @model_validator(mode="after")
    def _check_lease(self) -> OperatorSettings:
        if self.leader_election and not self.lease_namespace:
            raise ValueError("leader election needs --lease-namespace (the operator's own namespace)")
        if not self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError("need --retry-period-seconds < --renew-deadline-seconds < --lease-duration-seconds")
        return self

    @property
    def clusterwide(self) -> bool:
        """Whether the operator watches every namespace."""
        return not self.namespaces


_FLAGS: dict[str, type] = {
    "image": str,
    "field_manager": str,
    "wait_seconds": float,
    "error_backoff_seconds": float,
    "workers": int,
    "liveness_endpoint": str,
    "metrics_port": int,
    "server_timeout": int,
    "client_timeout": float,
    "connect_timeout": float,
    "api_retry_seconds": float,
    "leader_election": bool,
    "lease_name": str,
    "lease_namespace": str,
    "lease_identity": str,
    "lease_duration_seconds": int,
    "renew_deadline_seconds": float,
    "retry_period_seconds": float,
}


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags, one per setting."""
    parser = argparse.ArgumentParser(prog="python -m kubellm.operator", description="The kubellm operator.")
    parser.add_argument(
        "-n", "--namespace", dest="namespaces", action="append", help="watch this namespace (repeatable)"
    )
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    for name, kind in _FLAGS.items():
        description = OperatorSettings.model_fields[name].description
        flag = f"--{name.replace('_', '-')}"
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, help=description)
        else:
            parser.add_argument(flag, dest=name, type=kind, help=description)
    return parser


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> OperatorSettings:
    """Settings from flags, then ``KUBELLM_OPERATOR_*`` variables, then defaults."""
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    values: dict[str, object] = {
        name[len(ENV_PREFIX) :].lower(): value for name, value in env.items() if name.startswith(ENV_PREFIX)
    }
    namespaces = values.pop("namespaces", None)
    if isinstance(namespaces, str) and namespaces:
        values["namespaces"] = tuple(namespaces.split(","))
    values.update({name: getattr(args, name) for name in _FLAGS if getattr(args, name) is not None})
    if args.namespaces:
        values["namespaces"] = tuple(args.namespaces)
    if args.all_namespaces:
        values["namespaces"] = ()
    return OperatorSettings.model_validate(values)

"""The operator's one settings object, built in :func:`kubellm.operator.__main__.main` and passed down.

Every field can be set by a command-line flag (``--wait-seconds``) or an environment variable
(``KUBELLM_OPERATOR_WAIT_SECONDS``); flags win. Nothing is parsed at import time.

Peering (several operator replicas): by default the operator runs ``standalone`` (one replica,
Deployment strategy ``Recreate``). To run several replicas, pass ``--peering NAME``: Kopf then
lets only the live replica with the highest ``--priority`` act; the others stand by with their
watches closed and take over once its keep-alive record in the peering object is older than
``--peering-lifetime`` seconds (at once when it exits cleanly). Replicas of one Deployment
share their flags, and Kopf pauses *every* replica when two have the same priority, so an
unset priority is a random one per process. Kopf has no per-object locks: for one moment when
a higher-priority replica starts, both may act; applies are idempotent, so at worst one pass
runs twice. It needs the ``kopf.dev`` peering CRDs and the peering object (a ``KopfPeering``
in each watched namespace, or a ``ClusterKopfPeering`` when cluster-wide): the operator refuses
to start without it, since Kopf would otherwise wait silently forever.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel, ConfigDict, Field

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
    liveness_endpoint: str | None = Field(default="http://0.0.0.0:8080/healthz", description="Kopf health URL.")
    metrics_port: int | None = Field(default=9090, ge=0, le=65_535, description="Prometheus port; 0 disables it.")
    server_timeout: int = Field(default=300, gt=0, description="Watch duration the API server is asked for.")
    client_timeout: float = Field(default=330.0, gt=0, description="Client-side cut-off of a stalled watch.")
    connect_timeout: float = Field(default=30.0, gt=0, description="TCP connect timeout of watches.")
    api_retry_seconds: float = Field(
        default=600.0, gt=0, description="How long a failing API request (a watch too) is retried before giving up."
    )
    peering: str | None = Field(default=None, description="Kopf peering name; None runs standalone.")
    priority: int | None = Field(
        default=None, description="Kopf peering priority of this replica; unset: a random one (distinct per replica)."
    )
    peering_lifetime: int = Field(
        default=60, ge=2, description="Seconds a replica's keep-alive is trusted; then a crashed leader is replaced."
    )

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
    "peering": str,
    "priority": int,
    "peering_lifetime": int,
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
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=description)
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

"""How a runtime pod reports back to the operator: merge-patching its own report ConfigMap.

The operator gives each FineTuneJob and PromptExperiment pod a ServiceAccount allowed to
``get`` and ``patch`` exactly one ConfigMap, and names it in ``KUBELLM_REPORT_CONFIGMAP``
(namespace in ``KUBELLM_NAMESPACE``). The pod patches JSON documents into that ConfigMap's
``data`` (``status.json`` while it runs; ``result.json`` and ``report.md`` when an experiment
ends) and the operator copies the known fields into the resource's status.

The API server is reached the way every in-cluster client does: ``KUBERNETES_SERVICE_HOST`` /
``KUBERNETES_SERVICE_PORT`` and the mounted ServiceAccount token and CA
(``KUBELLM_SERVICEACCOUNT_DIR`` overrides the mount folder, for tests). The token is read on each
call because projected tokens rotate. Outside a cluster (no ConfigMap named) nothing is sent,
unless ``KUBELLM_REPORT_DIR`` names a folder: then each document is written there as a file
(what ``kubellm run`` reads to show status without a cluster).

Reporting never stops the work it reports on: a failed patch is retried, then logged.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

__all__ = [
    "STATUS_KEY",
    "ConfigMapReporter",
    "DirectoryReporter",
    "NullReporter",
    "Reporter",
    "ThrottledStatus",
    "reporter_from_env",
]

STATUS_KEY = "status.json"
SERVICEACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_RETRY_DELAYS = (0.5, 2.0)

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Where a pod's progress and results go."""

    def publish(self, files: Mapping[str, str]) -> bool:
        """Store ``files`` (name -> text); True when they arrived."""
        ...  # pragma: no cover


class NullReporter:
    """Outside a cluster: reports stay in the local output folder only."""

    def publish(self, files: Mapping[str, str]) -> bool:
        """Accept and drop ``files``."""
        return True


@dataclass(frozen=True)
class DirectoryReporter:
    """Outside a cluster: each document becomes a file of one folder, replaced atomically."""

    folder: Path

    def publish(self, files: Mapping[str, str]) -> bool:
        """Write ``files`` into the folder; False (and a warning) if the disk refused."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                partial = self.folder / f".{name}.partial"
                partial.write_text(text)
                partial.replace(self.folder / name)
        except OSError as error:
            log.warning("could not write the report into %s: %s", self.folder, error)
            return False
        return True


@dataclass(frozen=True)
class ConfigMapReporter:
    """Merge-patches ``data`` of one ConfigMap with the pod's own ServiceAccount token."""

    api_url: str
    namespace: str
    name: str
    token_file: Path
    ca_file: Path
    timeout: float = 10.0

    @property
    def url(self) -> str:
        """The ConfigMap's API path."""
        return f"{self.api_url}/api/v1/namespaces/{self.namespace}/configmaps/{self.name}"

    def publish(self, files: Mapping[str, str]) -> bool:
        """Patch ``files`` into the ConfigMap, retrying briefly; False (and a warning) if it failed."""
        for delay in (*_RETRY_DELAYS, None):
            error = self._patch(files)
            if error is None:
                return True
            if delay is None:
                log.warning("could not report to configmap %s/%s: %s", self.namespace, self.name, error)
                return False
            time.sleep(delay)
        return False  # pragma: no cover - the loop always returns

    def _patch(self, files: Mapping[str, str]) -> str | None:
        headers = {
            "Authorization": f"Bearer {self.token_file.read_text().strip()}",
            "Content-Type": "application/merge-patch+json",
        }
        try:
            verify = ssl.create_default_context(cafile=str(self.ca_file))
            with httpx.Client(verify=verify, timeout=self.timeout) as client:
                response = client.patch(self.url, headers=headers, content=json.dumps({"data": dict(files)}))
        except (httpx.HTTPError, OSError, ssl.SSLError) as error:
            return str(error)
        if response.is_success:
            return None
        return f"HTTP {response.status_code}: {response.text[:300]}"


def reporter_from_env(environ: Mapping[str, str] | None = None) -> Reporter:
    """The reporter the pod's environment asks for (outside a cluster: a folder, or nothing)."""
    env = os.environ if environ is None else environ
    name = env.get("KUBELLM_REPORT_CONFIGMAP", "")
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    if not name or not host:
        folder = env.get("KUBELLM_REPORT_DIR", "")
        return DirectoryReporter(Path(folder)) if folder else NullReporter()
    sa_dir = Path(env.get("KUBELLM_SERVICEACCOUNT_DIR", str(SERVICEACCOUNT_DIR)))
    namespace = env.get("KUBELLM_NAMESPACE") or (sa_dir / "namespace").read_text().strip()
    host = f"[{host}]" if ":" in host else host
    return ConfigMapReporter(
        api_url=f"https://{host}:{env.get('KUBERNETES_SERVICE_PORT', '443')}",
        namespace=namespace,
        name=name,
        token_file=sa_dir / "token",
        ca_file=sa_dir / "ca.crt",
    )


@dataclass
class ThrottledStatus:
    """Publishes ``status.json`` when it changed, at most every ``interval`` seconds unless ``final``."""

    reporter: Reporter
    interval: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _last: float | None = field(default=None, init=False)
    _sent: str = field(default="", init=False)

    def update(self, status: Mapping[str, Any], *, final: bool = False) -> bool:
        """Report ``status`` (camelCase, a partial status of the resource's kind) if new and due."""
        payload = json.dumps(dict(status), sort_keys=True, default=str)
        now = self.clock()
        if payload == self._sent or (not final and self._last is not None and now - self._last < self.interval):
            return False
        self._last = now
        if not self.reporter.publish({STATUS_KEY: payload}):
            return False
        self._sent = payload
        return True

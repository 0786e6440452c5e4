"""A pod's one container, run as a local ``kubellm`` process (the local stand-in for the kubelet).

Volumes become folders of the work folder: the config ConfigMap is written into the pod's
``config/``, another ConfigMap's keys (from the manifests) into the pod's ``<volume name>/``,
emptyDirs into the pod's folder (the model cache is shared by all pods), a
PersistentVolumeClaim is ``pvc/<claim>/``. Every argument and environment value that starts
with a mount path is rewritten to the folder behind it, and so is every such path in the run
document (a dataset file the operator mounted). Environment variables come from the
container (``secretKeyRef`` from the Secrets among the manifests, ``fieldRef`` namespace),
on top of the user's environment without any in-cluster API address. The runtime reports into
the pod's ``report/`` folder (``KUBELLM_REPORT_DIR``) instead of a ConfigMap.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubellm.contract.training import DDP_BACKEND_ENV, DISTRIBUTED_LAUNCHER
from kubellm.operator.manifests.common import CACHE_DIR, PVC_ROOT

__all__ = ["LocalPod", "PodError", "WorkFolder"]

STOP_GRACE_SECONDS = 10.0
CLUSTER_ONLY_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBELLM_REPORT_CONFIGMAP")


class PodError(Exception):
    """A pod that cannot start locally (a missing Secret, an unknown volume)."""


@dataclass(frozen=True)
class WorkFolder:
    """Where local runs keep their state: ``pvc/<claim>``, ``cache/`` and one folder per pod."""

    root: Path

    @property
    def pvc_root(self) -> Path:
        """Stands for the PVC mount root of the pods."""
        return self.root / "pvc"

    @property
    def cache(self) -> Path:
        """The model/download cache every pod shares."""
        return self.root / "cache"

    def pod(self, kind: str, name: str) -> Path:
        """A fresh folder for one pod (a rerun starts clean, as a new pod would)."""
        folder = self.root / kind.lower() / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder


CONFIG_VOLUME = "config"


def _volume_folder(volume: Mapping[str, Any], pod_dir: Path, work: WorkFolder) -> Path:
    if "persistentVolumeClaim" in volume:
        return work.pvc_root / str(volume["persistentVolumeClaim"]["claimName"])
    if "configMap" in volume:
        return pod_dir / "config" if volume["name"] == CONFIG_VOLUME else pod_dir / str(volume["name"])
    if "emptyDir" in volume:
        return work.cache if volume["name"] == "cache" else pod_dir / volume["name"]
    raise PodError(f"volume {volume.get('name')} of an unsupported type: {sorted(volume)}")


def mount_map(pod_spec: Mapping[str, Any], pod_dir: Path, work: WorkFolder) -> dict[str, Path]:
    """Mount path -> local folder, for the container's mounts (and the PVC root)."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    container = pod_spec["containers"][0]
    mapping = {PVC_ROOT: work.pvc_root, CACHE_DIR: work.cache}
    for mount in container.get("volumeMounts", []):
        mapping[mount["mountPath"]] = _volume_folder(volumes[mount["name"]], pod_dir, work)
    return mapping


def translate(value: str, mapping: Mapping[str, Path]) -> str:
    """``value`` with a leading mount path replaced by its local folder (longest match first)."""
    for prefix in sorted(mapping, key=len, reverse=True):
        if value == prefix or value.startswith(prefix + "/"):
            return str(mapping[prefix]) + value[len(prefix) :]
    return value


def translate_document(text: str, mapping: Mapping[str, Path]) -> str:
    """A JSON run document with every string that is a mounted path rewritten (other text is left as is)."""
    try:
        document = json.loads(text)
    except ValueError:
        return text
    translated = _translate_strings(document, mapping)
    return text if translated == document else json.dumps(translated, indent=2, sort_keys=True)


def _translate_strings(value: Any, mapping: Mapping[str, Path]) -> Any:
    if isinstance(value, dict):
        return {key: _translate_strings(item, mapping) for key, item in value.items()}
    if isinstance(value, list):
        return [_translate_strings(item, mapping) for item in value]
    if isinstance(value, str) and value.startswith("/"):
        return translate(value, mapping)
    return value


def _standalone_torchrun(args: list[str]) -> list[str]:
    """A distributed pod's launcher args, as one machine runs them: ``--standalone``, every process here.

    ``nodes x processesPerNode`` processes on this machine (a local rendezvous, no pod 0 to
    reach), through the pods' launcher (torchrun keeping the bad-input exit codes), running the
    same module and arguments as the pods.
    """
    nodes = int(args[args.index("--nnodes") + 1])
    per_node = int(args[args.index("--nproc-per-node") + 1])
    script = args[args.index("-m") :]
    return ["-m", DISTRIBUTED_LAUNCHER, "--standalone", "--nproc-per-node", str(nodes * per_node), *script]


def _env_value(
    entry: Mapping[str, Any], namespace: str, secrets: Mapping[tuple[str, str], Mapping[str, str]]
) -> str | None:
    source = entry.get("valueFrom")
    if source is None:
        return str(entry.get("value", ""))
    if "fieldRef" in source:
        return namespace if source["fieldRef"]["fieldPath"] == "metadata.namespace" else None
    ref = source.get("secretKeyRef")
    if ref is None:
        raise PodError(f"env {entry['name']}: only value, fieldRef and secretKeyRef are supported locally")
    value = secrets.get((namespace, ref["name"]), {}).get(ref["key"])
    if value is None and not ref.get("optional"):
        raise PodError(
            f"env {entry['name']} needs key {ref['key']!r} of Secret {ref['name']}: add the Secret to the manifests"
        )
    return value


@dataclass
class LocalPod:
    """One container of a pod spec, run as ``python -m kubellm.cli <args>``."""

    name: str
    pod_spec: Mapping[str, Any]
    config: Mapping[str, str]
    folder: Path
    work: WorkFolder
    namespace: str
    secrets: Mapping[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)
    config_maps: Mapping[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def report_dir(self) -> Path:
        """Where the runtime's report documents land."""
        return self.folder / "report"

    @property
    def log_file(self) -> Path:
        """The container's stdout and stderr."""
        return self.folder / "pod.log"

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The command line and environment the container gets locally."""
        mapping = mount_map(self.pod_spec, self.folder, self.work)
        container = self.pod_spec["containers"][0]
        args = [translate(a, mapping) for a in container.get("args", [])]
        env = {k: v for k, v in os.environ.items() if k not in CLUSTER_ONLY_ENV}
        for entry in container.get("env", []):
            value = _env_value(entry, self.namespace, self.secrets)
            if value is not None:
                env[entry["name"]] = translate(value, mapping)
        env.update(KUBELLM_REPORT_DIR=str(self.report_dir), PYTHONUNBUFFERED="1")
        if container.get("command", [])[-1:] == [DISTRIBUTED_LAUNCHER]:  # distributed: gloo, this machine's CPUs
            env[DDP_BACKEND_ENV] = "gloo"
            return [sys.executable, *_standalone_torchrun(args), *self.extra_args], env
        return [sys.executable, "-m", "kubellm.cli", *args, *self.extra_args], env

    def _prepare(self) -> None:
        mapping = mount_map(self.pod_spec, self.folder, self.work)
        for folder in set(mapping.values()):
            folder.mkdir(parents=True, exist_ok=True)
        for key, text in self.config.items():
            (self.folder / "config" / key).write_text(translate_document(text, mapping))
        for volume in self.pod_spec.get("volumes", []):
            if "configMap" in volume and volume["name"] != CONFIG_VOLUME:
                self._write_config_map(volume)

    def _write_config_map(self, volume: Mapping[str, Any]) -> None:
        """A ConfigMap volume's keys (all, or its items) as files, as the kubelet would project them."""
        name = volume["configMap"]["name"]
        data = self.config_maps.get((self.namespace, name))
        if data is None:
            raise PodError(f"volume {volume['name']} needs ConfigMap {name}: add it to the manifests")
        items = volume["configMap"].get("items") or [{"key": key, "path": key} for key in data]
        folder = self.folder / volume["name"]
        for item in items:
            if item["key"] not in data:
                raise PodError(f"volume {volume['name']} needs key {item['key']!r} of ConfigMap {name}")
            (folder / item["path"]).parent.mkdir(parents=True, exist_ok=True)
            (folder / item["path"]).write_text(data[item["key"]])

    def start(self) -> LocalPod:
        """Write the config, make the folders, start the process (output into ``pod.log``)."""
        argv, env = self.command()
        self._prepare()
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        return self

    def poll(self) -> int | None:
        """The exit code once the process ended, else None."""
        return None if self.process is None else self.process.poll()

    def report(self) -> dict[str, str]:
        """The report documents written so far (like the report ConfigMap's ``data``)."""
        if not self.report_dir.is_dir():
            return {}
        return {p.name: p.read_text() for p in self.report_dir.iterdir() if p.is_file() and not p.name.startswith(".")}

    def stop(self) -> None:
        """TERM the process group, KILL it if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 15) -> list[str]:
        """The last lines of the log, JSON log records shown as their message."""
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [_readable(line) for line in text[-lines:]]


def _readable(line: str) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    return str(record.get("message") or record.get("error") or line)

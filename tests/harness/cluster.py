"""A real, throw-away Kubernetes control plane for tests, without containers.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes whose pods
run and whose Job pods complete) start on 127.0.0.1 with free ports in a fresh work folder.
Every process runs in its own process group and is stopped with it; when the harness runs
in the foreground, its children also die with it (``PR_SET_PDEATHSIG``), so a killed test
run leaves no strays.

By hand: ``python -m tests.harness.cluster up --dir .cluster`` (``make cluster-up``) starts it
in the background and writes ``.cluster/kubeconfig``; ``... down --dir .cluster`` stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.harness.pki import Pki, make_pki, write_kubeconfig

__all__ = [
    "Cluster",
    "ClusterError",
    "binaries_dir",
    "free_port",
    "restart_components",
    "running_cluster",
    "start_cluster",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKDIR_PREFIX = "kubellm-cluster-"
SERVICE_CIDR = "10.0.0.0/16"
POD_CIDR = "10.244.0.0/16"
KWOK_STAGES = (
    "node-initialize",
    "node-heartbeat-with-lease",
    "pod-ready",
    "pod-complete",
    "pod-delete",
    "pvc-provision",
    "pv-bind",
    "pvc-delete",
    "pv-delete",
)
NODE_LEASE_SECONDS = 40
# Names for the fake nodes; the GPU node advertises nvidia.com/gpu so GPU specs can schedule.
NODES: tuple[tuple[str, dict[str, str]], ...] = (
    ("kwok-node-0", {}),
    ("kwok-node-1", {}),
    ("kwok-gpu-0", {"nvidia.com/gpu": "4"}),
)


class ClusterError(RuntimeError):
    """The control plane could not be built, started or reached; the message says where to look."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binaries_dir() -> Path:
    """Build (once, cached) and locate the control-plane binaries.

    ``KUBELLM_CLUSTER_BIN`` points at a ready folder and skips the build script.
    """
    preset = os.environ.get("KUBELLM_CLUSTER_BIN")
    if preset:
        return Path(preset)
    script = Path(__file__).with_name("cluster-binaries.sh")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"building the cluster binaries failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Component:
    """One running process of the control plane."""

    name: str
    pid: int
    log: Path
    # Kept so the child is reaped by its owner (and Popen does not warn that it still runs).
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    # How it was started, so it can be started again the same way (same ports, same data).
    args: tuple[str, ...] = field(default=(), repr=False, compare=False)
    detach: bool = field(default=False, repr=False, compare=False)


@dataclass
class Cluster:
    """A started control plane: where it lives and how to talk to it."""

    workdir: Path
    bin_dir: Path
    kubeconfig: Path
    server: str
    components: list[Component] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm/clients pointed at this cluster only."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        # kubectl's discovery cache per cluster: ports repeat across runs, caches must not.
        env["KUBECACHEDIR"] = str(self.workdir / "kube-cache")
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["HELM_CACHE_HOME"] = str(self.workdir / "helm" / "cache")
        env["HELM_CONFIG_HOME"] = str(self.workdir / "helm" / "config")
        env["HELM_DATA_HOME"] = str(self.workdir / "helm" / "data")
        return env

    def run(
        self, tool: str, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl``/``helm`` (the harness's own builds) against this cluster."""
        cmd = [str(self.bin_dir / tool), *args]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, env=self.env(), timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl with this cluster's kubeconfig."""
        return self.run("kubectl", *args, input=input, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run helm with this cluster's kubeconfig and private helm folders."""
        return self.run("helm", *args, check=check, timeout=timeout)

    def pids(self) -> list[int]:
        """Process ids of the components."""
        return [c.pid for c in self.components]

    def state(self) -> dict[str, object]:
        """What ``down`` needs to find this cluster again."""
        return {
            "workdir": str(self.workdir),
            "bin_dir": str(self.bin_dir),
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "components": [{"name": c.name, "pid": c.pid, "log": str(c.log)} for c in self.components],
        }


def _spawn(cluster: Cluster, name: str, args: Sequence[str], *, detach: bool) -> None:
    log = cluster.workdir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(cluster.bin_dir / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # The harness starts processes before any test threads; prctl is async-signal-safe.
            preexec_fn=None if detach else _die_with_parent,  # noqa: PLW1509
            cwd=cluster.workdir,
        )
    component = Component(name=name, pid=proc.pid, log=log, process=proc, args=tuple(args), detach=detach)
    cluster.components.append(component)


def _wait(what: str, probe: Callable[[], bool], cluster: Cluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(cluster)
        try:
            if probe():
                return
        except (OSError, subprocess.SubprocessError, ssl.SSLError):
            pass
        time.sleep(0.25)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {cluster.workdir / 'logs'}")


def _check_alive(cluster: Cluster) -> None:
    for comp in cluster.components:
        if not _component_alive(comp):
            tail = comp.log.read_text(errors="replace")[-3000:]
            raise ClusterError(f"{comp.name} exited; last log lines:\n{tail}")


def _component_alive(comp: Component) -> bool:
    if comp.process is not None:
        return comp.process.poll() is None
    return _pid_alive(comp.pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _https_ok(url: str, pki: Pki) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
        return bool(resp.status == 200)


def _start_etcd(cluster: Cluster, *, detach: bool) -> str:
    client, peer = free_port(), free_port()
    client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    _spawn(
        cluster,
        "etcd",
        [
            "--name=default",
            f"--data-dir={cluster.workdir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
        detach=detach,
    )
    _wait("etcd", lambda: urllib.request.urlopen(f"{client_url}/health", timeout=2).status == 200, cluster, 60)
    return client_url


def _start_apiserver(cluster: Cluster, pki: Pki, etcd_url: str, port: int, *, detach: bool) -> None:
    _spawn(
        cluster,
        "kube-apiserver",
        [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={cluster.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=0",
        ],
        detach=detach,
    )
    _wait("kube-apiserver /readyz", lambda: _https_ok(f"{cluster.server}/readyz", pki), cluster, 120)


def _start_controllers(cluster: Cluster, pki: Pki, *, detach: bool) -> None:
    common = [f"--kubeconfig={cluster.kubeconfig}", "--bind-address=127.0.0.1", "--leader-elect=false"]
    _spawn(
        cluster,
        "kube-controller-manager",
        [
            *common,
            f"--secure-port={free_port()}",
            f"--authentication-kubeconfig={cluster.kubeconfig}",
            f"--authorization-kubeconfig={cluster.kubeconfig}",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-account-private-key-file={pki.sa_key}",
            "--use-service-account-credentials=true",
            f"--cluster-cidr={POD_CIDR}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ],
        detach=detach,
    )
    _spawn(
        cluster,
        "kube-scheduler",
        [
            *common,
            f"--secure-port={free_port()}",
            f"--authentication-kubeconfig={cluster.kubeconfig}",
            f"--authorization-kubeconfig={cluster.kubeconfig}",
        ],
        detach=detach,
    )


def _start_kwok(cluster: Cluster, *, detach: bool) -> None:
    stages = sorted((cluster.bin_dir / "kwok-stages").glob("*.yaml"))
    wanted = [s for s in stages if s.stem in KWOK_STAGES]
    if len(wanted) != len(KWOK_STAGES):
        raise ClusterError(f"kwok stage files missing in {cluster.bin_dir / 'kwok-stages'}: need {KWOK_STAGES}")
    _spawn(
        cluster,
        "kwok",
        [
            f"--kubeconfig={cluster.kubeconfig}",
            "--manage-all-nodes=true",
            # Node Leases are the heartbeat the node lifecycle controller trusts; without them
            # it marks every node NotReady ~50 s after start, and kwok never makes those pods
            # Ready again (the pod-ready stage only handles Pending pods).
            f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
            *[f"--config={s}" for s in wanted],
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            f"--server-address=127.0.0.1:{free_port()}",
        ],
        detach=detach,
    )


def node_manifest(name: str, extra_capacity: dict[str, str]) -> dict[str, object]:
    """A Node object for kwok to manage (pure)."""
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "500Gi", **extra_capacity}
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    if "nvidia.com/gpu" in extra_capacity:
        labels["nvidia.com/gpu.present"] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
        "spec": {},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def _register_nodes(cluster: Cluster) -> None:
    docs = [node_manifest(name, cap) for name, cap in NODES]
    # kwok's default StorageClass, so PersistentVolumeClaims bind (its pvc-provision stage).
    docs.append(yaml.safe_load((cluster.bin_dir / "kwok-stages" / "storage-class.yaml").read_text()))
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def _nodes_ready(cluster: Cluster) -> bool:
    out = cluster.kubectl("get", "nodes", "-o", "json", check=False)
    if out.returncode != 0:
        return False
    items = json.loads(out.stdout)["items"]
    ready = [n for n in items if _condition_true(n, "Ready")]
    return len(ready) == len(NODES)


def _condition_true(obj: dict[str, Any], kind: str) -> bool:
    conditions = obj.get("status", {}).get("conditions", [])
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


def _default_sa_exists(cluster: Cluster) -> bool:
    return cluster.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0


def start_cluster(workdir: Path | None = None, *, detach: bool = False, bin_dir: Path | None = None) -> Cluster:
    """Start the whole control plane and wait until nodes are Ready; stop it again on failure."""
    bins = bin_dir or binaries_dir()
    work = workdir or Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cluster = Cluster(workdir=work, bin_dir=bins, kubeconfig=work / "kubeconfig", server=f"https://127.0.0.1:{port}")
    try:
        pki = make_pki(work / "pki")
        write_kubeconfig(cluster.kubeconfig, cluster.server, pki)
        etcd_url = _start_etcd(cluster, detach=detach)
        _start_apiserver(cluster, pki, etcd_url, port, detach=detach)
        _start_controllers(cluster, pki, detach=detach)
        _start_kwok(cluster, detach=detach)
        _register_nodes(cluster)
        _wait("kwok nodes Ready", lambda: _nodes_ready(cluster), cluster, 120)
        _wait("the default ServiceAccount", lambda: _default_sa_exists(cluster), cluster, 120)
    except BaseException:
        stop_cluster(cluster, keep_logs=True)
        raise
    return cluster


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _reap(components: Sequence[Component], timeout: float) -> list[Component]:
    deadline = time.monotonic() + timeout
    alive = [c for c in components if _component_alive(c)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [c for c in alive if _component_alive(c)]
    return alive


def stop_cluster(cluster: Cluster, *, keep_logs: bool = False) -> None:
    """Stop every component (process groups, TERM then KILL) and remove the work folder.

    With ``keep_logs`` the folder stays so a failed run can be read afterwards.
    """
    components = list(reversed(cluster.components))
    for comp in components:
        _kill_group(comp.pid, signal.SIGTERM)
    for comp in _reap(components, timeout=10):
        _kill_group(comp.pid, signal.SIGKILL)
    _reap(components, timeout=5)
    if keep_logs:
        print(f"[cluster] logs kept in {cluster.workdir / 'logs'}", file=sys.stderr)
    else:
        shutil.rmtree(cluster.workdir, ignore_errors=True)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def _readyz(cluster: Cluster) -> bool:
    return cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=10).returncode == 0


def restart_components(
    cluster: Cluster, names: Sequence[str] = ("etcd", "kube-apiserver"), *, down_seconds: float = 0.0
) -> float:
    """Stop components (SIGTERM, then SIGKILL after 10 s) and start them again, in ``names`` order.

    They come back on the same ports with the same data (etcd's data folder), as after a crash
    or an upgrade of a control-plane node; the other components and clients keep running and
    must reconnect. Waits for etcd's health and the API server's ``/readyz``; returns the seconds
    from the stop until the API server was ready again.
    """
    stopping = [c for c in reversed(cluster.components) if c.name in names]
    started = time.monotonic()
    for comp in stopping:
        _kill_group(comp.pid, signal.SIGTERM)
        if _reap([comp], timeout=10):
            _kill_group(comp.pid, signal.SIGKILL)
            _reap([comp], timeout=5)
        cluster.components.remove(comp)
    time.sleep(down_seconds)
    for comp in reversed(stopping):
        _spawn(cluster, comp.name, comp.args, detach=comp.detach)
        if comp.name == "etcd":
            health = next(a.split("=", 1)[1] for a in comp.args if a.startswith("--listen-client-urls=")) + "/health"
            _wait("etcd", functools.partial(_http_ok, health), cluster, 60)
    _wait("kube-apiserver /readyz", lambda: _readyz(cluster), cluster, 120)
    return time.monotonic() - started


@contextmanager
def running_cluster(workdir: Path | None = None) -> Iterator[Cluster]:
    """Start a control plane for the duration of a ``with`` block."""
    cluster = start_cluster(workdir)
    failed = True
    try:
        yield cluster
        failed = False
    finally:
        stop_cluster(cluster, keep_logs=failed)


def harness_processes(marker: str = WORKDIR_PREFIX) -> list[tuple[int, str]]:
    """Processes whose command line names a harness work folder (for stray checks)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and _pid_alive(int(proc.name)):
            found.append((int(proc.name), cmdline.strip()))
    return found


def _cmd_up(directory: Path) -> int:
    state_file = directory / "state.json"
    if state_file.exists():
        print(f"a cluster is already up (state in {state_file}); run `make cluster-down` first", file=sys.stderr)
        return 1
    started = time.monotonic()
    cluster = start_cluster(directory.resolve() / "run", detach=True)
    shutil.copy(cluster.kubeconfig, directory / "kubeconfig")
    state_file.write_text(json.dumps(cluster.state(), indent=2))
    print(f"control plane up in {time.monotonic() - started:.1f}s: {cluster.server}")
    print(f"export KUBECONFIG={(directory / 'kubeconfig').resolve()}")
    print(f"binaries (kubectl, helm): {cluster.bin_dir}")
    return 0


def _cmd_down(directory: Path) -> int:
    state_file = directory / "state.json"
    if not state_file.exists():
        print(f"no cluster state in {state_file}; nothing to stop")
        return 0
    state = json.loads(state_file.read_text())
    cluster = Cluster(
        workdir=Path(state["workdir"]),
        bin_dir=Path(state["bin_dir"]),
        kubeconfig=Path(state["kubeconfig"]),
        server=state["server"],
        components=[Component(c["name"], c["pid"], Path(c["log"])) for c in state["components"]],
    )
    stop_cluster(cluster)
    state_file.unlink()
    (directory / "kubeconfig").unlink(missing_ok=True)
    print("control plane stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``up``/``down`` a background control plane for hand use."""
    parser = argparse.ArgumentParser(prog="python -m tests.harness.cluster", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "binaries"])
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".cluster", help="state and kubeconfig folder")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    try:
        if args.action == "binaries":
            print(binaries_dir())
            return 0
        return _cmd_up(args.dir) if args.action == "up" else _cmd_down(args.dir)
    except ClusterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

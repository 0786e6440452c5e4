"""The harness's pure parts: certificates, kubeconfig and node manifests."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import yaml

from tests.harness.cluster import NODES, free_port, node_manifest
from tests.harness.pki import make_pki, write_kubeconfig


def test_pki_chain_verifies_and_admin_is_cluster_admin(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    for cert in (pki.serving_cert, pki.admin_cert):
        command = ["openssl", "verify", "-CAfile", str(pki.ca_cert), str(cert)]
        verified = subprocess.run(command, capture_output=True, text=True, check=False)
        assert verified.returncode == 0, verified.stderr
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-in", str(pki.admin_cert)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "O = system:masters" in subject and "CN = admin" in subject
    sans = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(pki.serving_cert)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "IP Address:127.0.0.1" in sans and "DNS:localhost" in sans


def test_kubeconfig_points_at_server_with_absolute_paths(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, "https://127.0.0.1:6443", pki)
    config = yaml.safe_load(path.read_text())
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    user = config["users"][0]["user"]
    assert Path(user["client-certificate"]).is_absolute() and Path(user["client-key"]).exists()


def test_gpu_node_advertises_gpus_and_others_do_not() -> None:
    nodes = {name: node_manifest(name, cap) for name, cap in NODES}
    gpu = nodes["kwok-gpu-0"]
    status = gpu["status"]
    assert isinstance(status, dict)
    assert status["capacity"]["nvidia.com/gpu"] == "4"
    plain = nodes["kwok-node-0"]["status"]
    assert isinstance(plain, dict)
    assert "nvidia.com/gpu" not in plain["capacity"]
    meta = gpu["metadata"]
    assert isinstance(meta, dict)
    assert meta["annotations"] == {"kwok.x-k8s.io/node": "fake"}


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 0 < port < 65536

"""Certificates and kubeconfig for the test control plane, made with the openssl CLI.

A throw-away CA signs the API server's serving certificate (127.0.0.1 / localhost) and an admin
client certificate in ``system:masters``; a separate RSA key pair signs service-account tokens.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["Pki", "make_pki", "write_kubeconfig"]


@dataclass(frozen=True)
class Pki:
    """Paths of the generated key material."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _signed_cert(directory: Path, name: str, subject: str, extensions: str) -> None:
    ext_file = directory / f"{name}.ext"
    ext_file.write_text(extensions)
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=directory)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=directory)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "30", "-out", f"{name}.crt", "-extfile", ext_file.name,
        cwd=directory,
    )  # fmt: skip


def make_pki(directory: Path) -> Pki:
    """Create the CA, serving, admin and service-account keys in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=directory)
    _openssl(
        "req", "-x509", "-new", "-nodes", "-key", "ca.key", "-subj", "/CN=kubellm-test-ca",
        "-days", "30", "-out", "ca.crt", cwd=directory,
    )  # fmt: skip
    _signed_cert(
        directory, "serving", "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,"
        "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1\n",
    )  # fmt: skip
    _signed_cert(
        directory, "admin", "/O=system:masters/CN=admin",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n",
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    return Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "serving.crt",
        serving_key=directory / "serving.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )


def write_kubeconfig(path: Path, server: str, pki: Pki) -> None:
    """Write an admin kubeconfig for ``server`` with absolute certificate paths."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "kubellm-test", "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)}}
        ],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate": str(pki.admin_cert), "client-key": str(pki.admin_key)},
            }
        ],
        "contexts": [{"name": "kubellm-test", "context": {"cluster": "kubellm-test", "user": "admin"}}],
        "current-context": "kubellm-test",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))

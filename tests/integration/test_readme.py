"""Every README snippet marked ``<!-- runnable -->`` runs: shell on the test control plane, Python on a server.

Shell snippets get a kubeconfig whose current namespace is a fresh one, and the cluster's
``kubectl``/``helm`` first on ``PATH``; Python snippets get ``KUBELLM_URL``, the ``/v1`` URL of
a ``kubellm serve`` started the way the README starts it (on a free port).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import Cluster, free_port
from tests.harness.smollm2 import ConvertedModel

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = re.compile(r"<!-- runnable -->\n```(?P<language>\w+)\n(?P<code>.*?)```", re.S)
SNIPPETS = [(m["language"], m["code"]) for m in SNIPPET.finditer((ROOT / "README.md").read_text())]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory, smollm2: ConvertedModel) -> Iterator[str]:
    """``kubellm serve`` as the README starts it (the real model, converted once per session), on a free port."""
    port = free_port()
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("wb")
    command = [sys.executable, "-m", "kubellm.cli", "serve", "--model", smollm2.uri]
    env = {**os.environ, **smollm2.env(), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [*command, "--served-model-name", "smollm2", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        assert process.poll() is None, "the server exited"
        yield f"{url}/v1"
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@pytest.fixture
def shell_env(cluster: Cluster, namespace: str, tmp_path: Path) -> dict[str, str]:
    """The cluster's environment with a kubeconfig whose current namespace is the test's."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(cluster.kubeconfig.read_text())
    env = {**cluster.env(), "KUBECONFIG": str(kubeconfig)}
    subprocess.run(["kubectl", "config", "set-context", "--current", f"--namespace={namespace}"], env=env, check=True)
    env["PATH"] = f"{env['PATH']}{os.pathsep}{Path(sys.executable).parent}"
    return env


def test_the_readme_has_runnable_shell_and_python_snippets() -> None:
    assert {language for language, _ in SNIPPETS} == {"sh", "python"}


@pytest.mark.parametrize("code", [c for lang, c in SNIPPETS if lang == "sh"], ids=lambda c: c.splitlines()[0])
def test_shell_snippet_runs(code: str, shell_env: dict[str, str]) -> None:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=ROOT,
        env=shell_env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.parametrize("code", [c for lang, c in SNIPPETS if lang == "python"], ids=lambda c: c.splitlines()[0])
def test_python_snippet_runs(code: str, server_url: str) -> None:
    env = {**os.environ, "KUBELLM_URL": server_url}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, check=False, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Paris" in result.stdout  # the real model knows
    assert re.search(r"completion_tokens=[1-9]", result.stdout)

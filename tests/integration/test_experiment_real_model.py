"""The example PromptExperiment's prompts on the real SmolLM2, served by ``kubellm serve``, on a few rows.

The variants are the example's own (examples/promptexperiment.yaml), greedy, except that its
chain-of-thought variant gets a budget too small to reach an answer: the run must score the other
variants' real answers above zero and count the chain-of-thought answers as cut off and without
an answer, not report a silent 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kubellm.runtime.experiments import command
from tests.harness.cluster import free_port
from tests.harness.documents import run_document
from tests.harness.smollm2 import ConvertedModel

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "promptexperiment.yaml"
ROWS = 6
SERVED_NAME = "smollm2-base"


@pytest.fixture(scope="module")
def served(smollm2: ConvertedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``kubellm serve`` on the converted model; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    argv = [sys.executable, "-m", "kubellm.cli", "serve", "--model", str(smollm2.folder)]
    argv += ["--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("w") as output:
        server = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_serving(url, server, log)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_until_serving(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"kubellm serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"kubellm serve did not answer within 180 s:\n{log.read_text()[-3000:]}")


def _manifest() -> dict[str, Any]:
    """The example on its first rows, its chain-of-thought variant with a 4-token budget."""
    manifest: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    spec = manifest["spec"]
    spec["dataset"]["rows"] = spec["dataset"]["rows"][:ROWS]
    del spec["optimize"]  # these variants on every row; the quickstart runs the search on the whole example
    reasoning = next(v for v in spec["variants"] if v["style"] == "chainOfThought")
    reasoning["maxTokens"] = 4
    assert spec["target"]["model"] == SERVED_NAME
    return manifest


def test_the_example_prompts_on_the_real_model(served: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(run_document(_manifest())), encoding="utf-8")
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--config", str(config), "--endpoint", served, "--output", str(tmp_path / "out")])
    started = time.monotonic()
    code = command.run(args)
    out = capsys.readouterr().out
    print(f"\n[experiment] {ROWS} rows x 3 variants in {time.monotonic() - started:.0f}s\n{out}")
    assert code == 0

    results = {r["name"]: r for r in json.loads((tmp_path / "out" / "result.json").read_text())["results"]}
    means = {name: {m["name"]: m["mean"] for m in r["metrics"]} for name, r in results.items()}
    assert all(r["samples"] == ROWS and r["errors"] == 0 for r in results.values())
    assert means["zero-shot"]["contains"] > 0  # real answers, scored: not a silent 0
    assert means["few-shot"]["exact"] > 0  # worked examples as earlier turns get bare answers
    assert "unextracted" not in results["zero-shot"]  # it scores the whole answer: nothing to extract
    cut = results["chain-of-thought"]
    assert cut["cutOff"] == ROWS and cut["unextracted"] == ROWS and means["chain-of-thought"]["score"] == 0
    assert f"note: chain-of-thought: {ROWS} of {ROWS} answers were cut off at the token limit (4 tokens)" in out

"""The README's first command, run as written from a clean checkout: each step shows what the README promises.

The checkout is a copy of the project's files (what a clone has: nothing under ``.kubellm/``),
and ``make quickstart`` runs there with the already installed virtualenv (``-o`` keeps make from
reinstalling it). Its output is checked step by step, then that no process it started is left.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)


def _checkout(target: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)  # keeps times: make sees the same up-to-date install
    return target


def _leftovers(marker: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", marker], check=False, capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


def test_the_readme_names_make_quickstart_first() -> None:
    block = re.search(r"## The two commands.*?```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block[1].splitlines()]
    assert commands == ["make quickstart", "make test"]


def test_make_quickstart_trains_serves_and_experiments_from_a_clean_checkout(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path / "kubellm")
    started = time.monotonic()
    result = subprocess.run(
        ["make", "-o", str(VENV / ".installed"), f"VENV={VENV}", "quickstart"],
        cwd=checkout,
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.monotonic() - started
    out = result.stdout
    print(f"\n[quickstart] finished in {elapsed:.0f}s\n{out[-3000:]}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in out + result.stderr

    # 1. fine-tune the real model: data quality, progress rows, the loss dropping, the task score rising
    assert "data quality passed: 240 rows read" in out
    losses = re.search(r"eval loss (\d+\.\d+) -> (\d+\.\d+)", out)
    assert losses is not None and float(losses[2]) < float(losses[1])
    scores = re.search(r"task score \(exact, (\d+) held-out rows\): (\d\.\d+) -> (\d\.\d+)", out)
    assert scores is not None and int(scores[1]) >= 25
    assert float(scores[3]) >= float(scores[2]) + 0.5, scores[0]  # clearly higher, on rows it never trained on
    assert re.search(r"^smollm2-dates\s+True\s+TrainingComplete\s", out, re.M)
    assert (checkout / ".kubellm/pvc/kubellm-models/smollm2-dates/adapter_config.json").is_file()

    # 2. serve: ready, a request, the same request from the cache, the metrics
    assert re.search(r"^smollm2\s+True\s+ReplicasReady\s", out, re.M)
    assert re.search(r"request 1: HTTP 200 .* x-kubellm-cache: miss, \d+ tokens: '1976-07-04'", out)  # on task
    assert re.search(r"request 2: HTTP 200 .* x-kubellm-cache: hit, \d+ tokens: '1976-07-04'", out)
    assert re.search(r"the base model before fine-tuning \('smollm2-base'\): '.+'", out)
    assert re.search(r"metrics: http://127\.0\.0\.1:\d+/metrics \(llm_requests_total 3, llm_cache_hits_total 1", out)

    # 3. experiment: every variant with an interval, the comparisons, the verdict, the saved report
    # on the rows the prompt search held out (64 rows: 13 train, 26 search, 25 held out)
    for variant in ("zero-shot (control)", "few-shot", "chain-of-thought", "optimized"):
        assert re.search(rf"^  {re.escape(variant)}\s+25\s+0\s+\d\.\d+ \[\d\.\d+, \d\.\d+\]", out, re.M), variant
    assert "few-shot vs zero-shot" in out and "optimized vs zero-shot" in out
    assert re.search(r"prompt search: 12 trials on 26 search rows \(13 train rows for examples\): control \d", out)
    report_dir = checkout / ".kubellm/promptexperiment/prompt-styles/report"
    assert yaml.safe_load((report_dir / "optimized-variant.yaml").read_text())["name"] == "optimized"
    assert re.search(r"verdict: (winner [\w-]+|no winner): ", out)
    assert (checkout / ".kubellm/promptexperiment/prompt-styles/report/report.md").read_text().strip()
    assert re.search(r"^prompt-styles\s+True\s+(WinnerDeclared|NoSignificantDifference)\s", out, re.M)

    # 4. what to do next, and nothing left running
    assert "kubectl apply -f examples/" in out
    assert _leftovers(str(checkout)) == []


def test_a_failing_resource_stops_the_run_with_its_reason_and_log(tmp_path: Path) -> None:
    documents = list(yaml.safe_load_all((ROOT / "examples/finetunejob.yaml").read_text()))
    documents[1]["spec"]["dataQuality"]["minRows"] = 1000  # the example has 240
    manifest = tmp_path / "ftj.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    result = subprocess.run(
        [str(VENV / "bin/kubellm"), "run", "-f", str(manifest), "--workdir", str(tmp_path / "state")],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout[-2000:]
    assert "data quality FAILED" in result.stdout
    assert "FineTuneJob smollm2-dates failed: DataQualityCheckFailed" in result.stderr
    assert "last log lines:" in result.stderr
    assert "Traceback" not in result.stderr
    assert _leftovers(str(tmp_path / "state")) == []


def test_ctrl_c_while_serving_stops_the_server(tmp_path: Path) -> None:
    deployment = {
        "apiVersion": "kubellm.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "tiny"},
        "spec": {"model": {"uri": "dummy://llama?hidden_size=32&num_hidden_layers=1&seed=1"}},
    }
    manifest = tmp_path / "mdep.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    state = tmp_path / "state"
    process = subprocess.Popen(
        [str(VENV / "bin/kubellm"), "run", "-f", str(manifest), "--workdir", str(state), "--keep-serving"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "press Ctrl-C to stop" in line:
            break
    assert _leftovers(str(state)), "the server should be running now"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, "".join(lines) + err
    assert "x-kubellm-cache: hit" in "".join(lines)
    assert _leftovers(str(state)) == []

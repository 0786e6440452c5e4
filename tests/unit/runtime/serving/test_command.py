"""``kubellm serve`` settings: file (manifest, spec, operator config, ServingConfig), environment, flags."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from kubellm.runtime.serving import command, logs
from kubellm.runtime.serving import engine as engine_module

MANIFEST = {
    "apiVersion": "kubellm.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "tiny-llama"},
    "spec": {
        "model": {"uri": "dummy://llama?seed=1"},
        "adapters": [{"name": "sql", "uri": "/models/sql"}],
        "replicas": 2,
        "serving": {"quantization": "int8", "limits": {"maxTokens": 64, "maxBatchSize": 4}},
    },
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODEL", "ADAPTER", "CONFIG", "API_KEYS", "API_KEY", "MAX_BATCH_SIZE", "REDIS_URL", "PORT"):
        monkeypatch.delenv(f"KUBELLM_{name}", raising=False)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def _write(tmp_path: Path, document: object, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document) if name.endswith(".yaml") else json.dumps(document))
    return path


def test_a_manifest_gives_model_name_adapters_and_serving(tmp_path: Path) -> None:
    settings = command.build_settings(_args("--config", str(_write(tmp_path, MANIFEST))))
    assert settings.model == "dummy://llama?seed=1"
    assert settings.served_model_name == "tiny-llama"
    assert [(a.name, a.uri) for a in settings.adapters] == [("sql", "/models/sql")]
    assert settings.serving.quantization == "int8"
    assert settings.serving.limits.max_tokens == 64


def test_the_operator_config_and_flags_over_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    operator_config = {"model": {"uri": "/out"}, "servedModelName": "x", "adapters": [], "serving": {}, "port": 8000}
    path = _write(tmp_path, operator_config, "config.json")
    monkeypatch.setenv("KUBELLM_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("KUBELLM_API_KEYS", "a, b")
    monkeypatch.setenv("KUBELLM_REDIS_URL", "redis://cache:6379/0")
    args = _args("--config", str(path), "--max-batch-size", "64", "--adapter", "t=/a", "--port", "9000")
    settings = command.build_settings(args)
    assert (settings.model, settings.served_model_name, settings.port) == ("/out", "x", 9000)
    assert settings.serving.limits.max_batch_size == 64
    assert settings.serving.limits.max_concurrent >= 64
    assert settings.api_keys == ("a", "b")
    assert settings.serving.cache.enabled
    assert settings.adapters[0].name == "t"


def test_redis_flags_turn_the_redis_cache_on_whatever_the_file_says(tmp_path: Path) -> None:
    off = _write(tmp_path, {"model": {"uri": "dummy://llama"}, "serving": {"cache": {"enabled": False}}})
    assert command.build_settings(_args("--config", str(off))).serving.cache.enabled is False
    settings = command.build_settings(
        _args("--config", str(off), "--redis-url", "redis://r:6379/1", "--cache-ttl", "9")
    )
    cache = settings.serving.cache
    assert (cache.enabled, cache.url, cache.ttl_seconds) == (True, "redis://r:6379/1", 9)


def test_a_bare_serving_config_needs_a_model_flag(tmp_path: Path) -> None:
    path = _write(tmp_path, {"quantization": "none", "cache": {"ttlSeconds": 5}})
    settings = command.build_settings(_args("--config", str(path), "--model", "dummy://gpt2"))
    assert (settings.model, settings.serving.cache.ttl_seconds) == ("dummy://gpt2", 5)


@pytest.mark.parametrize(
    ("document", "argv", "expected"),
    [
        (None, ["--model", "dummy://llama", "--adapter", "oops"], "NAME=SOURCE"),
        ({"spec": {"fineTuneJobRef": {"name": "x"}}, "kind": "ModelDeployment"}, [], "no model to serve"),
        ({"quantization": "int3"}, ["--model", "dummy://llama"], "invalid configuration: quantization"),
        ("- a list", ["--model", "dummy://llama"], "expected a mapping"),
        ({"adapters": [{"name": "a", "fineTuneJobRef": {"name": "j"}}]}, ["--model", "m"], "has no uri"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: object, argv: list[str], expected: str
) -> None:
    config = ["--config", str(_write(tmp_path, document))] if document is not None else []
    assert command.run(_args(*config, *argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("kubellm serve: ")
    assert expected in err
    assert err.count("\n") == 1


def test_a_missing_file_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert command.run(_args("--config", str(tmp_path / "nope.yaml"))) == 2
    assert "cannot read" in capsys.readouterr().err


def test_a_model_source_that_cannot_work_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "configure_logging", lambda level: None)  # keep pytest's own log handlers
    assert command.run(_args("--model", "dummy://nosuch")) == 2
    err = capsys.readouterr().err
    assert err.startswith("kubellm serve: cannot load the model: dummy://nosuch: unknown architecture")
    assert err.count("\n") == 1


def test_a_model_that_cannot_load_exits_1(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(settings: object) -> None:
        raise OSError("disk read error")

    monkeypatch.setattr(logs, "configure_logging", lambda level: None)  # keep pytest's own log handlers
    monkeypatch.setattr(engine_module, "load_engine", fail)
    assert command.run(_args("--model", "dummy://llama")) == 1
    assert "cannot load the model: disk read error" in capsys.readouterr().err


def test_torch_threads_leave_a_core_to_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    assert command.default_torch_threads() >= 1
    monkeypatch.setenv("KUBELLM_TORCH_THREADS", "3")
    assert command.build_settings(_args("--model", "dummy://llama")).torch_threads == 3
    assert command.build_settings(_args("--model", "dummy://llama", "--torch-threads", "1")).torch_threads == 1


def test_the_prompt_cap_comes_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert command.build_settings(_args("--model", "dummy://llama")).max_prompt_tokens is None
    assert (
        command.build_settings(_args("--model", "dummy://llama", "--max-prompt-tokens", "300")).max_prompt_tokens == 300
    )
    monkeypatch.setenv("KUBELLM_MAX_PROMPT_TOKENS", "200")
    assert command.build_settings(_args("--model", "dummy://llama")).max_prompt_tokens == 200

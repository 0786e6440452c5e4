"""``kubellm serve`` settings: the run document, then the environment, then the flags."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from kubellm.runtime.serving import command, logs
from kubellm.runtime.serving import engine as engine_module

RUN_DOCUMENT = {
    "model": {"uri": "dummy://llama?seed=1"},
    "servedModelName": "tiny-llama",
    "adapters": [{"name": "sql", "uri": "/models/sql"}],
    "serving": {"quantization": "int8", "limits": {"maxTokens": 64, "maxBatchSize": 4}},
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MODEL",
        "ADAPTER",
        "CONFIG",
        "API_KEYS",
        "API_KEY",
        "MAX_BATCH_SIZE",
        "REDIS_URL",
        "PORT",
        "MAX_PROMPT_TOKENS",
        "TORCH_THREADS",
    ):
        monkeypatch.delenv(f"KUBELLM_{name}", raising=False)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def _write(tmp_path: Path, document: object, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document) if name.endswith(".yaml") else json.dumps(document))
    return path


def test_the_run_document_gives_model_names_adapters_and_serving(tmp_path: Path) -> None:
    settings = command.build_settings(_args("--config", str(_write(tmp_path, RUN_DOCUMENT))))
    assert settings.model.uri == "dummy://llama?seed=1"
    assert settings.served_model_name == "tiny-llama"
    assert [(a.name, a.uri) for a in settings.adapters] == [("sql", "/models/sql")]
    assert settings.serving.quantization == "int8"
    assert settings.serving.limits.max_tokens == 64


def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = {"model": {"uri": "/out"}, "servedModelName": "x", "serving": {"limits": {"maxBatchSize": 2}}}
    path = _write(tmp_path, document, "config.json")
    assert command.build_settings(_args("--config", str(path))).serving.limits.max_batch_size == 2
    monkeypatch.setenv("KUBELLM_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("KUBELLM_API_KEYS", "a, b")
    monkeypatch.setenv("KUBELLM_REDIS_URL", "redis://cache:6379/0")
    assert command.build_settings(_args("--config", str(path))).serving.limits.max_batch_size == 16
    args = _args("--config", str(path), "--max-batch-size", "64", "--adapter", "t=/a", "--port", "9000")
    settings = command.build_settings(args)
    assert (settings.model.uri, settings.served_model_name, settings.port) == ("/out", "x", 9000)
    assert settings.serving.limits.max_batch_size == 64
    assert settings.serving.limits.max_concurrent >= 64
    assert settings.api_keys == ("a", "b")
    assert settings.serving.cache.url == "redis://cache:6379/0"
    assert settings.adapters[0].name == "t"


def test_a_model_flag_replaces_the_whole_source_and_its_revision(tmp_path: Path) -> None:
    document = {"model": {"uri": "hf://org/a", "revision": "v1"}}
    path = _write(tmp_path, document)
    assert command.build_settings(_args("--config", str(path))).model.revision == "v1"
    replaced = command.build_settings(_args("--config", str(path), "--model", "dummy://gpt2")).model
    assert (replaced.uri, replaced.revision) == ("dummy://gpt2", None)


def test_redis_flags_turn_the_redis_cache_on_whatever_the_file_says(tmp_path: Path) -> None:
    off = _write(tmp_path, {"model": {"uri": "dummy://llama"}, "serving": {"cache": {"enabled": False}}})
    assert command.build_settings(_args("--config", str(off))).serving.cache.enabled is False
    settings = command.build_settings(
        _args("--config", str(off), "--redis-url", "redis://r:6379/1", "--cache-ttl", "9")
    )
    cache = settings.serving.cache
    assert (cache.enabled, cache.url, cache.ttl_seconds) == (True, "redis://r:6379/1", 9)


def test_every_flag_is_documented_by_the_field_it_sets() -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    helps = {action.dest: action.help or "" for action in parser._actions}
    assert helps["quantization"].startswith("Weight precision: none (as stored)")  # ServingConfig's description
    assert helps["max_batch_size"].startswith("Sequences decoded together in one batch")
    assert "KUBELLM_MAX_BATCH_SIZE" in helps["max_batch_size"]
    assert "api_keys" not in helps and "redis_password" not in helps  # secrets: environment only


@pytest.mark.parametrize(
    ("document", "argv", "expected"),
    [
        (None, ["--model", "dummy://llama", "--adapter", "oops"], "NAME=SOURCE"),
        ({"servedModelName": "x"}, [], "no model to serve"),
        ({"serving": {"quantization": "int3"}}, ["--model", "dummy://llama"], "serving.quantization: Input should be"),
        ("- a list", ["--model", "dummy://llama"], "expected one mapping"),
        ({"adapters": [{"name": "a", "fineTuneJobRef": {"name": "j"}}]}, ["--model", "/m"], "adapters.0.uri"),
        ({"kind": "ModelDeployment", "spec": {}}, [], "not a run document; run manifests with `kubellm run"),
        (None, ["--engine", "llamacpp", "--model", "hf://org/model"], "serving.engine llamacpp serves a .gguf file"),
        (None, ["--engine", "llamacpp", "--model", "/m.gguf", "--adapter", "a=/a"], "serves no LoRA adapters"),
        (None, ["--engine", "llamacpp", "--model", "/m.gguf", "--quantization", "int8"], "at its own precision"),
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


def test_a_bad_environment_variable_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBELLM_MAX_BATCH_SIZE", "lots")
    assert command.run(_args("--model", "dummy://llama")) == 2
    err = capsys.readouterr().err
    assert "--max-batch-size / KUBELLM_MAX_BATCH_SIZE" in err
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


def test_the_prompt_cap_comes_from_the_serving_limits_flag_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    def cap(*argv: str) -> int | None:
        return command.build_settings(_args("--model", "dummy://llama", *argv)).serving.limits.max_prompt_tokens

    assert cap() is None
    assert cap("--max-prompt-tokens", "300") == 300
    monkeypatch.setenv("KUBELLM_MAX_PROMPT_TOKENS", "200")
    assert cap() == 200
    assert cap("--max-prompt-tokens", "300") == 300

"""Source URIs: hf://, file://, pvc://, plain paths and dummy:// parse into typed sources or clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubellm.runtime.models.sources import (
    DummySource,
    HubSource,
    ModelSourceError,
    PathSource,
    hub_token,
    parse_source,
)


@pytest.mark.parametrize(
    ("uri", "revision", "expected"),
    [
        ("hf://org/name", None, HubSource("hf://org/name", "org/name", None)),
        ("hf://org/name@v1.0", None, HubSource("hf://org/name@v1.0", "org/name", "v1.0")),
        ("hf://gpt2", "abc123", HubSource("hf://gpt2", "gpt2", "abc123")),
        ("hf://org/name@main", "main", HubSource("hf://org/name@main", "org/name", "main")),
    ],
)
def test_hub_uris(uri: str, revision: str | None, expected: HubSource) -> None:
    assert parse_source(uri, revision) == expected


@pytest.mark.parametrize(
    ("uri", "revision", "message"),
    [
        ("hf://", None, "expected hf://<org>/<name>"),
        ("hf://a/b/c", None, "expected hf://<org>/<name>"),
        ("hf://org/", None, "expected hf://<org>/<name>"),
        ("hf://org/name@", None, "empty revision"),
        ("hf://org/name@v1", "v2", "disagrees"),
        ("file:///models/x", "v1", "revision applies only to hf://"),
        ("s3://bucket/model", None, "unknown scheme 's3'"),
        ("pvc://claim/../etc", None, "without '..'"),
        ("pvc:///abs", None, "expected pvc://<claim>"),
        ("dummy://", None, "expected dummy://<name>"),
        ("dummy://llama?seed=1&seed=2", None, "'seed' given twice"),
        ("dummy://llama?novalue", None, "malformed query"),
    ],
)
def test_malformed_uris_say_what_to_write(uri: str, revision: str | None, message: str) -> None:
    with pytest.raises(ModelSourceError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        parse_source(uri, revision)
    assert "\n" not in str(error.value)


def test_paths_plain_and_file_uris() -> None:
    assert parse_source("/models/x") == PathSource("/models/x", Path("/models/x"))
    assert parse_source("relative/dir") == PathSource("relative/dir", Path("relative/dir"))
    assert parse_source("file:///models/x").path == Path("/models/x")  # type: ignore[union-attr]


def test_pvc_uris_map_to_the_mount_root(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_source("pvc://models/llama/v1").path == Path("/mnt/pvc/models/llama/v1")  # type: ignore[union-attr]
    monkeypatch.setenv("KUBELLM_PVC_ROOT", "/data")
    assert parse_source("pvc://models/out").path == Path("/data/models/out")  # type: ignore[union-attr]


def test_dummy_uris_keep_their_options_as_strings() -> None:
    source = parse_source("dummy://llama?hidden_size=64&num_hidden_layers=2&seed=3")
    assert source == DummySource(
        "dummy://llama?hidden_size=64&num_hidden_layers=2&seed=3",
        "llama",
        {"hidden_size": "64", "num_hidden_layers": "2", "seed": "3"},
    )
    assert parse_source("dummy://gpt2") == DummySource("dummy://gpt2", "gpt2", {})


def test_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert hub_token() is None
    monkeypatch.setenv("HF_TOKEN", "hf_model")
    assert hub_token() == "hf_model"
    assert hub_token(dataset=True) == "hf_model"
    monkeypatch.setenv("HF_DATASET_TOKEN", "hf_data")
    assert hub_token(dataset=True) == "hf_data"

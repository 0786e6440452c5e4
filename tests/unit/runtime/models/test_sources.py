"""Source URIs: hf://, file://, pvc://, pkg://, plain paths and dummy:// parse into typed sources or clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kubellm.runtime.models.sources import (
    DummySource,
    HubSource,
    ModelSourceError,
    PathSource,
    cache_root,
    hub_token,
    package_folders,
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
        ("pkg://", None, "expected pkg://<import name>/<path inside the package>"),
        ("pkg://somepkg", None, "expected pkg://<import name>/<path"),
        ("pkg://somepkg/", None, "expected pkg://<import name>/<path"),
        ("pkg://some-pkg/model.gguf", None, "expected pkg://<import name>/<path"),
        ("pkg://somepkg/../etc/passwd", None, "without '..'"),
        ("pkg://somepkg//abs", None, "without '..'"),
        ("pkg://somepkg/model.gguf", "v1", "revision applies only to hf://"),
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


def _package(root: Path, name: str, init: str = "") -> Path:
    """A package folder on ``sys.path`` whose ``__init__`` raises if anything imports it."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(init or "raise RuntimeError('imported')\n")
    (folder / "weights").mkdir()
    (folder / "weights" / "model.gguf").write_bytes(b"GGUF")
    return folder


def test_pkg_uris_name_files_inside_an_installed_package_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _package(tmp_path, "kubellm_fake_models")
    monkeypatch.syspath_prepend(str(tmp_path))
    source = parse_source("pkg://kubellm_fake_models/weights/model.gguf")
    assert source == PathSource("pkg://kubellm_fake_models/weights/model.gguf", folder / "weights" / "model.gguf")
    assert parse_source("pkg://kubellm_fake_models.weights/model.gguf").path == folder / "weights" / "model.gguf"  # type: ignore[union-attr]
    assert parse_source("pkg://kubellm_fake_models/weights").path == folder / "weights"  # type: ignore[union-attr]
    assert "kubellm_fake_models" not in sys.modules


def test_pkg_uris_of_a_namespace_package_look_in_every_portion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for portion in ("a", "b"):
        (tmp_path / portion / "kubellm_ns_models").mkdir(parents=True)
        monkeypatch.syspath_prepend(str(tmp_path / portion))
    (tmp_path / "b" / "kubellm_ns_models" / "model.gguf").write_bytes(b"GGUF")
    assert len(package_folders("kubellm_ns_models")) == 2
    source = parse_source("pkg://kubellm_ns_models/model.gguf")
    assert source == PathSource(
        "pkg://kubellm_ns_models/model.gguf", tmp_path / "b" / "kubellm_ns_models" / "model.gguf"
    )


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "pkg://kubellm_no_such_package/model.gguf",
            "pkg://kubellm_no_such_package/model.gguf: no Python package 'kubellm_no_such_package' is installed",
        ),
        ("pkg://kubellm_fake_models/missing.gguf", "package 'kubellm_fake_models' has no 'missing.gguf' (looked in"),
        ("pkg://kubellm_fake_models.nope/model.gguf", "package 'kubellm_fake_models.nope' has no 'model.gguf'"),
        ("pkg://json/x.gguf", "package 'json' has no 'x.gguf'"),  # a real package of the standard library
        ("pkg://os/x.gguf", "no Python package 'os' is installed"),  # a module, not a package
    ],
)
def test_pkg_uris_say_which_package_or_file_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, message: str
) -> None:
    _package(tmp_path, "kubellm_fake_models")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelSourceError, match=message.replace("(", r"\(")) as error:
        parse_source(uri)
    assert "\n" not in str(error.value)


def test_the_cache_root_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBELLM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "kubellm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "kubellm"
    monkeypatch.setenv("KUBELLM_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"

"""The local Hub answers huggingface_hub as huggingface.co does: files at revisions, typed refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.harness.hub import HubRepository, LocalHub, commit_sha, running_hub

TOKEN = "hf_unit_token"
V1 = commit_sha("v1")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    folder = tmp_path / "repo"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}\n')
    (folder / "sub" / "weights.bin").write_bytes(b"\0" * 1000)
    gated = HubRepository("org/gated", folder, TOKEN, {"v1": V1})
    private = HubRepository("org/private", folder, TOKEN, gated=False)
    with running_hub(gated, private) as local:
        yield local


def _download(hub: LocalHub, tmp_path: Path, repo: str, name: str, *, revision: str, token: str | None) -> Path:
    cache = tmp_path / "cache"
    return Path(hf_hub_download(repo, name, revision=revision, token=token, endpoint=hub.url, cache_dir=cache))


def test_files_download_at_a_revision_with_the_token(hub: LocalHub, tmp_path: Path) -> None:
    path = _download(hub, tmp_path, "org/gated", "sub/weights.bin", revision="v1", token=TOKEN)
    assert path.read_bytes() == b"\0" * 1000
    assert path.parent.parent.name == V1  # snapshots/<commit>/sub/weights.bin
    assert (tmp_path / "cache" / "models--org--gated" / "refs" / "v1").read_text() == V1
    assert _download(hub, tmp_path, "org/gated", "config.json", revision=V1, token=TOKEN).read_text().startswith("{")
    info = HfApi(endpoint=hub.url).model_info("org/gated", revision="v1", token=TOKEN)
    assert info.sha == V1
    assert sorted(s.rfilename for s in info.siblings or []) == ["config.json", "sub/weights.bin"]
    assert all(authorized for _, _, authorized in hub.requests)


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (("org/gated", "config.json", "v1", None), GatedRepoError),
        (("org/gated", "config.json", "v1", "hf_wrong"), GatedRepoError),
        (("org/private", "config.json", "main", "hf_wrong"), RepositoryNotFoundError),
        (("org/absent", "config.json", "main", TOKEN), RepositoryNotFoundError),
        (("org/gated", "config.json", "v9", TOKEN), RevisionNotFoundError),
        (("org/gated", "missing.json", "v1", TOKEN), EntryNotFoundError),
    ],
)
def test_refusals_raise_the_hubs_typed_errors(
    hub: LocalHub, tmp_path: Path, request_: tuple[str, str, str, str | None], error: type[Exception]
) -> None:
    repo, name, revision, token = request_
    with pytest.raises(error):
        _download(hub, tmp_path, repo, name, revision=revision, token=token)

"""A local Hugging-Face-Hub-compatible HTTP server, so ``hf://`` sources run for real through huggingface_hub.

It serves model repositories made of local folders, answering the way huggingface.co does for
the requests ``from_pretrained`` and ``hf_hub_download`` make (huggingface_hub's
``file_download.get_hf_file_metadata`` and ``utils._http.hf_raise_for_status`` say what they read):

- ``HEAD``/``GET /{repo}/resolve/{revision}/{path}``: the file, with ``X-Repo-Commit`` (the commit
  the revision points at), ``ETag``, ``Content-Length``;
- ``GET /api/models/{repo}[/revision/{revision}]``: the model info (``sha``, ``siblings``);
- ``GET /api/models/{repo}/tree/{revision}[/{path}]``: the files under a folder.

A dataset repository (``repo_type="dataset"``) answers the same requests under
``/datasets/{repo}/resolve/...`` and ``/api/datasets/{repo}...``, as ``snapshot_download(...,
repo_type="dataset")`` asks them.

A revision is a branch or tag name (mapped to a commit sha) or the sha itself; an unknown one
answers 404 with ``X-Error-Code: RevisionNotFound``, a missing file 404 ``EntryNotFound``. Every
repository wants ``Authorization: Bearer <token>``: a gated one answers 401 ``GatedRepo`` without
a token and 403 ``GatedRepo`` with a wrong one; a private one 401 ``RepoNotFound`` either way.

Point a process at it with ``HF_ENDPOINT=<hub.url>`` (huggingface_hub reads it at import time,
so set it in a subprocess's environment) and a fresh ``HF_HOME``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

__all__ = ["HubError", "HubRepository", "LocalHub", "commit_sha", "running_hub"]

_API = "/api/models/"
_PREFIXES: tuple[tuple[str, bool, str], ...] = (
    ("/api/datasets/", True, "dataset"),
    (_API, True, "model"),
    ("/datasets/", False, "dataset"),
    ("/", False, "model"),
)
"""Path prefix -> (an API route, the repository type it serves)."""


def commit_sha(name: str) -> str:
    """A stable 40-hex-digit commit id for a name (the hub's commit ids look like this)."""
    return hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class HubRepository:
    """A model or dataset repository: a folder's files at every revision, readable with one token."""

    repo_id: str
    folder: Path
    token: str
    revisions: dict[str, str] = field(default_factory=dict)
    """Branch and tag names -> commit sha; ``main`` is added when missing."""
    gated: bool = True
    repo_type: Literal["model", "dataset"] = "model"

    def commit(self, revision: str) -> str | None:
        """The commit a branch, tag or sha names, or None for an unknown revision."""
        refs = {"main": commit_sha(f"{self.repo_id}@main"), **self.revisions}
        if revision in refs:
            return refs[revision]
        return revision if revision in refs.values() else None

    def files(self) -> list[str]:
        """Every file's path relative to the folder, sorted."""
        return sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())


class HubError(Exception):
    """An answer that is not a file: status code, ``X-Error-Code`` and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    file: Path | None = None


class LocalHub:
    """The server and what it was asked (``requests``: method, path, whether the token was right)."""

    def __init__(self, repositories: list[HubRepository]) -> None:
        self.repositories = {repo.repo_id: repo for repo in repositories}
        self.requests: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)

    @property
    def url(self) -> str:
        """The endpoint to put in ``HF_ENDPOINT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LocalHub:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def record(self, method: str, path: str, authorized: bool) -> None:
        """Remember one request (thread-safe)."""
        with self._lock:
            self.requests.append((method, path, authorized))

    def answer(self, method: str, path: str, authorization: str | None) -> _Reply:
        """What the hub answers to ``method path`` with that ``Authorization`` header."""
        try:
            return self._route(method, unquote(urlsplit(path).path), authorization)
        except HubError as error:
            body = json.dumps({"error": error.message}).encode()
            headers = {"X-Error-Code": error.code, "X-Error-Message": error.message, "Content-Type": "application/json"}
            return _Reply(error.status, headers, body)

    def _route(self, method: str, path: str, authorization: str | None) -> _Reply:
        prefix, api, repo_type = next(entry for entry in _PREFIXES if path.startswith(entry[0]))
        parts = path[len(prefix) :].split("/")
        repo = self._authorized(method, path, "/".join(parts[:2]), authorization, repo_type)
        rest = parts[2:]
        if api:
            return self._api(repo, rest)
        if len(rest) >= 3 and rest[0] == "resolve":
            return self._resolve(repo, rest[1], "/".join(rest[2:]))
        raise HubError(404, "EntryNotFound", f"no route for {path}")

    def _authorized(
        self, method: str, path: str, repo_id: str, authorization: str | None, repo_type: str = "model"
    ) -> HubRepository:
        repo = self.repositories.get(repo_id)
        if repo is not None and repo.repo_type != repo_type:
            repo = None  # a dataset is not found among the models, nor a model among the datasets
        authorized = repo is not None and authorization == f"Bearer {repo.token}"
        self.record(method, path, authorized)
        if repo is None:
            raise HubError(404, "RepoNotFound", f"Repository {repo_id} not found")
        if authorized:
            return repo
        if not repo.gated:
            raise HubError(401, "RepoNotFound", f"Repository {repo_id} not found")
        if authorization is None:
            raise HubError(401, "GatedRepo", f"Access to model {repo_id} is restricted. Please log in.")
        raise HubError(403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not authorized.")

    def _commit(self, repo: HubRepository, revision: str) -> str:
        commit = repo.commit(revision)
        if commit is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def _api(self, repo: HubRepository, rest: list[str]) -> _Reply:
        if not rest or rest[0] == "revision":
            commit = self._commit(repo, rest[1] if len(rest) > 1 else "main")
            info: dict[str, Any] = {
                "id": repo.repo_id,
                "sha": commit,
                "private": not repo.gated,
                "gated": "manual" if repo.gated else False,
                "siblings": [{"rfilename": name} for name in repo.files()],
            }
            return _json_reply(info, commit)
        if rest[0] == "tree" and len(rest) >= 2:
            commit = self._commit(repo, rest[1])
            return _json_reply(self._tree(repo, "/".join(rest[2:])), commit)
        raise HubError(404, "EntryNotFound", f"no API route {'/'.join(rest)}")

    def _tree(self, repo: HubRepository, prefix: str) -> list[dict[str, Any]]:
        folder = repo.folder / prefix
        if not folder.is_dir():
            raise HubError(404, "EntryNotFound", f"{prefix} does not exist")
        entries: list[dict[str, Any]] = []
        for entry in sorted(folder.iterdir()):
            path = str(entry.relative_to(repo.folder))
            if entry.is_dir():
                entries.append({"type": "directory", "path": path, "oid": commit_sha(path)})
            else:
                entries.append({"type": "file", "path": path, "size": entry.stat().st_size, "oid": _etag(entry)})
        return entries

    def _resolve(self, repo: HubRepository, revision: str, name: str) -> _Reply:
        commit = self._commit(repo, revision)
        file = repo.folder / name
        if ".." in Path(name).parts or not file.is_file():
            raise HubError(404, "EntryNotFound", f"{name} does not exist at {revision}")
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{_etag(file)}"',
            "Content-Length": str(file.stat().st_size),
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "none",
        }
        return _Reply(200, headers, file=file)


def _json_reply(document: Any, commit: str) -> _Reply:
    body = json.dumps(document).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), "X-Repo-Commit": commit}
    return _Reply(200, headers, body)


def _etag(file: Path) -> str:
    stat = file.stat()
    return _digest(file, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _digest(file: Path, size: int, mtime_ns: int) -> str:
    """The SHA-256 the hub uses as a large file's ETag (computed once per file version)."""
    with file.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _handler_for(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self) -> None:
            self._reply(hub.answer("HEAD", self.path, self.headers.get("Authorization")), body=False)

        def do_GET(self) -> None:
            self._reply(hub.answer("GET", self.path, self.headers.get("Authorization")), body=True)

        def _reply(self, reply: _Reply, *, body: bool) -> None:
            self.send_response(reply.status)
            headers = dict(reply.headers)
            headers.setdefault("Content-Length", str(len(reply.body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if not body:
                return
            if reply.file is None:
                self.wfile.write(reply.body)
                return
            with reply.file.open("rb") as handle:
                shutil.copyfileobj(handle, self.wfile, 1 << 20)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the hub records requests itself; stderr stays quiet

    return Handler


@contextmanager
def running_hub(*repositories: HubRepository) -> Iterator[LocalHub]:
    """A :class:`LocalHub` serving ``repositories`` for the duration of the block."""
    hub = LocalHub(list(repositories)).start()
    try:
        yield hub
    finally:
        hub.stop()

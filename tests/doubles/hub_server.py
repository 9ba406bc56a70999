"""A local Hugging Face Hub on 127.0.0.1 that the real `huggingface_hub` client (1.33, httpx) talks to.

Tests aim the client at it with `endpoint=server.url`; nothing is patched. Routes, headers and JSON shapes
follow what the installed client reads (hf_api.py, file_download.py, _snapshot_download.py, utils/_http.py):

    GET       /api/models/{repo}[/revision/{rev}]     model_info: id, sha, siblings[{rfilename}] (+ sizes, blobId
                                                      and lfs with ?blobs=true), gated, lastModified
    GET       /api/models/{repo}/tree/{rev}[/{path}]  list_repo_tree, one page: [{type, path, oid, size, lfs?}]
    HEAD|GET  /{repo}/resolve/{rev}/{file}            small files: 200, ETag (git blob sha1), X-Repo-Commit
                                                      LFS files: 302 to the CDN, X-Linked-Etag (sha256), X-Linked-Size
    HEAD|GET  /cdn/{sha256}                           LFS bodies, served on host "localhost"

The CDN answers on "localhost" rather than 127.0.0.1 on purpose: the client then treats it as another host, as
with huggingface.co's CDN, so it stops at the 302 to read the metadata and drops Authorization for the body GET.
File GETs honour `Range` (206 + Content-Range). Errors carry X-Error-Code (RepoNotFound, RevisionNotFound,
GatedRepo, EntryNotFound), X-Error-Message and X-Request-Id, the headers `hf_raise_for_status` maps to typed errors.
A gated repo refuses files (401 GatedRepo) to requests without an Authorization header and accepts any token.

Example:
    with HubServer() as hub:
        hub.add_repo("org/tiny", folder, sha="a" * 40)
        hub.fail_next("/api/models/org/tiny", 503)
        snapshot_download("org/tiny", endpoint=hub.url, cache_dir=tmp)
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

# Files the Hub keeps in Git LFS for a freshly created repo (a subset of its default .gitattributes).
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".h5", ".onnx", ".msgpack")
_SHA = re.compile(r"[0-9a-f]{40}")
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_GET, _GET_HEAD = frozenset({"GET"}), frozenset({"GET", "HEAD"})


class RecordedRequest(NamedTuple):
    """One request as the double saw it; `headers` are lower-cased and never include Authorization."""

    method: str
    path: str  # the raw request target, query included
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(slots=True)
class _Repo:
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit sha
    folders: dict[str, Path] = field(default_factory=dict)  # commit sha -> folder served at that commit
    gated: bool = False


@dataclass(slots=True)
class _Failure:
    path_prefix: str
    status: int
    times: int
    headers: dict[str, str]


class _Entry(NamedTuple):
    path: str
    data: bytes
    oid: str  # git blob sha1, of the LFS pointer for LFS files
    sha256: str | None  # set for LFS files only
    pointer_size: int


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _entry(folder: Path, path: str) -> _Entry:
    data = (folder / path).read_bytes()
    if not path.endswith(LFS_SUFFIXES):
        return _Entry(path, data, _git_oid(data), None, 0)
    sha256 = hashlib.sha256(data).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
    return _Entry(path, data, _git_oid(pointer), sha256, len(pointer))


def _error(status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> Reply:
    extra = {"Content-Type": "application/json", "X-Error-Message": message, **(headers or {})}
    if code is not None:
        extra["X-Error-Code"] = code
    return Reply(status, extra, json.dumps({"error": message}).encode())


def _json(payload: Any) -> Reply:
    return Reply(200, {"Content-Type": "application/json"}, json.dumps(payload).encode())


def _ranged(data: bytes, range_header: str | None, headers: dict[str, str]) -> Reply:
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (range_header or "").strip())
    if match is None or match.groups() == ("", ""):
        return Reply(200, headers, data)
    first, last = match.groups()
    start = int(first) if first else max(len(data) - int(last), 0)
    end = min(int(last), len(data) - 1) if first and last else len(data) - 1
    if start >= len(data) or start > end:
        return _error(416, None, "Requested range not satisfiable", {"Content-Range": f"bytes */{len(data)}"})
    return Reply(206, {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, data[start : end + 1])


class HubServer:
    """Serves model repos from local folders; `start()`/`stop()` or use it as a context manager."""

    def __init__(self) -> None:
        self._repos: dict[str, _Repo] = {}
        self._blobs: dict[str, bytes] = {}  # sha256 -> LFS body, filled as /resolve hands out CDN links
        self._failures: list[_Failure] = []
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        # (methods, pattern matched against the unquoted path, handler); add routes here.
        self.routes: list[tuple[frozenset[str], re.Pattern[str], Callable[..., Reply]]] = [
            (_GET, re.compile(rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"), self._tree),
            (_GET, re.compile(rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?"), self._model_info),
            (_GET_HEAD, re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), self._resolve),
            (_GET_HEAD, re.compile(r"/cdn/(?P<sha256>[0-9a-f]{64})"), self._cdn),
        ]

    # -- setup -------------------------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, folder: Path, *, sha: str, branch: str = "main", gated: bool = False) -> None:
        """Serve `folder` as commit `sha` of `repo_id`, with `branch` pointing at it; call again for more commits."""
        if not _SHA.fullmatch(sha):
            raise ValueError(f"sha must be 40 lowercase hex digits, got {sha!r}")
        repo = self._repos.setdefault(repo_id, _Repo())
        repo.refs[branch] = sha
        repo.folders[sha] = Path(folder)
        repo.gated = repo.gated or gated

    def fail_next(
        self, path_prefix: str, status: int, *, times: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next `times` requests whose raw path starts with `path_prefix` with `status`."""
        with self._lock:
            self._failures.append(_Failure(path_prefix, status, times, dict(headers or {})))

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("HubServer is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return self.url.replace("127.0.0.1", "localhost")

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def start(self) -> HubServer:
        handler = type("_Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._httpd.serve_forever, name="hub-double", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- dispatch ----------------------------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str]) -> Reply:
        """Record the request, answer it from an injected failure or the route table, stamp X-Request-Id."""
        headers = {name.lower(): value for name, value in headers.items()}
        with self._lock:
            self._requests.append(RecordedRequest(method, target, _without_auth(headers)))
            failure = next((f for f in self._failures if target.startswith(f.path_prefix)), None)
            if failure is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
            request_id = f"hub-{next(self._ids)}"
        if failure is not None:
            reply = _error(failure.status, None, f"injected HTTP {failure.status}", failure.headers)
        else:
            reply = self._route(method, target, headers)
        reply.headers["X-Request-Id"] = request_id
        return reply

    def _route(self, method: str, target: str, headers: dict[str, str]) -> Reply:
        split = urlsplit(target)
        query = {name: values[-1] for name, values in parse_qs(split.query).items()}
        for methods, pattern, route in self.routes:
            match = pattern.fullmatch(split.path)
            if match is not None and method in methods:
                groups = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                return route(method=method, query=query, headers=headers, **groups)
        return _error(404, None, f"no route for {method} {split.path}")

    def _commit(self, repo_id: str, rev: str | None) -> tuple[_Repo, str] | Reply:
        """The repo and the commit sha `rev` names (default branch "main"), or the Hub's 404."""
        repo = self._repos.get(repo_id)
        if repo is None:
            return _error(404, "RepoNotFound", "Repository not found")
        sha = repo.refs.get(rev or "main") or (rev if rev in repo.folders else None)
        if sha is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo, sha

    @staticmethod
    def _entries(repo: _Repo, sha: str) -> list[_Entry]:
        folder = repo.folders[sha]
        paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        return [_entry(folder, path) for path in paths]

    # -- routes: each takes the path's named groups plus method, query and lower-cased headers -----------------
    def _model_info(self, *, repo: str, query: dict[str, str], rev: str | None = None, **_: Any) -> Reply:
        found = self._commit(repo, rev)
        if isinstance(found, Reply):
            return found
        state, sha = found
        siblings = []
        for e in self._entries(state, sha):
            sibling: dict[str, Any] = {"rfilename": e.path}
            if query.get("blobs") == "true":  # model_info(files_metadata=True)
                sibling |= {"size": len(e.data), "blobId": e.oid}
                if e.sha256:
                    sibling["lfs"] = {"size": len(e.data), "sha256": e.sha256, "pointerSize": e.pointer_size}
            siblings.append(sibling)
        stamp = "2026-01-01T00:00:00.000Z"
        return _json(
            {
                **{"_id": sha[:24], "id": repo, "modelId": repo, "author": repo.split("/")[0], "sha": sha},
                **{"lastModified": stamp, "createdAt": stamp, "private": False, "disabled": False},
                **{"gated": "manual" if state.gated else False, "downloads": 0, "likes": 0, "tags": []},
                **{"library_name": "transformers", "siblings": siblings},
            }
        )

    def _tree(self, *, repo: str, rev: str, query: dict[str, str], path: str = "", **_: Any) -> Reply:
        found = self._commit(repo, rev)
        if isinstance(found, Reply):
            return found
        state, sha = found
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        recursive = query.get("recursive") == "true"
        items: dict[str, dict[str, Any]] = {}
        for e in self._entries(state, sha):
            if not e.path.startswith(prefix):
                continue
            parts = e.path[len(prefix) :].split("/")
            for depth in range(1, len(parts)) if recursive else range(1, min(len(parts), 2)):
                folder = prefix + "/".join(parts[:depth])
                oid = _git_oid(folder.encode())  # any stable id will do: the client only stores it
                items.setdefault(folder, {"type": "directory", "path": folder, "oid": oid, "size": 0})
            if recursive or len(parts) == 1:
                item: dict[str, Any] = {"type": "file", "path": e.path, "oid": e.oid, "size": len(e.data)}
                if e.sha256:
                    item["lfs"] = {"oid": e.sha256, "size": len(e.data), "pointerSize": e.pointer_size}
                items[e.path] = item
        return _json(sorted(items.values(), key=lambda item: str(item["path"])))

    def _resolve(self, *, repo: str, rev: str, path: str, headers: dict[str, str], **_: Any) -> Reply:
        found = self._commit(repo, rev)
        if isinstance(found, Reply):
            return found
        state, sha = found
        if state.gated and "authorization" not in headers:
            message = f"Access to model {repo} is restricted. You must have access to it and be authenticated."
            return _error(401, "GatedRepo", message)
        entry = next((e for e in self._entries(state, sha) if e.path == path), None)
        if entry is None:
            return _error(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": sha})
        common = {"X-Repo-Commit": sha, "ETag": f'"{entry.oid}"'}
        if entry.sha256 is None:
            return _ranged(entry.data, headers.get("range"), common)
        with self._lock:
            self._blobs[entry.sha256] = entry.data
        cdn = {"Location": f"{self.cdn_url}/cdn/{entry.sha256}", "X-Linked-Etag": f'"{entry.sha256}"'}
        return Reply(302, {**common, **cdn, "X-Linked-Size": str(len(entry.data))})

    def _cdn(self, *, sha256: str, headers: dict[str, str], **_: Any) -> Reply:
        with self._lock:
            data = self._blobs.get(sha256)
        if data is None:
            return _error(403, None, "Request has expired")  # what a stale signed CDN URL answers
        return _ranged(data, headers.get("range"), {"ETag": f'"{sha256}"'})


def _without_auth(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name != "authorization"}


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        reply = self.hub.handle(self.command, self.path, dict(self.headers.items()))
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if send_body:
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line; tests read `HubServer.requests` instead."""

"""A local Hugging Face Hub on 127.0.0.1 for the real `huggingface_hub` client (1.33, httpx), unpatched.

Tests pass `endpoint=server.url`. Routes, headers and JSON shapes follow what the installed client reads
(hf_api.py, file_download.py, _snapshot_download.py, utils/_http.py):

    GET       /api/models/{repo}[/revision/{rev}]  model_info: id, sha, gated, siblings [{rfilename}]
    GET       /api/models/{repo}/tree/{rev}[/dir]  list_repo_tree, one page: [{type, path, oid, size, lfs}]
    HEAD|GET  /{repo}/resolve/{rev}/{file}         small file: 200 + ETag (git blob sha1) + X-Repo-Commit;
                                                   LFS file: 302 to the CDN + X-Linked-Etag/-Size (sha256)
    HEAD|GET  /cdn/{sha256}                        LFS bodies, on host "localhost"

The CDN answers on "localhost", not 127.0.0.1, so that the client sees another host, as with the real CDN:
it stops at the 302 to read the metadata and drops Authorization for the body GET. File GETs honour `Range`.
Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, GatedRepo, EntryNotFound), X-Error-Message and
X-Request-Id, which `hf_raise_for_status` maps to typed errors. A gated repo refuses its files (401 GatedRepo)
to requests without an Authorization header and accepts any token.

Example:
    with HubServer() as hub:
        hub.add_repo("org/tiny", folder, sha="a" * 40)
        hub.fail_next("/api/models/org/tiny", 503)
        snapshot_download("org/tiny", endpoint=hub.url, cache_dir=tmp_path)
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

# Suffixes the Hub's default .gitattributes stores in Git LFS (the ones model repos use).
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".h5", ".onnx", ".msgpack")
_SHA = re.compile(r"[0-9a-f]{40}")
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_GET, _GET_HEAD = frozenset({"GET"}), frozenset({"GET", "HEAD"})


class RecordedRequest(NamedTuple):
    """A request as the double saw it: raw target (with query), lower-cased headers minus Authorization."""

    method: str
    path: str
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


class _File(NamedTuple):
    path: str
    data: bytes
    oid: str  # git blob sha1; of the LFS pointer for LFS files, as on the Hub
    sha256: str | None  # LFS files only
    pointer_size: int


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _read(folder: Path, path: str) -> _File:
    data = (folder / path).read_bytes()
    if not path.endswith(LFS_SUFFIXES):
        return _File(path, data, _git_oid(data), None, 0)
    sha256 = hashlib.sha256(data).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
    return _File(path, data, _git_oid(pointer), sha256, len(pointer))


def _error(status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> Reply:
    extra = {"Content-Type": "application/json", "X-Error-Message": message, **(headers or {})}
    if code is not None:
        extra["X-Error-Code"] = code
    return Reply(status, extra, json.dumps({"error": message}).encode())


def _json(payload: Any) -> Reply:
    return Reply(200, {"Content-Type": "application/json"}, json.dumps(payload).encode())


def _ranged(data: bytes, range_header: str | None, headers: dict[str, str]) -> Reply:
    """The body, or the one `bytes=a-b` / `a-` / `-n` slice asked for (206), as a CDN would serve it."""
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
    """Serves model repos from local folders; use `with HubServer() as hub:` or `start()` / `stop()`."""

    def __init__(self) -> None:
        self._repos: dict[str, _Repo] = {}
        self._blobs: dict[str, bytes] = {}  # sha256 -> LFS body, filled as /resolve hands out CDN links
        self._failures: list[list[Any]] = []  # [path_prefix, status, times_left, headers]
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        # (methods, pattern for the still-quoted path, handler given the unquoted groups); add routes here.
        self.routes: list[tuple[frozenset[str], re.Pattern[str], Callable[..., Reply]]] = [
            (_GET, re.compile(rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"), self._tree),
            (_GET, re.compile(rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?"), self._model_info),
            (_GET_HEAD, re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), self._resolve),
            (_GET_HEAD, re.compile(r"/cdn/(?P<sha256>[0-9a-f]{64})"), self._cdn),
        ]

    def add_repo(self, repo_id: str, folder: Path, *, sha: str, branch: str = "main", gated: bool = False) -> None:
        """Serve `folder` as commit `sha` of `repo_id` with `branch` at it; call again to add commits."""
        if not _SHA.fullmatch(sha):
            raise ValueError(f"sha must be 40 lowercase hex digits, got {sha!r}")
        repo = self._repos.setdefault(repo_id, _Repo())
        repo.refs[branch] = sha
        repo.folders[sha] = Path(folder)
        repo.gated = repo.gated or gated

    def fail_next(
        self, path_prefix: str, status: int, *, times: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next `times` requests whose raw path starts with `path_prefix` with `status`.

        A prefix can match several routes: "/api/models/org/x" also catches its /revision/ and /tree/ paths.
        """
        with self._lock:
            self._failures.append([path_prefix, status, times, dict(headers or {})])

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("HubServer is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def start(self) -> HubServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"hub": self}))
        # A short poll keeps stop() fast: shutdown() waits for the loop's next poll (0.5 s by default).
        poll = {"poll_interval": 0.05}
        threading.Thread(target=self._httpd.serve_forever, kwargs=poll, name="hub-double", daemon=True).start()
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

    def handle(self, method: str, target: str, headers: dict[str, str]) -> Reply:
        """Record the request, answer from an injected failure or the route table, stamp an X-Request-Id."""
        headers = {name.lower(): value for name, value in headers.items()}
        with self._lock:
            recorded = {name: value for name, value in headers.items() if name != "authorization"}
            self._requests.append(RecordedRequest(method, target, recorded))
            failure = next((f for f in self._failures if target.startswith(f[0])), None)
            if failure is not None:
                failure[2] -= 1
                if failure[2] <= 0:
                    self._failures.remove(failure)
            request_id = f"hub-{next(self._ids)}"
        if failure is not None:
            reply = _error(failure[1], None, f"injected HTTP {failure[1]}", failure[3])
        else:
            reply = self._route(method, target, headers)
        return Reply(reply.status, {**reply.headers, "X-Request-Id": request_id}, reply.body)

    def _route(self, method: str, target: str, headers: dict[str, str]) -> Reply:
        split = urlsplit(target)
        query = {name: values[-1] for name, values in parse_qs(split.query).items()}
        for methods, pattern, route in self.routes:
            match = pattern.fullmatch(split.path)
            if match is not None and method in methods:
                groups = {name: unquote(value) for name, value in match.groupdict().items() if value}
                return route(method=method, query=query, headers=headers, **groups)
        return _error(404, None, f"no route for {method} {split.path}")

    def _commit(self, repo_id: str, rev: str | None) -> tuple[_Repo, str] | Reply:
        """The repo and the commit `rev` names ("main" when None), or the Hub's 404."""
        repo = self._repos.get(repo_id)
        if repo is None:
            return _error(404, "RepoNotFound", "Repository not found")
        sha = repo.refs.get(rev or "main") or (rev if rev in repo.folders else None)
        if sha is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo, sha

    @staticmethod
    def _files(repo: _Repo, sha: str) -> list[_File]:
        folder = repo.folders[sha]
        paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        return [_read(folder, path) for path in paths]

    # Routes: each takes its pattern's groups plus method, query and lower-cased headers as keywords.
    def _model_info(self, *, repo: str, query: dict[str, str], rev: str | None = None, **_: Any) -> Reply:
        found = self._commit(repo, rev)
        if isinstance(found, Reply):
            return found
        state, sha = found
        siblings = []
        for f in self._files(state, sha):
            sibling: dict[str, Any] = {"rfilename": f.path}
            if query.get("blobs") == "true":  # model_info(files_metadata=True)
                sibling |= {"size": len(f.data), "blobId": f.oid}
                if f.sha256:
                    sibling["lfs"] = {"size": len(f.data), "sha256": f.sha256, "pointerSize": f.pointer_size}
            siblings.append(sibling)
        stamp = "2026-01-01T00:00:00.000Z"
        info: dict[str, Any] = {
            "_id": sha[:24],
            "id": repo,
            "modelId": repo,
            "author": repo.split("/")[0],
            "sha": sha,
        }
        info |= {"lastModified": stamp, "createdAt": stamp, "private": False, "tags": []}
        info |= {"gated": "manual" if state.gated else False, "likes": 0, "siblings": siblings}
        return _json(info)

    def _tree(self, *, repo: str, rev: str, query: dict[str, str], path: str = "", **_: Any) -> Reply:
        found = self._commit(repo, rev)
        if isinstance(found, Reply):
            return found
        state, sha = found
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        recursive = query.get("recursive") == "true"
        items: dict[str, dict[str, Any]] = {}
        for f in self._files(state, sha):
            if not f.path.startswith(prefix):
                continue
            parts = f.path[len(prefix) :].split("/")
            for depth in range(1, len(parts)) if recursive else range(1, min(len(parts), 2)):
                folder = prefix + "/".join(parts[:depth])
                oid = _git_oid(folder.encode())  # any stable id: the client only stores it
                items.setdefault(folder, {"type": "directory", "path": folder, "oid": oid})
            if recursive or len(parts) == 1:
                item: dict[str, Any] = {"type": "file", "path": f.path, "oid": f.oid, "size": len(f.data)}
                if f.sha256:
                    item["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": f.pointer_size}
                items[f.path] = item
        return _json([items[key] for key in sorted(items)])

    def _resolve(self, *, repo: str, rev: str, path: str, headers: dict[str, str], **_: Any) -> Reply:
        found = self._commit(repo, rev)
        if isinstance(found, Reply):
            return found
        state, sha = found
        if state.gated and "authorization" not in headers:
            return _error(401, "GatedRepo", f"Access to model {repo} is restricted; please log in.")
        file = next((f for f in self._files(state, sha) if f.path == path), None)
        if file is None:
            return _error(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": sha})
        common = {"X-Repo-Commit": sha, "ETag": f'"{file.oid}"'}
        if file.sha256 is None:
            return _ranged(file.data, headers.get("range"), common)
        with self._lock:
            self._blobs[file.sha256] = file.data
        cdn = self.url.replace("127.0.0.1", "localhost")
        common |= {"Location": f"{cdn}/cdn/{file.sha256}", "X-Linked-Etag": f'"{file.sha256}"'}
        return Reply(302, {**common, "X-Linked-Size": str(len(file.data))})

    def _cdn(self, *, sha256: str, headers: dict[str, str], **_: Any) -> Reply:
        with self._lock:
            data = self._blobs.get(sha256)
        if data is None:
            return _error(403, None, "Request has expired")  # what a stale signed CDN URL answers
        return _ranged(data, headers.get("range"), {"ETag": f'"{sha256}"'})


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

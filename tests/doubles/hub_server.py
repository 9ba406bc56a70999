"""A local Hugging Face Hub on 127.0.0.1 for the real `huggingface_hub` client (1.33, httpx), unpatched.

Tests pass `endpoint=server.url`. Routes, headers and JSON shapes follow what the installed client reads
(hf_api.py, file_download.py, _snapshot_download.py, utils/_http.py):

    GET       /api/models                          list_models: author, search, filter (tags, AND), sort
                                                   (lastModified, descending), limit; `page_size` items a
                                                   page, the next page in a Link header (rel="next")
    GET       /api/models/{repo}[/revision/{rev}]  model_info: id, sha, gated, private, tags, cardData,
                                                   lastModified, siblings [{rfilename[, size, lfs]}]
    GET       /api/models/{repo}/tree/{rev}[/dir]  list_repo_tree, one page: [{type, path, oid, size, lfs}]
    HEAD|GET  /{repo}/resolve/{rev}/{file}         small file: 200 + ETag (git blob sha1) + X-Repo-Commit;
                                                   LFS file: 302 to the CDN + X-Linked-Etag/-Size (sha256)
    HEAD|GET  /cdn/{sha256}                        LFS bodies, on host "localhost"
    GET       /api/whoami-v2                       the user a token belongs to (`add_user`), else 401
    GET|POST  /api/models/{repo}/discussions       list (p, type, status, author; `page_size` a page) / open
    GET       /api/models/{repo}/discussions/{n}   details with events (the first comment is the body)
    POST      .../discussions/{n}/comment[/{id}/edit]  add a comment / edit one (its author only)
    POST      /api/validate-yaml, /api/models/{repo}/preupload/{rev}   commit preflight (always fine)
    POST      /api/models/{repo}/commit/{rev}      ndjson commit of small files; `create_pr=1` opens a pull
                                                   request at refs/pr/{n}, else only the owner may commit

The card metadata (`cardData`) is the README's YAML front matter at the branch head, and the Hub-computed
`base_model:<id>` / `base_model:<relation>:<id>` tags are derived from it, as the Hub does for its model tree.
Writes need a token registered with `add_user`; repos with discussions disabled answer 403 to new threads.

The CDN answers on "localhost", not 127.0.0.1, so that the client sees another host, as with the real CDN:
it stops at the 302 to read the metadata and drops Authorization for the body GET. File GETs honour `Range`.
Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, GatedRepo, EntryNotFound), X-Error-Message and
X-Request-Id, which `hf_raise_for_status` maps to typed errors. A gated repo refuses its files (401 GatedRepo)
to requests without an Authorization header and accepts any token.

Example:
    with HubServer() as hub:
        hub.add_user("hf_token", "reefbot", orgs=("acme",))
        hub.add_repo("org/tiny", folder, sha="a" * 40)
        hub.fail_next("/api/models/org/tiny", 503)
        snapshot_download("org/tiny", endpoint=hub.url, cache_dir=tmp_path)
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import re
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import numpy as np
import yaml

from tests.doubles.loopback import LoopbackServer

# Suffixes the Hub's default .gitattributes stores in Git LFS (the ones model repos use).
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".h5", ".onnx", ".msgpack")
_SHA = re.compile(r"[0-9a-f]{40}")
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_GET, _GET_HEAD, _POST = frozenset({"GET"}), frozenset({"GET", "HEAD"}), frozenset({"POST"})
_GET_POST = _GET | _POST
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(?P<yaml>.*?)^---[ \t]*$", re.DOTALL | re.MULTILINE)


class RecordedRequest(NamedTuple):
    """A request as the double saw it: raw target (with query), lower-cased headers minus Authorization."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer; `announced` is the Content-Length sent when it differs from the body's (a cut-off reply)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    announced: int | None = None


@dataclass(slots=True)
class _Repo:
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit sha
    folders: dict[str, Path] = field(default_factory=dict)  # commit sha -> folder served at that commit
    gated: bool = False
    private: bool = False
    discussions_enabled: bool = True
    last_modified: str = ""
    discussions: list[dict[str, Any]] = field(default_factory=list)
    written: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> files a commit changed
    generated: dict[str, dict[str, SparseFile]] = field(default_factory=dict)  # commit sha -> big files


class _Fault(NamedTuple):
    body: bytes | None
    cut_to: int | None
    stall_s: float | None


class SparseFile:
    """A big weight file whose bytes are made on demand: a real header (`head`), then zeros, except the rows of
    one embedding, row `i` drawn from a generator seeded by `(seed, i)`: two files with the same seed share their
    embedding (a copy), other seeds give unrelated rows.

    Slicing it (`body[a:b]`) gives those bytes; nothing of its size is ever stored. Subclasses write the head and
    say where the embedding lies (`embedding`: first byte, rows, bytes per row) and how a row is stored
    (`encode`).
    """

    head: bytes
    size: int
    embedding: tuple[int, int, int]

    def __init__(self, *, seed: int, hidden: int, scale: float = 0.02) -> None:
        self.seed, self.hidden, self.scale = seed, hidden, scale
        self.digest = hashlib.sha256(self.head + f"seed={seed}".encode()).hexdigest()

    def __len__(self) -> int:
        return self.size

    def encode(self, values: np.ndarray) -> bytes:
        raise NotImplementedError

    def row(self, index: int) -> bytes:
        """Row `index` of the embedding, as stored."""
        return self.encode(np.random.default_rng([self.seed, index]).standard_normal(self.hidden) * self.scale)

    def __getitem__(self, span: slice) -> bytes:
        start, stop, _ = span.indices(self.size)
        out = bytearray(max(0, stop - start))
        if start < len(self.head):
            piece = self.head[start:stop]
            out[: len(piece)] = piece
        begin, rows, row_bytes = self.embedding
        first = max(0, (start - begin) // row_bytes)
        last = min(rows - 1, (stop - 1 - begin) // row_bytes)
        for index in range(first, last + 1):  # the embedding rows the span touches
            at = begin + index * row_bytes
            lo, hi = max(at, start), min(at + row_bytes, stop)
            if lo < hi:
                out[lo - start : hi - start] = self.row(index)[lo - at : hi - at]
        return bytes(out)


class SparseSafetensors(SparseFile):
    """A big safetensors file (`SparseFile`).

    Args:
        shapes: tensor name -> shape, in file order.
        dtype: one safetensors dtype for all tensors: "BF16", "F16" or "F32".
        embedding: the input-embedding tensor's name (2-D: vocabulary x hidden).
        seed: the embedding's seed; scale: its rows' standard deviation.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], *, dtype: str, embedding: str, seed: int,
                 scale: float = 0.02) -> None:  # fmt: skip
        width = int(dtype[-2:]) // 8
        header: dict[str, Any] = {}
        offset = 0
        for name, shape in shapes.items():
            size = width * int(math.prod(shape))
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)  # the data starts 8-aligned, as the safetensors writer pads it
        self.head = struct.pack("<Q", len(text)) + text
        self.size = len(self.head) + offset
        self.dtype = dtype
        rows, hidden = shapes[embedding]
        self.embedding = (len(self.head) + header[embedding]["data_offsets"][0], rows, hidden * width)
        super().__init__(seed=seed, hidden=hidden, scale=scale)

    def encode(self, values: np.ndarray) -> bytes:
        if self.dtype == "BF16":
            return (values.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
        return values.astype("<f2" if self.dtype == "F16" else "<f4").tobytes()


class SparseGGUF(SparseFile):
    """A big GGUF file (`SparseFile`): a real GGUF header (metadata, tensor table), generated data.

    Args:
        shapes: GGUF tensor name -> shape as GGUF lists it (row length first), in file order.
        types: ggml type name per tensor ("Q4_K", "Q8_0", "F16", ...).
        metadata: writes the metadata (architecture sizes, tokenizer) with a `gguf.GGUFWriter`.
        seed: the seed of `token_embd.weight`'s rows, which are quantized as stored where the gguf package can
            (F32, F16, Q8_0, ...); other types get zero rows.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], types: dict[str, str], *, architecture: str,
                 metadata: Callable[[Any], None], seed: int, scale: float = 0.02) -> None:  # fmt: skip
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "head.gguf"
            writer = GGUFWriter(str(path), architecture)
            metadata(writer)
            sizes = {}
            for name, shape in shapes.items():
                kind = GGMLQuantizationType[types[name]]
                block, block_bytes = GGML_QUANT_SIZES[kind]
                sizes[name] = math.prod(shape) // block * block_bytes
                writer.add_tensor_info(name, tuple(reversed(shape)), np.dtype(np.float32), sizes[name], raw_dtype=kind)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            writer.close()
            head = path.read_bytes()
        alignment = 32
        self.head = head + b"\0" * (-len(head) % alignment)
        offset, begin = 0, 0
        for name, size in sizes.items():
            if name == "token_embd.weight":
                begin = len(self.head) + offset
            offset += size + (-size % alignment)
        self.size = len(self.head) + offset
        hidden, rows = shapes["token_embd.weight"]
        self.kind = GGMLQuantizationType[types["token_embd.weight"]]
        self.embedding = (begin, rows, sizes["token_embd.weight"] // rows)
        super().__init__(seed=seed, hidden=hidden, scale=scale)

    def encode(self, values: np.ndarray) -> bytes:
        from gguf.quants import quantize

        try:
            return quantize(values.astype(np.float32)[None], self.kind).tobytes()
        except NotImplementedError:
            return bytes(self.embedding[2])


def llama_shapes(
    *, hidden: int, layers: int, intermediate: int, vocab: int, kv_hidden: int | None = None
) -> dict[str, tuple[int, ...]]:
    """The tensors of a Llama-shaped checkpoint, in file order: 7B is `hidden=4096, layers=32, intermediate=11008,
    vocab=32000`; 70B is `hidden=8192, layers=80, intermediate=28672, vocab=32000, kv_hidden=1024`."""
    kv = kv_hidden or hidden
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        block = f"model.layers.{i}"
        shapes |= {
            f"{block}.input_layernorm.weight": (hidden,),
            f"{block}.self_attn.q_proj.weight": (hidden, hidden),
            f"{block}.self_attn.k_proj.weight": (kv, hidden),
            f"{block}.self_attn.v_proj.weight": (kv, hidden),
            f"{block}.self_attn.o_proj.weight": (hidden, hidden),
            f"{block}.post_attention_layernorm.weight": (hidden,),
            f"{block}.mlp.gate_proj.weight": (intermediate, hidden),
            f"{block}.mlp.up_proj.weight": (intermediate, hidden),
            f"{block}.mlp.down_proj.weight": (hidden, intermediate),
        }
    return shapes | {"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}


class _File(NamedTuple):
    path: str
    data: bytes | SparseFile
    oid: str  # git blob sha1; of the LFS pointer for LFS files, as on the Hub
    sha256: str | None  # LFS files only
    pointer_size: int


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _read(folder: Path, path: str) -> _File:
    return _file(path, (folder / path).read_bytes())


def _file(path: str, data: bytes | SparseFile) -> _File:
    if isinstance(data, SparseFile):
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{data.digest}\nsize {len(data)}\n".encode()
        return _File(path, data, _git_oid(pointer), data.digest, len(pointer))
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


def _ranged(data: bytes | SparseFile, range_header: str | None, headers: dict[str, str]) -> Reply:
    """The body, or the one `bytes=a-b` / `a-` / `-n` slice asked for (206), as a CDN would serve it."""
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (range_header or "").strip())
    if match is None or match.groups() == ("", ""):
        if isinstance(data, SparseFile):  # gigabytes made on demand: only by Range
            return _error(403, None, "the double serves this generated file by Range only")
        return Reply(200, headers, data)
    first, last = match.groups()
    start = int(first) if first else max(len(data) - int(last), 0)
    end = min(int(last), len(data) - 1) if first and last else len(data) - 1
    if start >= len(data) or start > end:
        return _error(416, None, "Requested range not satisfiable", {"Content-Range": f"bytes */{len(data)}"})
    return Reply(206, {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, data[start : end + 1])


class HubServer(LoopbackServer):
    """Serves model repos from local folders; use `with HubServer() as hub:` or `start()` / `stop()`."""

    def __init__(self) -> None:
        super().__init__()
        self._repos: dict[str, _Repo] = {}
        # sha256 -> LFS body, filled as /resolve hands out CDN links
        self._blobs: dict[str, bytes | SparseFile] = {}
        self._failures: list[list[Any]] = []  # [path_prefix, status, times_left, headers]
        self._faults: list[list[Any]] = []  # [path_prefix, _Fault, times_left, answers_to_skip]
        self._released = threading.Event()  # set by stop(): stalled replies give up waiting
        self._requests: list[RecordedRequest] = []
        self._lock = threading.RLock()  # routes run under it and may take it again
        self._ids = itertools.count(1)
        # (methods, pattern for the still-quoted path, handler given the unquoted groups); add routes here.
        self._users: dict[str, dict[str, Any]] = {}  # token -> whoami answer
        self._hooks: list[list[Any]] = []  # [path_prefix, callback, times_left]
        self._clock = itertools.count(1)
        self.page_size = 100  # items per page of /api/models and of discussion lists
        self.bandwidth_bytes_per_s: float | None = None  # a cap on file bodies (benchmarks), None: none
        self._served: list[tuple[str, int]] = []  # (raw path, body bytes) of every GET answered
        self.routes: list[tuple[frozenset[str], re.Pattern[str], Callable[..., Reply]]] = [
            (_GET, re.compile(r"/api/models"), self._list_models),
            (_GET, re.compile(r"/api/whoami-v2"), self._whoami),
            (_POST, re.compile(r"/api/validate-yaml"), self._validate_yaml),
            (_GET_POST, re.compile(rf"/api/models/{_REPO}/discussions"), self._discussions),
            (_GET, re.compile(rf"/api/models/{_REPO}/discussions/(?P<num>\d+)"), self._discussion),
            (_POST, re.compile(rf"/api/models/{_REPO}/discussions/(?P<num>\d+)/comment"), self._comment),
            (
                _POST,
                re.compile(rf"/api/models/{_REPO}/discussions/(?P<num>\d+)/comment/(?P<cid>[^/]+)/edit"),
                self._edit_comment,
            ),
            (_POST, re.compile(rf"/api/models/{_REPO}/preupload/(?P<rev>.+)"), self._preupload),
            (_POST, re.compile(rf"/api/models/{_REPO}/commit/(?P<rev>.+)"), self._commit_files),
            (_GET, re.compile(rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"), self._tree),
            (_GET, re.compile(rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?"), self._model_info),
            (_GET_HEAD, re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), self._resolve),
            (_GET_HEAD, re.compile(r"/cdn/(?P<sha256>[0-9a-f]{64})"), self._cdn),
        ]

    def add_repo(
        self,
        repo_id: str,
        folder: Path,
        *,
        sha: str,
        branch: str = "main",
        gated: bool = False,
        private: bool = False,
        discussions: bool = True,
        last_modified: str | None = None,
    ) -> None:
        """Serve `folder` as commit `sha` of `repo_id` with `branch` at it; call again to add commits.

        Each call makes the repo the most recently modified (unless `last_modified` is given, ISO 8601).
        A private repo is invisible (404) to requests without a token, as on the Hub.
        """
        if not _SHA.fullmatch(sha):
            raise ValueError(f"sha must be 40 lowercase hex digits, got {sha!r}")
        repo = self._repos.setdefault(repo_id, _Repo())
        repo.refs[branch] = sha
        repo.folders[sha] = Path(folder)
        repo.gated = repo.gated or gated
        repo.private = repo.private or private
        repo.discussions_enabled = repo.discussions_enabled and discussions
        repo.last_modified = last_modified or self._tick()

    def add_generated(self, repo_id: str, sha: str, path: str, body: SparseFile) -> None:
        """Serve `body` as `path` of commit `sha` (added with `add_repo`), beside that commit's folder."""
        self._repos[repo_id].generated.setdefault(sha, {})[path] = body

    def add_user(self, token: str, name: str, *, orgs: tuple[str, ...] = ()) -> None:
        """Accept `token` as user `name`, member of `orgs` (what /api/whoami-v2 answers)."""
        self._users[token] = {"type": "user", "name": name, "orgs": [{"type": "org", "name": o} for o in orgs]}

    def remove_commit(self, repo_id: str, sha: str) -> None:
        """Forget commit `sha` (a force-push or a deleted branch): its files and the refs at it answer 404."""
        with self._lock:
            repo = self._repos[repo_id]
            repo.folders.pop(sha, None)
            repo.refs = {ref: at for ref, at in repo.refs.items() if at != sha}

    def on_request(self, path_prefix: str, callback: Callable[[], object], *, times: int = 1) -> None:
        """Run `callback` (in the server thread) before answering the next `times` requests under `path_prefix`."""
        with self._lock:
            self._hooks.append([path_prefix, callback, times])

    def discussions(self, repo_id: str) -> list[dict[str, Any]]:
        """The repo's discussions and pull requests as stored: num, title, author, status, isPullRequest, events."""
        with self._lock:
            return json.loads(json.dumps(self._repos[repo_id].discussions))

    def close_discussion(self, repo_id: str, num: int) -> None:
        """Close a discussion as its repo's owner would."""
        with self._lock:
            self._repos[repo_id].discussions[num - 1]["status"] = "closed"

    def file_root(self, repo_id: str, revision: str = "main") -> Path:
        """The folder served at a branch or commit (edit it to change what the Hub serves)."""
        repo = self._repos[repo_id]
        return repo.folders[repo.refs.get(revision, revision)]

    def file_at(self, repo_id: str, revision: str, path: str) -> bytes:
        """The bytes of `path` at a branch, ref (refs/pr/1) or commit, as the Hub would serve them."""
        found = self._commit(repo_id, revision)
        if isinstance(found, Reply):
            raise KeyError(f"{repo_id}@{revision}")
        state, sha = found
        data = next(f.data for f in self._files(state, sha) if f.path == path)
        if isinstance(data, SparseFile):
            raise TypeError(f"{path} is generated ({len(data)} bytes); slice it instead")
        return data

    def _tick(self) -> str:
        return (_EPOCH + timedelta(minutes=next(self._clock))).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def fail_next(
        self, path_prefix: str, status: int, *, times: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next `times` requests whose raw path starts with `path_prefix` with `status`.

        A prefix can match several routes: "/api/models/org/x" also catches its /revision/ and /tree/ paths.
        """
        with self._lock:
            self._failures.append([path_prefix, status, times, dict(headers or {})])

    def misbehave_next(
        self,
        path_prefix: str,
        *,
        body: bytes | None = None,
        cut_to: int | None = None,
        stall_s: float | None = None,
        times: int = 1,
        after: int = 0,
    ) -> None:
        """Spoil the next `times` answers under `path_prefix` the ways a broken Hub or proxy does.

        Args:
            body: answer 200 with these bytes instead (an HTML error page, truncated or deeply nested JSON).
            cut_to: send the real answer's Content-Length but only its first `cut_to` bytes, then hang up.
            stall_s: say nothing for this long first (until `stop()`, whichever comes sooner).
            times: how many answers to spoil; after: how many matching answers to leave alone first.
        """
        with self._lock:
            self._faults.append([path_prefix, _Fault(body, cut_to, stall_s), times, after])

    def heal(self) -> None:
        """Forget every spoiled answer and injected failure still pending."""
        with self._lock:
            self._faults.clear()
            self._failures.clear()

    def stop(self) -> None:
        self._released.set()
        super().stop()

    def served_bytes(self, path_prefix: str = "/") -> int:
        """Body bytes sent in answer to GETs under `path_prefix` (file bodies, Range slices and JSON alike)."""
        with self._lock:
            return sum(size for path, size in self._served if path.startswith(path_prefix))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def request_handler(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> Reply:
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
            hook = next((h for h in self._hooks if target.startswith(h[0])), None)
            if hook is not None:
                hook[2] -= 1
                if hook[2] <= 0:
                    self._hooks.remove(hook)
            fault = next((f for f in self._faults if target.startswith(f[0])), None)
            if fault is not None and fault[3] > 0:
                fault[3] -= 1
                fault = None
            elif fault is not None:
                fault[2] -= 1
                if fault[2] <= 0:
                    self._faults.remove(fault)
            request_id = f"hub-{next(self._ids)}"
        if hook is not None:
            hook[1]()
        if fault is not None and fault[1].stall_s is not None:
            self._released.wait(fault[1].stall_s)
        if failure is not None:
            reply = _error(failure[1], None, f"injected HTTP {failure[1]}", failure[3])
        else:
            reply = self._route(method, target, headers, body)
        if fault is not None and fault[1].body is not None:
            reply = Reply(200, {"Content-Type": "application/json"}, fault[1].body)
        if fault is not None and fault[1].cut_to is not None and len(reply.body) > fault[1].cut_to:
            reply = Reply(reply.status, reply.headers, reply.body[: fault[1].cut_to], len(reply.body))
        if method == "GET":
            with self._lock:
                self._served.append((target, len(reply.body)))
            if self.bandwidth_bytes_per_s and target.startswith("/cdn/"):
                time.sleep(len(reply.body) / self.bandwidth_bytes_per_s)  # benchmarks only: a capped link
        return Reply(reply.status, {**reply.headers, "X-Request-Id": request_id}, reply.body, reply.announced)

    def _route(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        split = urlsplit(target)
        params = parse_qs(split.query)
        query = {name: values[-1] for name, values in params.items()}
        user = self._users.get(headers.get("authorization", "").removeprefix("Bearer ").strip())
        for methods, pattern, route in self.routes:
            match = pattern.fullmatch(split.path)
            if match is not None and method in methods:
                groups = {name: unquote(value) for name, value in match.groupdict().items() if value}
                if "repo" in groups and self._hidden(groups["repo"], user):
                    return _error(404, "RepoNotFound", "Repository not found")
                with self._lock:
                    return route(
                        method=method, query=query, params=params, headers=headers, body=body, user=user, **groups
                    )
        return _error(404, None, f"no route for {method} {split.path}")

    def _hidden(self, repo_id: str, user: dict[str, Any] | None) -> bool:
        repo = self._repos.get(repo_id)
        return repo is not None and repo.private and user is None

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
        paths = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        written = repo.written.get(sha, {})
        generated = repo.generated.get(sha, {})
        files = [_read(folder, path) for path in sorted(paths - set(written) - set(generated))]
        files += [_file(path, data) for path, data in written.items()]
        files += [_file(path, body) for path, body in generated.items()]
        return sorted(files, key=lambda f: f.path)

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
        return _json(self._summary(repo, state, sha) | {"siblings": siblings})

    def _summary(self, repo_id: str, state: _Repo, sha: str) -> dict[str, Any]:
        """What model_info and list_models share: identity, dates, flags, card data and Hub-computed tags."""
        card = _card_data(self._files(state, sha))
        return {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "lastModified": state.last_modified,
            "createdAt": _EPOCH.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "private": state.private,
            "gated": "manual" if state.gated else False,
            "disabled": False,
            "likes": 0,
            "tags": _model_tree_tags(card),
            "cardData": card,
        }

    def _list_models(self, *, params: dict[str, list[str]], user: dict[str, Any] | None, **_: Any) -> Reply:
        author, search = params.get("author", [None])[-1], params.get("search", [""])[-1].lower()
        wanted = set(params.get("filter", []))
        items = []
        for repo_id, state in self._repos.items():
            sha = state.refs.get("main")
            if sha is None or (state.private and user is None):
                continue
            if (author and repo_id.split("/")[0] != author) or search not in repo_id.lower():
                continue
            item = self._summary(repo_id, state, sha)
            if wanted <= set(item["tags"]):
                items.append(item)
        sort = params.get("sort", [None])[-1]
        if sort == "lastModified":  # the Hub sorts descending only
            items.sort(key=lambda item: (item["lastModified"], item["id"]), reverse=True)
        elif sort is not None:
            return _error(400, None, f"sort {sort!r} is not served by the double")
        limit = int(params.get("limit", [len(items)])[-1])
        start = int(params.get("cursor", ["0"])[-1])
        size = min(self.page_size, limit)
        page = items[start : start + size]
        headers = {"Content-Type": "application/json"}
        if start + size < min(len(items), limit):
            rest = {key: values for key, values in params.items() if key != "cursor"}
            next_url = f"{self.url}/api/models?{urlencode({**rest, 'cursor': [str(start + size)]}, doseq=True)}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        return Reply(200, headers, json.dumps(page).encode())

    def _whoami(self, *, user: dict[str, Any] | None, **_: Any) -> Reply:
        if user is None:
            return _error(401, None, "Invalid credentials in Authorization header")
        return _json(user)

    def _validate_yaml(self, **_: Any) -> Reply:
        return _json({"errors": [], "warnings": []})

    # Discussions and pull requests
    def _discussions(
        self, *, repo: str, method: str, query: dict[str, str], body: bytes, user: dict[str, Any] | None, **_: Any
    ) -> Reply:
        state = self._repos.get(repo)
        if state is None:
            return _error(404, "RepoNotFound", "Repository not found")
        if method == "POST":
            if user is None:
                return _error(401, None, "You must be logged in to open a discussion")
            if not state.discussions_enabled:
                return _error(403, None, "Discussions are disabled for this repo")
            data = json.loads(body)
            thread = self._open_thread(repo, state, user, data["title"], data["description"], data["pullRequest"])
            return _json({"num": thread["num"], "url": f"{self.url}/{repo}/discussions/{thread['num']}"})
        found = [
            d
            for d in state.discussions
            if query.get("type", "all") in ("all", "pull_request" if d["isPullRequest"] else "discussion")
            and query.get("status", "all") in ("all", d["status"])
            and query.get("author") in (None, d["author"]["name"])
        ]
        start = int(query.get("p", "0")) * self.page_size
        page = [{k: v for k, v in d.items() if k != "events"} for d in found[start : start + self.page_size]]
        return _json({"discussions": page, "count": len(found), "start": start, "numClosedDiscussions": 0})

    def _open_thread(
        self, repo_id: str, state: _Repo, user: dict[str, Any], title: str, description: str, pull_request: bool
    ) -> dict[str, Any]:
        num = len(state.discussions) + 1
        thread: dict[str, Any] = {
            "num": num,
            "title": title,
            "status": "draft" if pull_request else "open",
            "isPullRequest": pull_request,
            "createdAt": self._tick(),
            "author": {"name": user["name"]},
            "repo": {"name": repo_id, "type": "model"},
            "events": [],
        }
        state.discussions.append(thread)
        self._add_comment(thread, user, description)
        return thread

    def _add_comment(self, thread: dict[str, Any], user: dict[str, Any], text: str) -> dict[str, Any]:
        event = {
            "id": f"c{thread['num']}-{len(thread['events']) + 1}",
            "type": "comment",
            "createdAt": self._tick(),
            "author": {"name": user["name"]},
            "data": {"edited": False, "hidden": False, "latest": {"raw": text}},
        }
        thread["events"].append(event)
        return event

    def _thread(self, repo: str, num: str) -> dict[str, Any] | Reply:
        state = self._repos.get(repo)
        if state is None:
            return _error(404, "RepoNotFound", "Repository not found")
        if not 1 <= int(num) <= len(state.discussions):
            return _error(404, None, "Discussion not found")
        return state.discussions[int(num) - 1]

    def _discussion(self, *, repo: str, num: str, **_: Any) -> Reply:
        thread = self._thread(repo, num)
        if isinstance(thread, Reply):
            return thread
        details = {**thread, "changes": {"base": "refs/heads/main"}, "filesWithConflicts": []}
        return _json(details)

    def _comment(self, *, repo: str, num: str, body: bytes, user: dict[str, Any] | None, **_: Any) -> Reply:
        thread = self._thread(repo, num)
        if isinstance(thread, Reply):
            return thread
        if user is None:
            return _error(401, None, "You must be logged in to comment")
        return _json({"newMessage": self._add_comment(thread, user, json.loads(body)["comment"])})

    def _edit_comment(
        self, *, repo: str, num: str, cid: str, body: bytes, user: dict[str, Any] | None, **_: Any
    ) -> Reply:
        thread = self._thread(repo, num)
        if isinstance(thread, Reply):
            return thread
        event = next((e for e in thread["events"] if e["id"] == cid), None)
        if event is None:
            return _error(404, None, "Comment not found")
        if user is None or event["author"]["name"] != user["name"]:
            return _error(403, None, "You can only edit your own comments")
        event["data"] = {**event["data"], "edited": True, "latest": {"raw": json.loads(body)["content"]}}
        return _json({"updatedComment": event})

    # Commits
    def _preupload(self, *, body: bytes, user: dict[str, Any] | None, **_: Any) -> Reply:
        if user is None:
            return _error(401, None, "You must be logged in to upload")
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in json.loads(body)["files"]]
        return _json({"files": files})

    def _commit_files(
        self, *, repo: str, rev: str, query: dict[str, str], body: bytes, user: dict[str, Any] | None, **_: Any
    ) -> Reply:
        found = self._commit(repo, rev)
        if isinstance(found, Reply):
            return found
        state, parent = found
        if user is None:
            return _error(401, None, "You must be logged in to commit")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        if header.get("parentCommit") not in (None, parent):
            return _error(412, None, "A commit has happened since. Please refresh and try again.")
        changes = {
            line["value"]["path"]: base64.b64decode(line["value"]["content"]) for line in lines if line["key"] == "file"
        }
        owners = {user["name"], *(org["name"] for org in user["orgs"])}
        create_pr = query.get("create_pr") == "1"
        if not create_pr and repo.split("/")[0] not in owners:
            return _error(403, None, "You don't have the rights to push to this repo; open a pull request")
        sha = hashlib.sha1(f"{parent}{body!r}".encode()).hexdigest()
        state.folders[sha] = state.folders[parent]
        state.written[sha] = {**state.written.get(parent, {}), **changes}
        reply: dict[str, Any] = {"commitUrl": f"{self.url}/{repo}/commit/{sha}", "commitOid": sha}
        if create_pr:
            thread = self._open_thread(repo, state, user, header["summary"], header.get("description") or "", True)
            state.refs[f"refs/pr/{thread['num']}"] = sha
            reply["pullRequestUrl"] = f"{self.url}/{repo}/discussions/{thread['num']}"
        else:
            state.refs[rev] = sha
            state.last_modified = self._tick()
        return _json(reply)

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


def _card_data(files: list[_File]) -> dict[str, Any] | None:
    """The README's YAML front matter as the Hub serves it in `cardData` (None without a card)."""
    readme = next((f for f in files if f.path == "README.md"), None)
    match = _FRONT_MATTER.match(bytes(readme.data[:]).decode("utf-8")) if readme else None
    data = yaml.safe_load(match["yaml"]) if match else None
    return data if isinstance(data, dict) else None


def _model_tree_tags(card: dict[str, Any] | None) -> list[str]:
    """The Hub's computed model-tree tags: `base_model:<id>` and `base_model:<relation>:<id>`."""
    card = card or {}
    bases = card.get("base_model") or []
    bases = [bases] if isinstance(bases, str) else list(bases)
    relation = card.get("base_model_relation") or ("merge" if len(bases) > 1 else "finetune")
    tags = [str(tag) for tag in card.get("tags") or []]
    for base in bases:
        tags += [f"base_model:{base}", f"base_model:{relation}:{base}"]
    return tags


class _Handler(BaseHTTPRequestHandler):
    double: HubServer

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_POST(self) -> None:
        self._answer(send_body=True)

    def _answer(self, *, send_body: bool) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.double.handle(self.command, self.path, dict(self.headers.items()), body)
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body) if reply.announced is None else reply.announced))
            self.end_headers()
            if send_body:
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout, a stalled reply)
            self.close_connection = True
            return
        if reply.announced is not None:  # a cut-off reply: hang up before the announced length
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line; tests read `HubServer.requests` instead."""

"""Stage 1 of a Hub scan: a weight verdict from a few megabytes read by HTTP Range.

The weight evidence (``bot.reef.weights``) needs only the input-embedding rows of the anchor tokens. A
safetensors file is a JSON header followed by row-major tensors, and the Hub serves files by Range, so for
each candidate stage 1 reads:

1. each safetensors header (``read_header``: ``bot.reef``'s one header reader and validator, through Range
   requests: the first 64 kB, more only for a longer header);
2. the tokenizer, once per tokenizer: its files are keyed by their blob ids from the model info, so the
   fine-tunes that share a base's tokenizer share one download and one tokenization of the probes
   (``TokenizerCache``; the anchor candidates are kept on disk per tokenizer and probe set);
3. the embedding rows of the anchor tokens, rows closer than ``ROW_GAP_BYTES`` read in one request
   (``coalesce``): anchor tokens are frequent, low ids, so a 7B model's 244 rows take a handful of requests.

A repo of GGUF files (no safetensors) is read the same way through one of them (``gguf_to_check``): its header
(``read_gguf``: ``bot.reef``'s one GGUF reader), the tokenizer built from the header's metadata alone (keyed by
a digest of its ``tokenizer.*`` entries, so a model's quantizations share it), and the token embedding's anchor
rows, each a whole number of quantization blocks, dequantized as stored. An embedding coarser than
``MIN_GGUF_BITS`` per value goes to stage 2.

The suspect's ``Anchors`` are then judged against every registry source by the weights alone
(``bot.reef.verdict.WeightJudge``, the rules ``check`` applies to the weights). A confident "unrelated" (every
source's adjusted weight p-value >= ``UNRELATED_P``) ends the candidate; a match,
anything inconclusive, too few shared tokens, a source without anchors or null, an embedding that cannot be
located, or a card that declares a registry source, goes to stage 2 (the full check, ``bot.hub.scan``).
Each stage's bytes are counted (``RangeReader.bytes_read``) and reported per candidate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from bot.errors import ModelLoadError, RemoteError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from bot.hub.client import Budget
    from bot.reef import GGUFHeader, ProbeSet, SafetensorsHeader, WeightJudge

logger = logging.getLogger(__name__)
Header = TypeVar("Header")

ROW_GAP_BYTES = 256 * 1024
"""Rows closer than this are read in one request: a request costs a round trip, a 256 kB gap ~5 ms at 50 MB/s."""
# Input-embedding tensor names of the common families (Llama/Qwen/Gemma/Mistral, GPT-2, GPT-NeoX/Pythia, BLOOM,
# OPT, BERT); matched as name suffixes, exactly one must match.
EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "embed_in.weight", "word_embeddings.weight",
                      "tok_embeddings.weight")  # fmt: skip
# A GGUF repo's files that are not a model on their own: split parts (``-00001-of-00003``), vision projectors,
# importance matrices and LoRA adapters.
_NOT_A_MODEL_GGUF = re.compile(r"-\d{5}-of-\d{5}\.gguf$|mmproj|imatrix|(?:^|[-_./])(?:lora|adapter)(?:[-_./]|$)",
                               re.IGNORECASE)  # fmt: skip
# Quantizations below 4 bits per weight, as GGUF file or folder names spell them (Q2_K, Q3_K_M, IQ2_XS, TQ1_0).
_COARSE_GGUF = re.compile(r"(?:^|[-_./])(?:I?Q[123]|TQ[12])(?:_|\.gguf$|/)", re.IGNORECASE)
MIN_GGUF_BITS = 4
"""A GGUF token embedding stored coarser than this is left to the full check."""
GGUF_TOKENIZER = "tokenizer.gguf"
"""A GGUF file's metadata alone, in the tokenizer cache."""
# The tokenizer's own files (bot.reef.loading.SIDE_FILES less the model's configs): their blob ids key the cache.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "vocab.txt", "added_tokens.json")  # fmt: skip


class RangeReader:
    """Reads byte ranges and small files of one repo at one commit, counting every byte it receives.

    Args:
        api: the Hub client (its endpoint); token: for gated or private repos.
        budget: every request goes through ``budget.call`` (retries, time limit, errors as ``RemoteError``).
    """

    def __init__(self, api: HfApi, repo_id: str, sha: str, *, token: str | None, budget: Budget) -> None:
        self.api, self.repo_id, self.sha, self.token, self.budget = api, repo_id, sha, token, budget
        self.bytes_read = 0
        self.requests = 0
        self.headers: dict[str, SafetensorsHeader] = {}
        self.gguf_headers: dict[str, GGUFHeader] = {}
        self.sizes: dict[str, int] = {}  # file name -> size, from the model info (set by the scan's inspection)
        self.blob_ids: dict[str, str] = {}  # file name -> blob id, likewise

    def parameters(self) -> int:
        """How many values the weight files whose headers were read hold."""
        stored = [t.n_values for h in self.headers.values() for t in h.tensors.values()]
        stored += [t.n_values for h in self.gguf_headers.values() for t in h.tensors.values()]
        return sum(stored)

    def read(self, filename: str, start: int, end: int) -> bytes:
        """Bytes ``start..end`` (inclusive) of ``filename``.

        Raises:
            RemoteError: the Hub failed, ignored the Range, or sent fewer bytes than asked.
        """
        want = end - start + 1
        body = self._get(filename, {"Range": f"bytes={start}-{end}"}, limit=want)
        if len(body) != want:
            raise RemoteError(f"{self.repo_id}@{self.sha}: {filename} bytes {start}-{end}: the Hub sent "
                              f"{len(body)} of {want} bytes; retried next run", service="hub")  # fmt: skip
        return body

    def fetch(self, filename: str, *, max_bytes: int = 64_000_000) -> bytes:
        """The whole of a small file (tokenizer, config).

        Raises:
            RemoteError: the Hub failed, or the file is larger than ``max_bytes``.
        """
        return self._get(filename, {}, limit=max_bytes)

    def _get(self, filename: str, extra: dict[str, str], *, limit: int) -> bytes:
        from huggingface_hub import get_session, hf_hub_url

        # Public (documented in huggingface_hub.utils) but not re-exported for mypy.
        from huggingface_hub.utils._headers import build_hf_headers
        from huggingface_hub.utils._http import hf_raise_for_status

        url = hf_hub_url(self.repo_id, filename, revision=self.sha, endpoint=self.api.endpoint)
        headers = {**build_hf_headers(token=self.token), **extra}
        ranged = "Range" in extra

        def get() -> bytes:
            body = bytearray()
            with get_session().stream("GET", url, headers=headers) as response:
                self.requests += 1
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response)
                if ranged and response.status_code != 206:
                    status = response.status_code
                    raise RemoteError(f"{self.repo_id}@{self.sha}: {filename}: the Hub ignored the Range request "
                                      f"(HTTP {status}); not reading the whole file", service="hub")  # fmt: skip
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        break
            self.bytes_read += len(body)
            if len(body) > limit:
                raise RemoteError(f"{self.repo_id}@{self.sha}: {filename}: more than {limit} bytes; not read",
                                  service="hub")  # fmt: skip
            return bytes(body)

        what = f"{self.repo_id}@{self.sha}: {filename}" + (f" {extra['Range']}" if ranged else "")
        return self.budget.call(what, get)


def read_header(reader: RangeReader, filename: str, file_size: int) -> SafetensorsHeader:
    """The checked header of ``filename`` by Range (``bot.reef``'s one header reader; cached on the reader).

    Raises:
        ModelLoadError: not a safetensors header, or one that does not describe a file of ``file_size`` bytes
            (offsets that disagree with shapes, gaps, overlaps, data past the end).
        RemoteError: the Hub failed.
    """
    from bot.reef import read_header as read_safetensors_header

    return _cached_header(reader, reader.headers, filename, file_size, read_safetensors_header)


def read_gguf(reader: RangeReader, filename: str, file_size: int) -> GGUFHeader:
    """The checked header of GGUF file ``filename`` by Range (``bot.reef``'s one GGUF reader; cached on the reader).

    Raises:
        ModelLoadError: not a GGUF header, or one that does not describe a file of ``file_size`` bytes.
        RemoteError: the Hub failed.
    """
    from bot.reef import read_gguf_header

    return _cached_header(reader, reader.gguf_headers, filename, file_size, read_gguf_header)


def _cached_header(reader: RangeReader, cache: dict[str, Header], filename: str, file_size: int,
                   parse: Callable[..., Header]) -> Header:  # fmt: skip
    if filename not in cache:
        cache[filename] = parse(lambda offset, length: reader.read(filename, offset, offset + length - 1),
                                file_size, where=f"{reader.repo_id}@{reader.sha}: {filename}")  # fmt: skip
    return cache[filename]


def coalesce(spans: Iterable[tuple[int, int]], *, max_gap: int = ROW_GAP_BYTES) -> list[tuple[int, int]]:
    """Merge byte spans ``[begin, end)`` whose gaps are at most ``max_gap`` into as few spans as that allows.

    Example:
        >>> coalesce([(0, 10), (20, 30), (1000, 1010)], max_gap=100)
        [(0, 30), (1000, 1010)]
    """
    merged: list[tuple[int, int]] = []
    for begin, end in sorted(spans):
        if merged and begin - merged[-1][1] <= max_gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((begin, end))
    return merged


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEmbedding:
    """Where a candidate's input embedding lies in one of its files, and how its rows decode.

    Attributes:
        filename: the file; offset: its row 0's first byte.
        rows, hidden, row_bytes: how many rows, of how many values, each how many bytes.
        decode: whole consecutive rows' bytes -> float32 values, one row per line.
    """

    filename: str
    offset: int
    rows: int
    hidden: int
    row_bytes: int
    decode: Callable[[bytes], NDArray[np.float32]]


def embedding_of(headers: Mapping[str, SafetensorsHeader]) -> StoredEmbedding | None:
    """The input embedding (2-D and not empty, a float dtype, named as ``EMBEDDING_SUFFIXES``) of safetensors files,
    or None if not exactly one."""
    from bot.reef import byte_count

    found = [
        (filename, header, name)
        for filename, header in headers.items()
        for name, span in header.tensors.items()
        if name.endswith(EMBEDDING_SUFFIXES)
        and len(span.shape) == 2
        and 0 not in span.shape
        and span.dtype in ("F32", "F16", "BF16")
    ]
    if len(found) != 1:
        return None
    filename, header, name = found[0]
    span = header.tensors[name]
    rows, hidden = span.shape
    return StoredEmbedding(filename=filename, offset=header.offset(name), rows=rows, hidden=hidden,
                           row_bytes=byte_count(span.dtype, hidden),
                           decode=lambda data: decode_rows(data, span.dtype, hidden))  # fmt: skip


def gguf_embedding_of(filename: str, header: GGUFHeader) -> StoredEmbedding:
    """The token embedding of a GGUF file, its rows dequantized as stored.

    Raises:
        ModelLoadError: no 2-D token embedding, or one stored in fewer than ``MIN_GGUF_BITS`` bits per value (a
            2- or 3-bit embedding could make a derivative's rows look unrelated: the full check decides).
    """
    from bot.reef import GGUF_TOKEN_EMBEDDING, decode_gguf_rows, gguf_bits_per_value, gguf_row_bytes

    tensor = header.tensors.get(GGUF_TOKEN_EMBEDDING)
    if tensor is None or len(tensor.shape) != 2:
        raise ModelLoadError(f"{filename}: no 2-D {GGUF_TOKEN_EMBEDDING}")
    bits = gguf_bits_per_value(tensor)
    if bits < MIN_GGUF_BITS:
        raise ModelLoadError(f"{filename}: {GGUF_TOKEN_EMBEDDING} is stored at {bits:.2g} bits per value, too "
                             f"coarse for a confident 'unrelated'")  # fmt: skip
    return StoredEmbedding(filename=filename, offset=tensor.offset, rows=tensor.shape[1], hidden=tensor.shape[0],
                           row_bytes=gguf_row_bytes(tensor),
                           decode=lambda data: decode_gguf_rows(data, tensor))  # fmt: skip


def decode_rows(data: bytes, dtype: str, hidden: int) -> NDArray[np.float32]:
    """Rows of ``hidden`` values stored as F32, F16 or BF16 (little-endian), as float32.

    Example:
        >>> decode_rows(np.array([1.5, -2.0], dtype="<f4").tobytes(), "F32", 2).tolist()
        [[1.5, -2.0]]
    """
    if dtype == "BF16":  # the upper half of a float32
        values = (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        values = np.frombuffer(data, dtype="<f2" if dtype == "F16" else "<f4").astype(np.float32)
    return values.reshape(-1, hidden)


def read_anchor_rows(reader: RangeReader, embedding: StoredEmbedding, ids: Sequence[int]) -> NDArray[np.float32]:
    """Rows ``ids`` of ``embedding``, in the order given, by coalesced Range requests.

    Raises:
        ModelLoadError: an id outside the embedding; RemoteError: the Hub failed.
    """
    size = embedding.row_bytes
    if any(not 0 <= i < embedding.rows for i in ids):
        raise ModelLoadError(f"{reader.repo_id}@{reader.sha}: an anchor token id is outside the input embedding "
                             f"({embedding.rows} rows)")  # fmt: skip
    out: dict[int, NDArray[np.float32]] = {}
    spans = [(embedding.offset + i * size, embedding.offset + (i + 1) * size) for i in sorted(set(ids))]
    for begin, end in coalesce(spans):
        block = embedding.decode(reader.read(embedding.filename, begin, end - 1))
        first = (begin - embedding.offset) // size
        for offset, row in enumerate(block):
            out[first + offset] = row
    return np.stack([out[i] for i in ids])


@dataclass(slots=True)
class TokenizerCache:
    """Anchor candidates per tokenizer and probe set, on disk under ``root``.

    A tokenizer is named by a key its repo gives: its files' blob ids, or the digest of a GGUF file's tokenizer
    metadata (``GGUFHeader.tokenizer_digest``), so the fine-tunes and quantizations of one base share one download
    and one tokenization of the probes.

    Attributes:
        downloads, hits: how many tokenizers were fetched and tokenized, and how many came from the cache.
    """

    root: Path
    downloads: int = 0
    hits: int = 0
    memory: dict[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)

    def anchor_candidates(
        self, key: str, write_files: Callable[[Path], None], *, source: str, probes: ProbeSet, batch_size: int
    ) -> tuple[tuple[int, str], ...]:
        """The candidate anchor tokens (``bot.reef.weights.anchor_tokens``) of the tokenizer ``key`` names.

        Args:
            key: the tokenizer's name in the cache.
            write_files: writes the tokenizer into an empty folder, when ``key`` is new: Hugging Face tokenizer
                files (and ``config.json``), or a GGUF file of metadata only named ``GGUF_TOKENIZER``.
            source: the candidate (``repo@sha``), as messages name it.
            probes: the probe set; batch_size as for fingerprints.

        Raises:
            ModelLoadError: the tokenizer does not load. RemoteError: the Hub failed.
        """
        from bot.reef import TokenizerFiles, tokenize_apart

        entry = f"{key}-{probes.sha256[:16]}"
        if entry in self.memory:
            self.hits += 1
            return self.memory[entry]
        saved = self.root / key / f"anchors-{probes.sha256[:16]}.json"
        if saved.is_file():
            candidates = tuple((int(i), str(s)) for i, s in json.loads(saved.read_text(encoding="utf-8")))
            self.hits += 1
        else:
            folder = self.root / key / "files"
            if not folder.is_dir():
                (self.root / key).mkdir(parents=True, exist_ok=True)
                staging = Path(tempfile.mkdtemp(prefix=".files-", dir=self.root / key))
                try:
                    write_files(staging)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
                staging.replace(folder)
            gguf_file = GGUF_TOKENIZER if (folder / GGUF_TOKENIZER).is_file() else None
            files = TokenizerFiles(folder=folder, gguf_file=gguf_file, source=Path(source))
            candidates = tokenize_apart(files, probes.texts, batch_size=batch_size).anchor_candidates
            saved.write_text(json.dumps([list(c) for c in candidates], ensure_ascii=False), encoding="utf-8")
            self.downloads += 1
        self.memory[entry] = candidates
        return candidates


def hub_tokenizer(reader: RangeReader, blob_ids: Mapping[str, str]) -> tuple[str, Callable[[Path], None]]:
    """The cache key and file writer of a repo's Hugging Face tokenizer (for ``TokenizerCache``).

    Raises:
        ModelLoadError: the repo has no tokenizer files.
    """
    files = sorted(name for name in blob_ids if name in TOKENIZER_FILES)
    if not files:
        raise ModelLoadError(f"{reader.repo_id}@{reader.sha}: no tokenizer files", source=reader.repo_id)
    key = hashlib.sha256(json.dumps([[n, blob_ids[n]] for n in files]).encode()).hexdigest()[:32]

    def write(folder: Path) -> None:
        for name in [*files, "config.json"]:  # transformers reads the config to pick the tokenizer class
            if name in blob_ids:
                (folder / name).write_bytes(reader.fetch(name))

    return key, write


def gguf_tokenizer(header: GGUFHeader) -> tuple[str, Callable[[Path], None]]:
    """The cache key and file writer of a GGUF file's tokenizer: its metadata, without the tensors."""

    def write(folder: Path) -> None:
        (folder / GGUF_TOKENIZER).write_bytes(header.metadata_only())

    return f"gguf-{header.tokenizer_digest()[:32]}", write


@dataclass(frozen=True, slots=True, kw_only=True)
class TriageResult:
    """Stage 1's outcome for one candidate.

    Attributes:
        decided: True when stage 1 called it unrelated (no stage 2); reason: why, either way.
        bytes_read: what stage 1 read (headers, tokenizer when not cached, anchor rows).
    """

    decided: bool
    reason: str
    bytes_read: int


def triage(
    reader: RangeReader,
    sizes: Mapping[str, int],
    blob_ids: Mapping[str, str],
    *,
    judge: WeightJudge,
    tokenizers: TokenizerCache,
    probes: ProbeSet,
    batch_size: int,
) -> TriageResult:
    """Stage 1 for one candidate whose headers ``reader`` may already hold.

    Raises:
        RemoteError: the Hub failed (the caller records an error; the next run retries).
    """
    from bot.reef import Anchors, anchor_count

    try:
        gguf = gguf_to_check(sizes)
        if gguf is not None:
            header = read_gguf(reader, gguf, sizes[gguf])
            embedding = gguf_embedding_of(gguf, header)
            key, write = gguf_tokenizer(header)
        else:
            headers = {name: read_header(reader, name, size) for name, size in sorted(sizes.items())
                       if name.endswith(".safetensors")}  # fmt: skip
            found = embedding_of(headers)
            if found is None:
                return TriageResult(decided=False, reason="no single input-embedding tensor in the headers",
                                    bytes_read=reader.bytes_read)  # fmt: skip
            embedding = found
            key, write = hub_tokenizer(reader, blob_ids)
        candidates = tokenizers.anchor_candidates(key, write, source=f"{reader.repo_id}@{reader.sha}",
                                                  probes=probes, batch_size=batch_size)  # fmt: skip
        kept = candidates[: anchor_count(embedding.hidden)]
        rows = read_anchor_rows(reader, embedding, [token for token, _ in kept])
    except ModelLoadError as e:
        reason = f"stage 1 cannot read the weights: {e}"
        return TriageResult(decided=False, reason=reason, bytes_read=reader.bytes_read)
    stored = rows.astype(np.float16).astype(np.float32)  # the precision fingerprints keep (bot.reef.weights)
    stored.setflags(write=False)
    call = judge.judge(Anchors(tuple(spelling for _, spelling in kept), stored))
    return TriageResult(decided=call.unrelated, reason=call.reason, bytes_read=reader.bytes_read)


def gguf_to_check(sizes: Mapping[str, int]) -> str | None:
    """The GGUF file a scan checks in a repo without safetensors, or None (safetensors, or no usable GGUF).

    A GGUF repo holds one model in several quantizations, and maybe files that are no model on their own (split
    parts, vision projectors, importance matrices, LoRA adapters): the smallest model file that keeps at least 4
    bits per weight by its name, else the smallest model file.
    """
    if any(name.endswith(".safetensors") for name in sizes):
        return None
    files = [name for name, size in sizes.items()
             if name.endswith(".gguf") and size > 0 and not _NOT_A_MODEL_GGUF.search(name)]  # fmt: skip
    coarse = [name for name in files if _COARSE_GGUF.search(name)]
    choice = [name for name in files if name not in coarse] or coarse
    return min(choice, key=lambda name: (sizes[name], name)) if choice else None


def blob_ids_of(info: Any) -> dict[str, str]:
    """File name -> blob id (the LFS sha256 where there is one, else the git blob id) from a ``ModelInfo``."""
    ids = {}
    for sibling in info.siblings or []:
        lfs = getattr(sibling, "lfs", None)
        blob = (lfs.sha256 if lfs is not None else None) or sibling.blob_id
        if blob:
            ids[sibling.rfilename] = str(blob)
    return ids

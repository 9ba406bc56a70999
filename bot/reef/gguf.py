"""The one GGUF header reader: metadata and tensor table from any byte source, and rows of a stored tensor.

A GGUF file is ``GGUF``, a version, the tensor and metadata counts, the metadata (typed key-value pairs: the
model's sizes and, for a language model, its whole tokenizer), the tensor table (name, dimensions, storage type,
offset) and, aligned after it, the tensors' data (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
``read_gguf_header`` reads it through a ``read(offset, length)`` callable and the file's size, as
``bot.reef.safetensors`` does, so a local file (``read_gguf_file_header``) and an HTTP Range reader share every
rule. A tensor's first dimension is its row: a row of a quantized tensor is a whole number of quantization blocks,
so single rows of the token embedding can be read and dequantized alone (``read_rows``). Nothing here imports
torch.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.errors import ModelLoadError
from bot.reef.safetensors import MAX_HEADER_BYTES, ReadBytes, read_local

# Metadata value types, as the format numbers them: struct formats of the scalars; 8 is a string, 9 an array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_PREFIX = struct.Struct("<4sIQQ")  # magic, version, tensor count, metadata count
_FIRST_READ_BYTES = 1 << 20  # a tokenizer makes the metadata megabytes long; each further read doubles
_DEFAULT_ALIGNMENT = 32
GGUF_TOKEN_EMBEDDING = "token_embd.weight"


@dataclass(frozen=True, slots=True, kw_only=True)
class GGUFTensor:
    """One entry of the tensor table.

    Attributes:
        shape: the dimensions as GGUF lists them, the row length first (``(hidden, vocab)`` for an embedding).
        kind: the ggml storage type (``gguf.GGMLQuantizationType``'s value).
        offset: the first byte's offset in the file.
    """

    shape: tuple[int, ...]
    kind: int
    offset: int

    @property
    def n_values(self) -> int:
        return math.prod(self.shape)

    @property
    def n_bytes(self) -> int:
        block, block_bytes = _block(self)
        return self.n_values // block * block_bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class GGUFHeader:
    """A GGUF file's header.

    Attributes:
        metadata: scalar and string values by key; arrays are listed as None (their bytes are in ``raw_metadata``).
        tensors: the tensor table, offsets made absolute.
        raw_metadata: the metadata section's bytes, as stored, holding ``n_fields`` entries.
        tokenizer_spans: where in ``raw_metadata`` each ``tokenizer.*`` entry lies.
        version: the format version (2 or 3).
    """

    metadata: Mapping[str, object]
    tensors: Mapping[str, GGUFTensor]
    raw_metadata: bytes
    n_fields: int
    tokenizer_spans: tuple[tuple[int, int], ...]
    version: int

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    def tokenizer_digest(self) -> str:
        """A digest of what makes the tokenizer: the architecture and every ``tokenizer.*`` entry, so the
        quantizations of one model, which differ in the rest of the metadata, share it."""
        digest = hashlib.sha256(str(self.architecture).encode("utf-8"))
        for begin, end in self.tokenizer_spans:
            digest.update(self.raw_metadata[begin:end])
        return digest.hexdigest()

    def metadata_only(self) -> bytes:
        """A GGUF file of this metadata and no tensors: what transformers needs to build the tokenizer and the
        config, without the weights."""
        return _PREFIX.pack(b"GGUF", self.version, 0, self.n_fields) + self.raw_metadata


class _Cursor:
    """Sequential reads over ``read(offset, length)``, fetched in growing chunks, every length checked against
    the file's size first."""

    def __init__(self, read: ReadBytes, size: int) -> None:
        self.read, self.size = read, size
        self.buffer, self.position, self.chunk = b"", 0, _FIRST_READ_BYTES

    def take(self, n: int) -> bytes:
        if n > self.size - self.position:
            raise ValueError(f"{n} bytes at byte {self.position} run past the end of the file")
        if self.position + n > MAX_HEADER_BYTES:
            raise ValueError(f"the header runs past {MAX_HEADER_BYTES:,} bytes")
        while len(self.buffer) < self.position + n:
            want = min(max(self.chunk, self.position + n - len(self.buffer)), self.size - len(self.buffer))
            got = self.read(len(self.buffer), want)
            if len(got) != want:
                raise ValueError(f"read {len(got)} of {want} bytes at byte {len(self.buffer)}")
            self.buffer += got
            self.chunk *= 2
        data = self.buffer[self.position : self.position + n]
        self.position += n
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def length(self) -> int:
        """A string's length or an array's item count: at most the bytes left in the file."""
        value = int(self.unpack("<Q"))
        if value > self.size - self.position:
            raise ValueError(f"a length of {value} at byte {self.position} runs past the end of the file")
        return value

    def string(self) -> str:
        return self.take(self.length()).decode("utf-8")

    def value(self, kind: int, *, in_array: bool = False) -> object:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            if in_array:  # tokenizers and sizes are flat arrays; nesting is refused before it can recurse deep
                raise ValueError(f"an array of arrays at byte {self.position}")
            item, count = self.unpack("<I"), self.length()
            if item in _SCALARS:  # fixed-size items: skipped whole
                self.take(count * struct.calcsize(_SCALARS[item]))
            else:
                for _ in range(count):
                    self.value(item, in_array=True)
            return None
        raise ValueError(f"unknown metadata type {kind}")


def read_gguf_header(read: ReadBytes, file_size: int, *, where: str) -> GGUFHeader:
    """Read and check a GGUF header; the arguments are ``bot.reef.safetensors.read_header``'s.

    Raises:
        ModelLoadError: not GGUF (magic, version), or a header that is cut short or corrupt: a length or count
            past the end of the file, a header longer than ``MAX_HEADER_BYTES``, an array of arrays, an unknown
            metadata type, a tensor of more than 8 dimensions, of an unknown storage type, with a dimension of 0,
            or whose data lies outside the file.
    """
    try:
        return _parse(_Cursor(read, file_size))
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{where}: corrupt GGUF header ({e})", source=where) from e


def read_gguf_file_header(path: Path) -> GGUFHeader:
    """``read_gguf_header`` on a local file (read with ``os.pread``).

    Raises:
        ModelLoadError: as ``read_gguf_header``, naming ``path``.
    """
    return read_local(path, lambda read, size: read_gguf_header(read, size, where=str(path)))


def _parse(cursor: _Cursor) -> GGUFHeader:
    from gguf import GGML_QUANT_SIZES

    magic, version, n_tensors, n_fields = _PREFIX.unpack(cursor.take(_PREFIX.size))
    if magic != b"GGUF":
        raise ValueError("bad magic bytes")
    if version not in (2, 3) or n_tensors > cursor.size or n_fields > cursor.size:
        raise ValueError(f"version {version} with {n_tensors} tensors and {n_fields} fields")
    metadata: dict[str, object] = {}
    tokenizer_spans = []
    for _ in range(n_fields):
        begin = cursor.position - _PREFIX.size
        key = cursor.string()
        metadata[key] = cursor.value(cursor.unpack("<I"))
        if key.startswith("tokenizer."):
            tokenizer_spans.append((begin, cursor.position - _PREFIX.size))
    raw_metadata = cursor.buffer[_PREFIX.size : cursor.position]
    table = []
    for _ in range(n_tensors):
        name = cursor.string()
        n_dims = cursor.unpack("<I")
        if n_dims > 8:
            raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
        shape = tuple(int(cursor.unpack("<Q")) for _ in range(n_dims))
        table.append((name, shape, int(cursor.unpack("<I")), int(cursor.unpack("<Q"))))
    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise ValueError(f"general.alignment is {alignment!r}")
    data_start = -(-cursor.position // alignment) * alignment
    tensors = {}
    for name, shape, kind, offset in table:
        if kind not in GGML_QUANT_SIZES:
            raise ValueError(f"tensor {name!r} has unknown storage type {kind}")
        tensor = GGUFTensor(shape=shape, kind=kind, offset=data_start + offset)
        if 0 in shape or (shape and shape[0] % _block(tensor)[0]) or tensor.offset + tensor.n_bytes > cursor.size:
            raise ValueError(f"tensor {name!r} of shape {list(shape)} does not fit the file")
        tensors[name] = tensor
    return GGUFHeader(metadata=metadata, tensors=tensors, raw_metadata=raw_metadata, n_fields=n_fields,
                      tokenizer_spans=tuple(tokenizer_spans), version=version)  # fmt: skip


def gguf_row_bytes(tensor: GGUFTensor) -> int:
    """Bytes of one row (``shape[0]`` values) of ``tensor``: a whole number of quantization blocks."""
    block, block_bytes = _block(tensor)
    return tensor.shape[0] // block * block_bytes


def gguf_bits_per_value(tensor: GGUFTensor) -> float:
    """Storage bits per value of ``tensor`` (32 for F32, 8.5 for Q8_0, 4.5 for Q4_K, 2.625 for Q2_K)."""
    block, block_bytes = _block(tensor)
    return 8 * block_bytes / block


def decode_gguf_rows(data: bytes, tensor: GGUFTensor) -> NDArray[np.float32]:
    """Consecutive whole rows of ``tensor`` stored as ``data``, dequantized to float32, one row per line.

    Raises:
        ModelLoadError: a storage type the gguf package cannot dequantize.
    """
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    kind = GGMLQuantizationType(tensor.kind)
    size = gguf_row_bytes(tensor)
    if len(data) % size:
        raise ModelLoadError(f"{len(data)} bytes are not whole rows of {size} bytes")
    try:
        values = dequantize(np.frombuffer(data, dtype=np.uint8).reshape(-1, size), kind)
    except NotImplementedError as e:
        raise ModelLoadError(f"cannot dequantize {kind.name} rows: {e}") from e
    return np.asarray(values, dtype=np.float32).reshape(-1, tensor.shape[0])


def _block(tensor: GGUFTensor) -> tuple[int, int]:
    """Values per quantization block and bytes per block of ``tensor``'s storage type."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType(tensor.kind)]

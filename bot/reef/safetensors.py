"""The one safetensors header reader: parse and check a header from any byte source, without the tensors.

A safetensors file is an 8-byte little-endian header length, a JSON header (tensor name -> dtype, shape and
byte offsets into the data section, plus optional ``__metadata__`` of strings), then the data section, which
the tensors cover end to end in any order, without overlaps or holes
(https://huggingface.co/docs/safetensors#format). ``read_header`` reads those bytes through a
``read(offset, length)`` callable and the file's size, so a local file (``read_file_header``) and an HTTP
Range reader share every rule. Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

from bot.errors import ModelLoadError

ReadBytes = Callable[[int, int], bytes]
"""``read(offset, length)``: ``length`` bytes of the file from ``offset``."""
Parsed = TypeVar("Parsed")

# Bits per value of every dtype the format defines; sub-byte types pack a tensor's values into whole bytes.
DTYPE_BITS: Mapping[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "I64": 64,
    "U64": 64, "F64": 64,
}  # fmt: skip
# The torch dtype (its attribute name) each stored dtype is read as; the others have no torch counterpart.
TORCH_DTYPE_NAMES: Mapping[str, str] = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
    "I16": "int16", "U16": "uint16", "F16": "float16", "BF16": "bfloat16", "I32": "int32", "U32": "uint32",
    "F32": "float32", "I64": "int64", "U64": "uint64", "F64": "float64",
}  # fmt: skip
# The safetensors library refuses larger headers too; a bigger claim is corruption, not a model.
MAX_HEADER_BYTES = 100_000_000
# The first read: the length prefix and, for all but huge headers (a 7B model's is ~30 kB), the whole header,
# so a remote header costs one request.
FIRST_READ_BYTES = 64 * 1024
_METADATA = "__metadata__"


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorSpan:
    """One tensor of a header.

    Attributes:
        dtype: the format's dtype name (``"BF16"``, ``"F32"``, ...), a key of ``DTYPE_BITS``.
        shape: its shape.
        begin: offset of its first byte in the data section.
        end: offset just past its last byte in the data section.
    """

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def n_values(self) -> int:
        """Number of values (the product of the shape)."""
        return math.prod(self.shape)

    @property
    def n_bytes(self) -> int:
        """Bytes its data takes."""
        return self.end - self.begin


@dataclass(frozen=True, slots=True, kw_only=True)
class SafetensorsHeader:
    """A checked safetensors header.

    Attributes:
        data_start: offset of the data section in the file (8 + the header's length).
        file_size: the file's size, which the data section ends exactly at.
        tensors: tensor name -> its span, in the header's order.
        metadata: the ``__metadata__`` strings (empty when absent).
    """

    data_start: int
    file_size: int
    tensors: Mapping[str, TensorSpan] = field(repr=False)
    metadata: Mapping[str, str] = field(default_factory=dict, repr=False)

    def offset(self, name: str) -> int:
        """Offset of tensor ``name``'s first byte in the file."""
        return self.data_start + self.tensors[name].begin


def byte_count(dtype: str, n_values: int) -> int:
    """Bytes ``n_values`` values of ``dtype`` take in a file (sub-byte dtypes rounded up to whole bytes).

    Example:
        >>> byte_count("BF16", 10), byte_count("F4", 3)
        (20, 2)
    """
    return math.ceil(n_values * DTYPE_BITS[dtype] / 8)


def read_header(read: ReadBytes, file_size: int, *, where: str) -> SafetensorsHeader:
    """Read and check a safetensors header.

    Args:
        read: ``read(offset, length) -> bytes``, e.g. a local file's ``os.pread`` or an HTTP Range request.
        file_size: the file's size in bytes.
        where: the file as messages name it (a path, ``repo@sha: file``).

    Returns:
        The header; every tensor's span matches its shape and dtype, and the spans tile the data section,
        which ends at the end of the file.

    Raises:
        ModelLoadError: a file too short for the length prefix; a header length past the file or over
            ``MAX_HEADER_BYTES``; a header that is not a JSON object (or is nested too deeply to read); an entry
            without a known dtype, a shape of non-negative sizes or two offsets; offsets that are negative,
            reversed or disagree with the shape; overlapping or gapped tensors; data that ends before or after
            the file does. The message names ``where`` and the tensor.
    """
    if file_size < 8:
        raise ModelLoadError(f"{where}: truncated safetensors file ({file_size} bytes)", source=where)
    first = read(0, min(file_size, FIRST_READ_BYTES))
    if len(first) < 8:  # a reader (a Range reply) that returned less than the file size promised
        raise ModelLoadError(f"{where}: truncated safetensors file (read {len(first)} bytes)", source=where)
    header_len = int.from_bytes(first[:8], "little")
    if header_len > file_size - 8 or header_len > MAX_HEADER_BYTES:
        raise ModelLoadError(
            f"{where}: corrupt or truncated safetensors header (claims {header_len} header bytes, "
            f"file has {file_size})",
            source=where,
        )
    text = first[8 : 8 + header_len]
    if len(text) < header_len:
        text += read(len(first), header_len - len(text))
    entries = _parse_header_json(text, where=where)
    metadata = entries.pop(_METADATA, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelLoadError(f"{where}: corrupt safetensors metadata (not a map of strings)", source=where)
    tensors = {name: _span(name, info, where=where) for name, info in entries.items()}
    _check_tiling(tensors, data_size=file_size - 8 - header_len, where=where)
    return SafetensorsHeader(data_start=8 + header_len, file_size=file_size, tensors=tensors, metadata=metadata)


def read_file_header(path: Path) -> SafetensorsHeader:
    """``read_header`` on a local file (read with ``os.pread``, nothing mapped).

    Raises:
        ModelLoadError: as ``read_header``, naming ``path``.
    """
    return read_local(path, lambda read, size: read_header(read, size, where=str(path)))


def read_local(path: Path, parse: Callable[[ReadBytes, int], Parsed]) -> Parsed:
    """``parse(read, size)`` on a local file, ``read`` being ``os.pread`` (nothing mapped)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return parse(lambda offset, length: os.pread(fd, length, offset), os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _parse_header_json(text: bytes, *, where: str) -> dict[str, Any]:
    try:
        entries = json.loads(text)
    except RecursionError as e:
        raise ModelLoadError(
            f"{where}: corrupt safetensors header (JSON nested too deeply to read)", source=where
        ) from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{where}: corrupt safetensors header, not JSON ({e})", source=where) from e
    if not isinstance(entries, dict):
        raise ModelLoadError(f"{where}: corrupt safetensors header (not a JSON object)", source=where)
    return entries


def _span(name: str, info: object, *, where: str) -> TensorSpan:
    """One header entry as a span whose size its shape and dtype account for."""
    offsets = info.get("data_offsets") if isinstance(info, dict) else None
    shape = info.get("shape") if isinstance(info, dict) else None
    dtype = info.get("dtype") if isinstance(info, dict) else None
    if (
        dtype not in DTYPE_BITS
        or not _all_ints(shape)
        or any(dim < 0 for dim in shape)
        or not _all_ints(offsets)
        or len(offsets) != 2
    ):
        raise ModelLoadError(
            f"{where}: corrupt safetensors entry {name!r} (needs a known dtype, a shape of sizes and two offsets)",
            source=where,
        )
    span = TensorSpan(dtype=str(dtype), shape=tuple(shape), begin=offsets[0], end=offsets[1])
    need = byte_count(span.dtype, span.n_values)
    if span.begin < 0 or span.n_bytes != need:
        raise ModelLoadError(
            f"{where}: tensor {name!r} claims bytes {span.begin}-{span.end} but its shape needs {need}", source=where
        )
    return span


def _all_ints(value: object) -> TypeGuard[list[int]]:
    """Whether ``value`` is a JSON list of integers (``true`` is not a size)."""
    return isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in value)


def _check_tiling(tensors: Mapping[str, TensorSpan], *, data_size: int, where: str) -> None:
    """The spans, sorted, must cover ``0..data_size`` end to end: no byte of the file unaccounted for."""
    data_end = 0
    for name, span in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if span.begin != data_end:
            what = (
                "overlaps the tensor before it"
                if span.begin < data_end
                else f"leaves a gap of {span.begin - data_end} bytes"
            )
            raise ModelLoadError(
                f"{where}: corrupt safetensors file: tensor {name!r} at byte {span.begin} {what}; download it again",
                source=where,
            )
        data_end = span.end
    if data_end != data_size:
        raise ModelLoadError(
            f"{where}: truncated or padded safetensors file (tensors need {data_end} data bytes after the header, "
            f"the file has {data_size}); download it again",
            source=where,
        )

"""The one safetensors header reader: what it reads from real files, and each refusal, from a local file and
through a ``read(offset, length)`` callable (as the Hub's Range reader calls it)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.errors import ModelLoadError
from bot.reef.safetensors import FIRST_READ_BYTES, SafetensorsHeader, read_file_header, read_header

NESTED = b"[" * 100_000 + b"]" * 100_000


def safetensors_bytes(header: bytes | dict[str, Any], data: bytes = b"", *, claimed_len: int | None = None) -> bytes:
    """A safetensors file from raw parts: 8-byte little-endian header length, JSON header, data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if claimed_len is None else claimed_len) + raw + data


def two_tensors(first: tuple[int, int], second: tuple[int, int], dtype: str = "F32") -> dict[str, Any]:
    return {
        "a": {"dtype": dtype, "shape": [2], "data_offsets": list(first)},
        "b": {"dtype": dtype, "shape": [2], "data_offsets": list(second)},
    }


class RecordingReader:
    """A ``read(offset, length)`` over bytes in memory that records each call, as a Range reader would serve it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[int, int]] = []

    def __call__(self, offset: int, length: int) -> bytes:
        self.calls.append((offset, length))
        return self.data[offset : offset + length]


def read_locally(data: bytes, tmp_path: Path) -> SafetensorsHeader:
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    return read_file_header(path)


def read_remotely(data: bytes, tmp_path: Path) -> SafetensorsHeader:
    return read_header(RecordingReader(data), len(data), where="lab/tune@abc: model.safetensors")


READERS: dict[str, Callable[[bytes, Path], SafetensorsHeader]] = {"file": read_locally, "callable": read_remotely}

REFUSALS: dict[str, tuple[bytes, str]] = {
    "empty-file": (b"", "truncated safetensors file"),
    "shorter-than-the-length": (b"\x01" * 7, "truncated safetensors file"),
    "header-past-the-file": (safetensors_bytes({}, claimed_len=10**6), "corrupt or truncated safetensors header"),
    "header-over-the-limit": (
        safetensors_bytes(b"{}", b"\0" * 16, claimed_len=10**12),
        "corrupt or truncated safetensors header",
    ),
    "nested-json": (safetensors_bytes(NESTED), "nested too deeply"),
    "nested-in-an-object": (safetensors_bytes(b'{"a": ' + NESTED + b"}"), "nested too deeply"),
    "not-json": (safetensors_bytes(b"<html>oops</html>"), "not JSON"),
    "bad-utf8": (safetensors_bytes(b'{"\xff\xfe": 1}'), "not JSON"),
    "not-an-object": (safetensors_bytes(b"[1, 2, 3]"), "not a JSON object"),
    "metadata-not-strings": (safetensors_bytes({"__metadata__": {"format": 1}}), "corrupt safetensors metadata"),
    "unknown-dtype": (safetensors_bytes(two_tensors((0, 8), (8, 16), "F13"), b"\0" * 16), "corrupt safetensors entry"),
    "negative-dimension": (
        safetensors_bytes({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 0]}}),
        "corrupt safetensors entry",
    ),
    "fractional-offset": (
        safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8.5]}}, b"\0" * 8),
        "corrupt safetensors entry",
    ),
    "entry-not-an-object": (safetensors_bytes({"a": [0, 8]}, b"\0" * 8), "corrupt safetensors entry"),
    "negative-offset": (safetensors_bytes(two_tensors((-8, 0), (0, 8)), b"\0" * 8), "claims bytes -8-0"),
    "reversed-offsets": (safetensors_bytes(two_tensors((8, 0), (8, 16)), b"\0" * 16), "claims bytes 8-0"),
    "offsets-disagree-with-shape": (safetensors_bytes(two_tensors((0, 4), (4, 8)), b"\0" * 8), "shape needs 8"),
    "overlapping-offsets": (safetensors_bytes(two_tensors((0, 8), (4, 12)), b"\0" * 12), "overlaps"),
    "gapped-offsets": (safetensors_bytes(two_tensors((0, 8), (16, 24)), b"\0" * 24), "gap of 8 bytes"),
    "data-past-the-end": (safetensors_bytes(two_tensors((0, 8), (8, 16)), b"\0" * 12), "truncated or padded"),
    "padded-data": (safetensors_bytes(two_tensors((0, 8), (8, 16)), b"\0" * 20), "truncated or padded"),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("case", REFUSALS)
def test_each_refusal_is_one_clear_error(case: str, reader: str, tmp_path: Path) -> None:
    data, needle = REFUSALS[case]
    with pytest.raises(ModelLoadError, match=needle) as refused:
        READERS[reader](data, tmp_path)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "model.safetensors") if reader == "file" else "lab/tune@abc")


@pytest.mark.parametrize("reader", READERS)
def test_a_file_the_library_wrote_reads_as_the_library_reads_it(reader: str, tmp_path: Path) -> None:
    from safetensors.numpy import save

    arrays: dict[str, np.ndarray] = {
        "embed.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
        "norm.weight": np.ones(5, dtype=np.float16),
        "empty": np.zeros((0, 7), dtype=np.int64),
    }
    data = save(arrays, metadata={"format": "np"})

    header = READERS[reader](data, tmp_path)

    assert header.metadata == {"format": "np"}
    assert header.file_size == len(data)
    assert {name: (span.dtype, span.shape) for name, span in header.tensors.items()} == {
        "embed.weight": ("F32", (3, 4)), "norm.weight": ("F16", (5,)), "empty": ("I64", (0, 7)),
    }  # fmt: skip
    embed = header.tensors["embed.weight"]
    stored = np.frombuffer(data, dtype="<f4", count=embed.n_values, offset=header.offset("embed.weight"))
    np.testing.assert_array_equal(stored.reshape(embed.shape), arrays["embed.weight"])


def test_a_remote_header_costs_one_read_and_never_the_tensors() -> None:
    data = safetensors_bytes(two_tensors((0, 8), (8, 16)), b"\0" * 16)
    read = RecordingReader(data)
    read_header(read, len(data), where="remote")
    assert read.calls == [(0, len(data))]

    big = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(3000)}
    data = safetensors_bytes(big, b"\0" * 3000)
    read = RecordingReader(data)
    header = read_header(read, len(data), where="remote")
    assert len(header.tensors) == 3000
    assert read.calls == [(0, FIRST_READ_BYTES), (FIRST_READ_BYTES, header.data_start - FIRST_READ_BYTES)]


def test_a_remote_reply_shorter_than_promised_is_a_truncated_file() -> None:
    data = safetensors_bytes(two_tensors((0, 8), (8, 16)), b"\0" * 16)
    with pytest.raises(ModelLoadError, match=r"remote: truncated safetensors file \(read 3 bytes\)"):
        read_header(lambda offset, length: data[offset : offset + 3], len(data), where="remote")

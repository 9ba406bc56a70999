"""The GGUF header reader: the same tensor table as the gguf package, rows dequantized as stored, corrupt
headers refused in one line."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from bot.errors import ModelLoadError
from bot.reef import GGUF_TOKEN_EMBEDDING, decode_gguf_rows, gguf_bits_per_value, gguf_row_bytes, read_gguf_header
from bot.reef.gguf import read_gguf_file_header
from tests.builders import DEMO_MODELS
from tests.gguf_files import gguf_of


@pytest.fixture(scope="module")
def demo_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gguf_of(DEMO_MODELS / "source", tmp_path_factory.mktemp("gguf") / "source-Q8_0.gguf", embedding="Q8_0")


def test_the_header_is_the_one_the_gguf_package_reads(demo_gguf: Path) -> None:
    from gguf import GGUFReader

    header = read_gguf_file_header(demo_gguf)
    reference = GGUFReader(demo_gguf)
    assert header.architecture == "gpt2"
    assert {
        t.name: (tuple(int(d) for d in t.shape), int(t.tensor_type), int(t.data_offset)) for t in reference.tensors
    } == {name: (t.shape, t.kind, t.offset) for name, t in header.tensors.items()}
    assert header.metadata["gpt2.block_count"] == 4 and header.metadata["tokenizer.ggml.tokens"] is None


def test_rows_read_alone_are_the_rows_of_the_whole_tensor(demo_gguf: Path) -> None:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    header = read_gguf_file_header(demo_gguf)
    embedding = header.tensors[GGUF_TOKEN_EMBEDDING]
    assert gguf_bits_per_value(embedding) == 8.5 and gguf_row_bytes(embedding) == 64 // 32 * 34
    stored = next(t for t in GGUFReader(demo_gguf).tensors if t.name == GGUF_TOKEN_EMBEDDING)
    whole = dequantize(stored.data, stored.tensor_type)
    data = demo_gguf.read_bytes()
    size = gguf_row_bytes(embedding)
    for first, count in ((0, 1), (17, 3), (511, 1)):
        begin = embedding.offset + first * size
        np.testing.assert_array_equal(decode_gguf_rows(data[begin : begin + count * size], embedding),
                                      whole[first : first + count])  # fmt: skip


def test_quantizations_of_one_model_share_the_tokenizer_digest(demo_gguf: Path, tmp_path: Path) -> None:
    from gguf import GGUFReader

    f32 = read_gguf_file_header(gguf_of(DEMO_MODELS / "source", tmp_path / "source-F32.gguf", embedding="F32"))
    other = read_gguf_file_header(gguf_of(DEMO_MODELS / "finetune", tmp_path / "finetune.gguf"))
    header = read_gguf_file_header(demo_gguf)
    assert header.tokenizer_digest() == f32.tokenizer_digest() == other.tokenizer_digest()  # one demo tokenizer
    renamed = tmp_path / "renamed"
    shutil.copytree(DEMO_MODELS / "source", renamed)
    tokenizer = json.loads((renamed / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tokenizer["model"]["vocab"]
    vocab["reefguard"] = vocab.pop(max(vocab, key=vocab.__getitem__))  # one token spelt otherwise
    (renamed / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    assert (
        read_gguf_file_header(gguf_of(renamed, tmp_path / "renamed.gguf")).tokenizer_digest() != f32.tokenizer_digest()
    )

    metadata_only = tmp_path / "tokenizer.gguf"
    metadata_only.write_bytes(header.metadata_only())
    reread = GGUFReader(metadata_only)
    assert len(reread.tensors) == 0
    assert list(reread.fields) == list(GGUFReader(demo_gguf).fields)


@pytest.mark.parametrize(
    ("cut", "needle"),
    [
        (10, "past the end"),  # inside the counts
        (2000, "past the end"),  # inside the metadata
        (-100, "does not fit the file"),  # the last tensor's data cut short
    ],
)
def test_a_cut_file_is_refused_in_one_line(demo_gguf: Path, cut: int, needle: str) -> None:
    data = demo_gguf.read_bytes()[:cut]
    with pytest.raises(ModelLoadError, match=needle) as caught:
        read_gguf_header(lambda offset, length: data[offset : offset + length], len(data), where="repo@sha: x.gguf")
    assert str(caught.value).startswith("repo@sha: x.gguf: corrupt GGUF header (") and "\n" not in str(caught.value)


def _header(*fields: bytes, tensors: bytes = b"", n_tensors: int = 0) -> bytes:
    """A GGUF v3 prefix with these raw metadata fields and tensor table entries."""
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(fields)) + b"".join(fields) + tensors


def _string(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


def _tensor(name: str, shape: tuple[int, ...], kind: int = 0, offset: int = 0) -> bytes:
    return (
        _string(name)
        + struct.pack("<I", len(shape))
        + struct.pack(f"<{len(shape)}Q", *shape)
        + struct.pack("<IQ", kind, offset)
    )


def _nested(depth: int) -> bytes:
    inner = struct.pack("<IQ", 4, 0)  # an empty array of u32
    for _ in range(depth):
        inner = struct.pack("<IQ", 9, 1) + inner
    return _string("deep") + struct.pack("<I", 9) + inner


HOSTILE = {
    # 10 GiB claimed inside a 20 GiB file: refused before a byte of it is asked for
    "huge-string": (_header(_string("general.name") + struct.pack("<IQ", 8, 10 * 2**30)), "runs past 100,000,000"),
    "huge-array": (_header(_string("a") + struct.pack("<IIQ", 9, 0, 10 * 2**30)), "runs past 100,000,000"),
    "nested-arrays": (_header(_nested(5000)), "an array of arrays"),
    "zero-dimension": (_header(tensors=_tensor("t", (0, 10)), n_tensors=1), "does not fit the file"),
    "unknown-type": (_header(tensors=_tensor("t", (32,), kind=250), n_tensors=1), "unknown storage type 250"),
    "nine-dimensions": (_header(tensors=_tensor("t", (1,) * 9), n_tensors=1), "9 dimensions"),
    "zero-alignment": (_header(_string("general.alignment") + struct.pack("<II", 4, 0)), "general.alignment is 0"),
    "unknown-metadata-type": (_header(_string("x") + struct.pack("<I", 99)), "unknown metadata type 99"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_header_is_refused_without_reading_what_it_claims(case: str) -> None:
    prefix, needle = HOSTILE[case]
    size = 20 * 2**30
    asked: list[int] = []

    def read(offset: int, length: int) -> bytes:  # the prefix, then zeros: a file of 20 GiB that is never stored
        asked.append(length)
        if length > 2**27:
            raise AssertionError(f"asked for {length} bytes")
        return (prefix[offset : offset + length]).ljust(length, b"\0")

    with pytest.raises(ModelLoadError, match=needle):
        read_gguf_header(read, size, where="repo@sha: x.gguf")
    assert sum(asked) <= 2**27

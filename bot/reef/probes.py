"""The probe texts every fingerprint is taken on, and the loader for them.

REEF compares models by their hidden states on one fixed, ordered list of texts, so two fingerprints are
comparable only when they were taken on the same texts in the same order. Every probe set therefore carries
a content hash (``sha256`` of the JSON list of its texts) that each fingerprint records.

The bundled ``default`` set (``probes/default.jsonl``) holds about 600 short texts written for this project:
everyday facts and false-sounding claims, questions, code, fourteen other languages, and instructions,
dialogue, maths, lists, addresses and emoji, interleaved so that any prefix is a mixed sample.

Users may bring their own set as a file:

- ``.txt``: one probe per line; lines are stripped and blank lines skipped, so a text cannot span lines.
- ``.jsonl``: one object per line with a string ``"text"`` (taken verbatim); blank lines skipped.
- ``.csv``: a header row, then one probe per row from the ``text`` column, or the first column when there
  is none; texts are taken verbatim and may contain commas and newlines when quoted.

Duplicate texts are kept: the order and the count of texts are part of the set.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bot.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_PROBES = "default"
"""The name that selects the bundled probe set."""

# CKA centres each Gram matrix over the probes; with a single probe the centred Gram is all zeros.
_MIN_PROBES = 2
_SUFFIXES = (".txt", ".jsonl", ".csv")
_JSONL_HINT = 'write one object per line, like {"text": "..."}'


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeSet:
    """A fixed, ordered list of probe texts and the content hash that every fingerprint records.

    Attributes:
        name: ``"default"`` for the bundled set, else the file name (e.g. ``"my-probes.csv"``).
        texts: the probe texts, in the order the model sees them.
        sha256: hex sha256 of ``json.dumps(list(texts), ensure_ascii=False)`` encoded as UTF-8; equal
            hashes mean the same texts in the same order, whatever file format they came from.

    Example:
        >>> probes = load_probes()
        >>> probes.name, len(probes) == len(probes.texts)
        ('default', True)
    """

    name: str
    texts: tuple[str, ...]
    sha256: str

    def __len__(self) -> int:
        """Return the number of probe texts."""
        return len(self.texts)

    @classmethod
    def of(cls, name: str, texts: Sequence[str]) -> ProbeSet:
        """The probe set of ``texts`` in this order, with its content hash."""
        digest = hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode("utf-8")).hexdigest()
        return cls(name=name, texts=tuple(texts), sha256=digest)


def load_probes(spec: str | Path = DEFAULT_PROBES) -> ProbeSet:
    """Load a probe set: the bundled one by name, or a ``.txt``, ``.jsonl`` or ``.csv`` file.

    Args:
        spec: ``"default"`` for the bundled set, or the path of a probe file (see the module docstring
            for the formats).

    Returns:
        The texts in file order, named ``"default"`` or after the file, with their content hash.

    Raises:
        ConfigError: the file has another suffix, is missing or unreadable, is not UTF-8, is malformed
            (a bad JSON line, a line without a string ``"text"``, a CSV row without its text cell, an
            empty text) or holds fewer than two texts.

    Example:
        >>> probes = load_probes()
        >>> len(probes) >= 512, len(probes.sha256)
        (True, 64)
        >>> all(c in "0123456789abcdef" for c in probes.sha256)
        True
    """
    if isinstance(spec, str) and spec == DEFAULT_PROBES:
        bundled = resources.files("bot.reef").joinpath("probes/default.jsonl")
        texts = _parse_jsonl(bundled.read_text(encoding="utf-8"), where="default probe set")
        return _probe_set(DEFAULT_PROBES, texts, where="default probe set")

    path = Path(spec)
    where = str(spec)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        found = f"'{path.suffix}'" if path.suffix else "no suffix"
        raise ConfigError(
            f"{where}: unsupported probe file type ({found}); use a .txt, .jsonl or .csv file, "
            f"or '{DEFAULT_PROBES}' for the bundled set",
            path=path,
        )
    text = _read_text(path, where=where)
    if suffix == ".txt":
        texts = [line.strip() for line in text.split("\n") if line.strip()]
    elif suffix == ".jsonl":
        texts = _parse_jsonl(text, where=where, path=path)
    else:
        texts = _parse_csv(text, where=where, path=path)
    if not texts:
        if not text:
            reason = "the file is empty"
        elif suffix == ".csv" and text.strip():
            reason = "a header row but no data rows"
        else:
            reason = "only blank lines"
        raise ConfigError(f"{where}: no probe texts ({reason}); give at least {_MIN_PROBES}", path=path)
    return _probe_set(path.name, texts, where=where, path=path)


def _read_text(path: Path, *, where: str) -> str:
    """Read a probe file as UTF-8, keeping line endings as they are so quoted CSV newlines survive."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(
            f"{where}: no such probe file; check the path, or use '{DEFAULT_PROBES}' for the bundled set",
            path=path,
        ) from e
    except OSError as e:
        raise ConfigError(
            f"{where}: cannot read the probe file ({e.strerror or e}); check that it is a readable file",
            path=path,
        ) from e
    try:
        text = data.decode(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{where}: not valid UTF-8 (byte 0x{data[e.start]:02x} on line {line}); save the file as UTF-8",
            path=path,
        ) from e
    # Spreadsheet programs often start UTF-8 files with a byte order mark; it is not part of any text.
    return text.removeprefix("\ufeff")


def _parse_jsonl(text: str, *, where: str, path: Path | None = None) -> list[str]:
    """Return the ``"text"`` of every non-blank line of a JSON Lines document."""
    texts: list[str] = []
    # Split on "\n" only: str.splitlines would also split on U+2028, which JSON strings may hold raw.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{where}: line {number} is not valid JSON ({e.msg} at column {e.colno}); {_JSONL_HINT}",
                path=path,
            ) from e
        except RecursionError as e:
            raise ConfigError(f"{where}: line {number} is nested too deeply to read; {_JSONL_HINT}", path=path) from e
        value = record.get("text") if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise ConfigError(
                f'{where}: line {number} has no string "text" field; {_JSONL_HINT}', path=path, key="text"
            )
        if not value.strip():
            raise ConfigError(
                f'{where}: line {number} has an empty "text"; remove the line or give it a text',
                path=path,
                key="text",
            )
        texts.append(value)
    return texts


def _parse_csv(text: str, *, where: str, path: Path) -> list[str]:
    """Return the ``text`` column (else the first column) of every data row of a CSV document."""
    rows = csv.reader(io.StringIO(text))
    header = next((row for row in rows if any(cell.strip() for cell in row)), None)
    if header is None:
        return []
    names = [name.strip() for name in header]
    column = names.index("text") if "text" in names else 0
    label = names[column] or "1"
    texts: list[str] = []
    for row in rows:
        if not any(cell.strip() for cell in row):
            continue
        # rows.line_num counts physical lines, so it points at the right line even after quoted newlines.
        if column >= len(row) or not row[column].strip():
            raise ConfigError(
                f"{where}: line {rows.line_num} has no text in column '{label}'; "
                "give every row a text or remove the row",
                path=path,
                key=label,
            )
        texts.append(row[column])
    return texts


def _probe_set(name: str, texts: list[str], *, where: str, path: Path | None = None) -> ProbeSet:
    """Check the count, hash the texts and build the ProbeSet."""
    if len(texts) < _MIN_PROBES:
        raise ConfigError(
            f"{where}: only {len(texts)} probe text; give at least {_MIN_PROBES} "
            "(CKA compares the texts with each other)",
            path=path,
        )
    probes = ProbeSet.of(name, texts)
    logger.debug("loaded %d probes from %s (sha256 %s)", len(texts), where, probes.sha256)
    return probes


SURFACE_BUCKETS = 64


def surface_basis(texts: Sequence[str]) -> NDArray[np.float32]:
    """Orthonormal basis of what a probe's surface alone predicts: its last characters, length and line count.

    Every model's last-token state encodes the last token, so unrelated models that tokenize alike look alike
    (0.8 and more CKA between independent tiny models). Projecting this basis out of each Gram (see
    ``bot.reef.cka.condition_grams``) leaves the structure a model adds beyond the probe's surface. Features:
    hashed one-hot codes of the last 1, 2 and 3 characters (64 buckets each), length / 100 and newline count,
    centred over the probes.

    Returns:
        ``(m, r)`` float32 with orthonormal columns, r ≤ 194 (fewer when features coincide).

    Example:
        >>> basis = surface_basis(["a cat", "a dog", "two cats", "one dog"])
        >>> basis.shape[0], bool(np.allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-5))
        (4, True)
    """
    features = np.zeros((len(texts), 3 * SURFACE_BUCKETS + 2))
    for row, text in enumerate(texts):
        for n in (1, 2, 3):
            features[row, (n - 1) * SURFACE_BUCKETS + zlib.crc32(text[-n:].encode("utf-8")) % SURFACE_BUCKETS] = 1
        features[row, -2:] = len(text) / 100, text.count("\n")
    features -= features.mean(axis=0)
    left, singular, _ = np.linalg.svd(features, full_matrices=False)
    rank = int((singular > singular.max() * 1e-8).sum()) if singular.size else 0
    # Never project out everything: keep at least a quarter of the probe space for the comparison.
    rank = min(rank, len(texts) // 4)
    return np.ascontiguousarray(left[:, :rank], dtype=np.float32)

"""The fingerprint registry: a folder of plain files in git (``fingerprints/`` by default).

Layout, one folder per entry::

    fingerprints/
      gemma-3-270m/
        meta.yaml          metadata (Fingerprint.to_dict(), sorted keys, schema_version; hub_id when known)
        grams.safetensors  "grams": (layers, m(m+1)/2) float16 upper triangles of the centred Grams;
                           "probe_basis": (m, r) float16, the probes' surface basis (see bot.reef.probes)
        anchors.json       {"tokens": [...]}: the anchor tokens, as the model's tokenizer spells them
        anchors.safetensors  "rows": (tokens, hidden) float16 input-embedding rows (see bot.reef.weights)

The two anchor files are absent from entries made before weight evidence existed; such entries are checked
by their representations alone.

Beside the entries, ``.calibration/`` keeps what a check needs that does not depend on the suspect (each source's
null and the ceilings, ``bot.reef.verdict.calibration``), so that a check compares the suspect with the sources
only. It is written by ``add`` and ``remove`` (updated in place when one is kept, else computed from every entry)
and never by a check or a scan, which only read the registry: a checked-out registry stays as committed, so commit
``.calibration/`` with the entries. It carries two digests: one of the entries it was computed from and one of its
own bytes; a store that does not match the registry, or was edited, is not used: the check computes the nulls
itself, with one log line, and the next ``add``, ``remove`` or ``recalibrate`` (``reefguard registry calibrate``)
writes a fresh store.

Entries are found by name or by the sha256 of any of their weight files (the Git LFS oid / the Hub's
``lfs.sha256``). Every write goes to a temporary folder beside the entry and is renamed into place, so a crash
never leaves half an entry, and a failed fingerprint run writes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import yaml

from bot.errors import ConfigError, RegistryError
from bot.reef import (
    Anchors,
    Calibration,
    Fingerprint,
    calibrate,
    entries_digest,
    pack_grams,
    share_probes,
    unpack_grams,
)

META_FILE = "meta.yaml"
GRAMS_FILE = "grams.safetensors"
ANCHOR_TOKENS_FILE = "anchors.json"
ANCHOR_ROWS_FILE = "anchors.safetensors"
CALIBRATION_DIR = ".calibration"
CALIBRATION_ARRAYS = "nulls.safetensors"
CALIBRATION_META = "calibration.json"
# The calibration kept: the measure and conditioning ``check`` uses unless told otherwise.
KEPT_MEASURE = ("linear", True)
logger = logging.getLogger(__name__)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
# More probes than any probe set reefguard reads; a larger n_probes in meta.yaml is corruption (its Grams would
# take n_probes² floats per layer).
MAX_PROBES = 100_000


class _MetaLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases: reefguard never writes them, and a few nested aliases expand to
    billions of nodes (a "billion laughs" file hangs the reader)."""

    def fetch_alias(self) -> None:
        raise yaml.scanner.ScannerError(
            None, None, "YAML aliases (*name) are not allowed in a registry entry", self.get_mark()
        )


class _MetaDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that writes repeated values out instead of as aliases (which ``_MetaLoader`` refuses)."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def folder_write_problem(folder: Path) -> str | None:
    """Why files cannot be written into ``folder`` (created if missing), in words, or None if they can.

    Checked before slow work, so that a registry or report path that is a file or read-only fails at once.

    Example:
        >>> folder_write_problem(Path("/dev/null/reports"))
        '/dev/null is not a folder'
    """
    existing = next((p for p in (folder, *folder.absolute().parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error on one line: the problem and where (PyYAML's own message spans several lines)."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{error.problem or error.context or 'invalid YAML'}{where}"
    return " ".join(str(error).split())


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid registry name.

    Raises:
        ConfigError: not lowercase letters, digits, ``.``, ``_``, ``-`` (starting with a letter or digit).
    """
    if not _NAME.match(name):
        raise ConfigError(
            f"invalid registry name {name!r}: use lowercase letters, digits, '.', '_' and '-'", key="name"
        )
    return name


class Registry:
    """The fingerprints in one folder; iterating yields every entry, sorted by name.

    Args:
        root: the registry folder.

    Example:
        >>> registry = Registry(Path("fingerprints"))  # doctest: +SKIP
        >>> [fp.name for fp in registry]  # doctest: +SKIP
        ['all-minilm-l6-v2', 'demo-source', 'gemma-3-270m']
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def __iter__(self) -> Iterator[Fingerprint]:
        for name in self.names():
            yield self.get(name)

    def names(self) -> list[str]:
        """Entry names, sorted.

        Raises:
            RegistryError: the registry folder does not exist.
        """
        if not self.root.is_dir():
            raise RegistryError(
                f"{self.root}: no fingerprint registry here; add a source with "
                f"`reefguard fingerprint MODEL --name NAME --registry {self.root}`",
                path=self.root,
            )
        return sorted(p.name for p in self.root.iterdir() if (p / META_FILE).is_file() and _NAME.match(p.name))

    def get(self, key: str) -> Fingerprint:
        """The entry with this name, or whose weights include a file with this sha256.

        Raises:
            RegistryError: no such entry, or the entry's files are unreadable or inconsistent.
        """
        if _NAME.match(key) and (self.root / key / META_FILE).is_file():
            return self._read(self.root / key)
        for name in self.names():
            fingerprint = self._read(self.root / name)
            if key in fingerprint.weight_sha256.values():
                return fingerprint
        raise RegistryError(f"{self.root}: no entry named {key!r} or with weights of that sha256", path=self.root)

    def check_can_add(self, name: str, *, replace: bool = False) -> None:
        """Check, before any slow work, that ``add`` could write an entry named ``name`` here.

        Raises:
            ConfigError: the name is invalid.
            RegistryError: the name is taken (and ``replace`` is false), the registry path is not a folder, or
                the folder (or the nearest existing folder above it) is not writable.
        """
        final = self.root / check_name(name)
        if final.exists() and not replace:
            raise RegistryError(
                f"{final}: an entry named {name!r} exists; remove it first or pass --replace", path=final
            )
        problem = folder_write_problem(self.root)
        if problem is not None:
            raise RegistryError(
                f"{self.root}: cannot hold a registry, {problem}; pass --registry FOLDER", path=self.root
            )

    def add(self, fingerprint: Fingerprint, *, replace: bool = False) -> Path:
        """Write an entry atomically and return its folder.

        A replaced entry's ``hub_id`` is kept when the new fingerprint carries none (re-fingerprinting a source
        does not forget where it is published).

        Raises:
            RegistryError: the name is taken and ``replace`` is false; the registry cannot be written.
            ConfigError: the name is invalid.
        """
        self.check_can_add(fingerprint.name, replace=replace)
        final = self.root / fingerprint.name
        if fingerprint.hub_id is None and (final / META_FILE).is_file():
            fingerprint = dataclasses.replace(fingerprint, hub_id=_stored_hub_id(final))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RegistryError(f"{self.root}: cannot create the registry folder ({e.strerror})", path=self.root) from e
        kept = self._kept_calibration()
        replaced = (final / META_FILE).is_file()
        staging = Path(tempfile.mkdtemp(prefix=f".{fingerprint.name}.", dir=self.root))
        try:
            self._write(staging, fingerprint)
            if final.exists():
                retired = Path(tempfile.mkdtemp(prefix=f".{fingerprint.name}.old.", dir=self.root))
                os.replace(final, retired / fingerprint.name)
                os.replace(staging, final)
                shutil.rmtree(retired)
            else:
                os.replace(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        if kept is None:
            self.recalibrate()
        else:
            self._update_calibration(kept, fingerprint.name, replaced=replaced)
        return final

    def _update_calibration(self, kept: Calibration, name: str, *, replaced: bool) -> None:
        """Bring the kept calibration up to date with the entry just written as ``name``."""
        if replaced:
            kept = kept.without_entry(name)
        added = self._read(self.root / name)  # as a check will read it: Grams rounded to float16
        sources = [null.source for null in kept.sources]
        everyone = list(self) if added.role == "source" else []
        if not share_probes((*sources, *everyone, added)):
            logger.info("%s: %s uses other probes than the registry; calibration dropped", self._store, name)
            shutil.rmtree(self._store, ignore_errors=True)
            return
        self._keep_calibration(kept.with_entry(added, sources, everyone))

    def recalibrate(self) -> bool:
        """Keep a calibration computed from every entry (after entries were copied or edited by hand), or none
        where the entries use other probes (a check refuses such a registry until one is re-fingerprinted).

        Returns:
            Whether a calibration is kept now (False: other probes, or the folder cannot be written).
        """
        entries = list(self)
        if not share_probes(entries):
            shutil.rmtree(self._store, ignore_errors=True)
            return False
        measure, conditioned = KEPT_MEASURE
        return self._keep_calibration(calibrate(entries, measure=measure, conditioned=conditioned))

    def set_hub_id(self, name: str, hub_id: str | None) -> None:
        """Record (or, with None, forget) the Hub id of the entry ``name``; its arrays are left as they are.

        ``hub_id`` is expected checked already (``bot.sources.parse_hub_id``): this is the file format, not the
        user's input.

        Raises:
            RegistryError: no entry of that name, or it is unreadable.
        """
        folder = self.root / check_name(name)
        if not (folder / META_FILE).is_file():
            raise RegistryError(f"{self.root}: no entry named {name!r}", path=self.root)
        fingerprint = dataclasses.replace(self._read(folder), hub_id=hub_id)
        staging = folder / f".{META_FILE}.new"
        try:
            staging.write_text(_meta_text(fingerprint), encoding="utf-8")
            os.replace(staging, folder / META_FILE)
        except OSError as e:
            staging.unlink(missing_ok=True)
            raise RegistryError(f"{folder}: cannot write {META_FILE} ({e.strerror})", path=folder) from e

    def remove(self, name: str) -> None:
        """Delete an entry.

        Raises:
            RegistryError: no entry of that name.
        """
        folder = self.root / check_name(name)
        if not (folder / META_FILE).is_file():
            raise RegistryError(f"{self.root}: no entry named {name!r}", path=self.root)
        kept = self._kept_calibration()
        shutil.rmtree(folder)
        if kept is None:
            self.recalibrate()
        else:
            self._keep_calibration(kept.without_entry(name))

    def calibration(self, entries: Sequence[Fingerprint], *, measure: str, conditioned: bool) -> Calibration | None:
        """The kept calibration of ``entries`` (this registry's, as just read) when it is current; None when it is
        missing, stale or edited (the caller computes what it needs: a check only reads the registry) or for a
        measure other than the kept one (``KEPT_MEASURE``).
        """
        if (measure, conditioned) != KEPT_MEASURE:
            return None
        kept = self._kept_calibration(entries)
        if kept is not None and kept.entries_digest == entries_digest(entries):
            return kept
        if kept is not None:
            logger.warning("%s: the kept calibration is stale (entries changed); recomputing it", self._store)
        return None

    @property
    def _store(self) -> Path:
        return self.root / CALIBRATION_DIR

    def _kept_calibration(self, entries: Sequence[Fingerprint] | None = None) -> Calibration | None:
        """The kept calibration if it is intact and lists exactly the entries on disk; None (and one log line
        saying why, when there is one) otherwise. Sources are taken from ``entries`` when given, else read."""
        from safetensors.numpy import load_file

        store = self._store
        if not (store / CALIBRATION_META).is_file() or not self.root.is_dir():
            return None
        try:
            meta_bytes = (store / CALIBRATION_META).read_bytes()
            arrays_bytes = (store / CALIBRATION_ARRAYS).read_bytes()
            meta = json.loads(meta_bytes)
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
            if meta.pop("store_sha256", None) != _store_digest(arrays_bytes, meta):
                logger.warning("%s: does not match its digest (edited?); recomputing it", store)
                return None
            names = [item[0] for item in meta["entries"]]
            if names != self.names():
                logger.warning("%s: lists other entries than %s holds; recomputing it", store, self.root)
                return None
            by_name = {fp.name: fp for fp in entries} if entries is not None else None
            sources = {name: by_name[name] if by_name is not None else self.get(name) for name in meta["sources"]}
            return Calibration.from_store(load_file(str(store / CALIBRATION_ARRAYS)), meta, sources)
        except (OSError, ValueError, KeyError, TypeError, RegistryError) as e:
            logger.warning("%s: unreadable (%s); recomputing it", store, _one_line(e))
            return None

    def _keep_calibration(self, calibration: Calibration) -> bool:
        """Write the calibration beside the entries (atomically); a registry that cannot be written keeps none."""
        from safetensors.numpy import save

        arrays, meta = calibration.to_store()
        arrays_bytes = save(arrays)
        meta["store_sha256"] = _store_digest(arrays_bytes, meta)
        staging = self.root / f"{CALIBRATION_DIR}.new"
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            (staging / CALIBRATION_ARRAYS).write_bytes(arrays_bytes)
            (staging / CALIBRATION_META).write_text(json.dumps(meta, indent=0) + "\n", encoding="utf-8")
            shutil.rmtree(self._store, ignore_errors=True)
            os.replace(staging, self._store)
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            logger.info("%s: calibration not kept (%s)", self.root, _one_line(e))
            return False
        return True

    @staticmethod
    def _write(folder: Path, fingerprint: Fingerprint) -> None:
        from safetensors.numpy import save_file

        # No safetensors metadata: the library writes its keys in hash order, and the file must be byte-stable.
        save_file(
            {"grams": pack_grams(fingerprint.grams), "probe_basis": fingerprint.probe_basis.astype(np.float16)},
            str(folder / GRAMS_FILE),
        )
        if fingerprint.anchors is not None:
            save_file({"rows": fingerprint.anchors.rows.astype(np.float16)}, str(folder / ANCHOR_ROWS_FILE))
            tokens = json.dumps({"tokens": fingerprint.anchors.tokens}, ensure_ascii=False, indent=0)
            (folder / ANCHOR_TOKENS_FILE).write_text(tokens + "\n", encoding="utf-8")
        (folder / META_FILE).write_text(_meta_text(fingerprint), encoding="utf-8")

    @staticmethod
    def _read(folder: Path) -> Fingerprint:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        meta_path = folder / META_FILE
        try:
            meta = yaml.load(meta_path.read_text(encoding="utf-8"), Loader=_MetaLoader)  # a SafeLoader
        except yaml.YAMLError as e:
            raise RegistryError(f"{meta_path}: not valid YAML ({_yaml_problem(e)})", path=meta_path) from e
        except (OSError, UnicodeDecodeError) as e:
            raise RegistryError(f"{meta_path}: unreadable ({_one_line(e)})", path=meta_path) from e
        except RecursionError as e:
            raise RegistryError(f"{meta_path}: YAML nested too deeply to read", path=meta_path) from e
        n_probes = meta.get("n_probes") if isinstance(meta, dict) else None
        if not isinstance(n_probes, int) or isinstance(n_probes, bool):
            raise RegistryError(f"{meta_path}: not a fingerprint metadata mapping", path=meta_path)
        if not 0 < n_probes <= MAX_PROBES:
            raise RegistryError(f"{meta_path}: n_probes {n_probes} is outside 1..{MAX_PROBES}", path=meta_path)
        try:
            arrays = load_file(str(folder / GRAMS_FILE))
            packed, basis = arrays["grams"], arrays["probe_basis"]
            anchors = _read_anchors(folder)
        except (OSError, SafetensorError, KeyError, ValueError, TypeError, RecursionError) as e:
            raise RegistryError(f"{folder}: unreadable registry entry ({_one_line(e)})", path=folder) from e
        if packed.ndim != 2 or packed.shape[1] != n_probes * (n_probes + 1) // 2:
            raise RegistryError(
                f"{folder / GRAMS_FILE}: Grams of shape {packed.shape} do not hold {n_probes} probes", path=folder
            )
        try:
            return Fingerprint.from_dict(meta, unpack_grams(packed, meta["n_probes"]), basis, anchors)
        except RegistryError as e:
            raise RegistryError(f"{meta_path}: {e}", path=meta_path) from e
        except (TypeError, ValueError) as e:
            raise RegistryError(f"{meta_path}: malformed metadata ({e})", path=meta_path) from e


def _store_digest(arrays: bytes, meta: dict[str, object]) -> str:
    """sha256 over a calibration store's arrays and its metadata (without this digest)."""
    digest = hashlib.sha256(arrays)
    digest.update(json.dumps(meta, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()


def _meta_text(fingerprint: Fingerprint) -> str:
    return yaml.dump(
        fingerprint.to_dict(), Dumper=_MetaDumper, sort_keys=True, allow_unicode=True, default_flow_style=False
    )


def _stored_hub_id(folder: Path) -> str | None:
    """The ``hub_id`` in an entry's metadata; None when it has none or is too broken to read (it is replaced)."""
    try:
        meta = yaml.load((folder / META_FILE).read_text(encoding="utf-8"), Loader=_MetaLoader)
    except (yaml.YAMLError, OSError, UnicodeDecodeError, RecursionError):
        return None
    hub_id = meta.get("hub_id") if isinstance(meta, dict) else None
    return hub_id if isinstance(hub_id, str) else None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, RecursionError):
        return "nested too deeply to read"
    return text[:300] or type(error).__name__


def _read_anchors(folder: Path) -> Anchors | None:
    """An entry's anchor tokens and rows, or None when it has none (made before weight evidence).

    Raises:
        OSError, SafetensorError, KeyError, ValueError, TypeError: one of the two files is missing or malformed.
    """
    from safetensors.numpy import load_file

    if not (folder / ANCHOR_TOKENS_FILE).exists() and not (folder / ANCHOR_ROWS_FILE).exists():
        return None
    tokens = json.loads((folder / ANCHOR_TOKENS_FILE).read_text(encoding="utf-8"))["tokens"]
    if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
        raise ValueError(f"{ANCHOR_TOKENS_FILE} holds no list of token strings")
    rows = load_file(str(folder / ANCHOR_ROWS_FILE))["rows"].astype(np.float32)
    rows.setflags(write=False)
    return Anchors(tuple(tokens), rows)

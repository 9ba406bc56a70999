"""The registry as a file format: atomic writes, lookups, pinned bytes."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from bot.errors import ConfigError, RegistryError
from bot.reef import Fingerprint
from bot.registry import GRAMS_FILE, META_FILE, Registry
from tests.builders import synthetic_fingerprint


def tiny(name: str = "tiny", seed: int = 0, **kwargs: object) -> Fingerprint:
    rng = np.random.default_rng(seed)
    return synthetic_fingerprint(name, rng.standard_normal((2, 8, 5)), **kwargs)  # type: ignore[arg-type]


def test_add_then_read_back_equal(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "fp")
    fp = tiny(related=("parent",))
    folder = registry.add(fp)
    assert sorted(p.name for p in folder.iterdir()) == [GRAMS_FILE, META_FILE]
    back = registry.get("tiny")
    assert back == fp and back.digest == fp.digest
    np.testing.assert_array_equal(back.grams, fp.grams)
    assert registry.names() == ["tiny"] and [f.name for f in registry] == ["tiny"]


def test_lookup_by_weight_sha256(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    fp = tiny()
    registry.add(fp)
    assert registry.get(fp.weight_sha256["model.safetensors"]).name == "tiny"
    with pytest.raises(RegistryError, match="no entry"):
        registry.get("0" * 64)


def test_name_taken_unless_replace(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.add(tiny(seed=0))
    with pytest.raises(RegistryError, match="--replace"):
        registry.add(tiny(seed=1))
    registry.add(tiny(seed=1), replace=True)
    assert registry.get("tiny").digest == tiny(seed=1).digest
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no staging or retired folders left


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(tmp_path)

    def crash(folder: Path, fingerprint: Fingerprint) -> None:
        (folder / META_FILE).write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(Registry, "_write", staticmethod(crash))
    with pytest.raises(OSError, match="disk full"):
        registry.add(tiny())
    assert list(tmp_path.iterdir()) == []


def test_remove(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.add(tiny())
    registry.remove("tiny")
    assert registry.names() == []
    with pytest.raises(RegistryError, match="no entry"):
        registry.remove("tiny")


def test_missing_registry_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="reefguard fingerprint MODEL --name NAME"):
        list(Registry(tmp_path / "nowhere"))


def test_invalid_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid registry name"):
        Registry(tmp_path).add(tiny(name="Bad Name"))


def test_tampered_grams_are_detected(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.add(tiny(name="a", seed=0))
    registry.add(tiny(name="b", seed=1))
    (tmp_path / "a" / GRAMS_FILE).write_bytes((tmp_path / "b" / GRAMS_FILE).read_bytes())
    with pytest.raises(RegistryError, match="digest"):
        registry.get("a")


def test_unknown_schema_version(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.add(tiny())
    meta = tmp_path / "tiny" / META_FILE
    meta.write_text(meta.read_text().replace("schema_version: 1", "schema_version: 9"))
    with pytest.raises(RegistryError, match="schema_version"):
        registry.get("tiny")


def test_golden_bytes(tmp_path: Path) -> None:
    """The on-disk format is pinned: changing these bytes means bumping schema_version."""
    folder = Registry(tmp_path).add(tiny())
    meta = (folder / META_FILE).read_text(encoding="utf-8")
    assert meta.startswith("architecture: SyntheticModel\ncreated: '2026-01-01T00:00:00+00:00'\n")
    assert meta.endswith(
        "tool_version: 0.1.0\nweight_sha256:\n  model.safetensors: " + hashlib.sha256(b"tiny").hexdigest() + "\n"
    )
    digests = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()[:16] for name in (META_FILE, GRAMS_FILE)}
    assert digests == {META_FILE: "ee39104820908312", GRAMS_FILE: "d949533dbd7fb9b6"}


def test_hub_id_set_read_back_and_kept_on_replace(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.add(tiny())
    assert registry.get("tiny").hub_id is None
    registry.set_hub_id("tiny", "org/tiny")
    assert registry.get("tiny").hub_id == "org/tiny"
    assert "hub_id: org/tiny\n" in (tmp_path / "tiny" / META_FILE).read_text(encoding="utf-8")
    registry.add(tiny(seed=1), replace=True)  # re-fingerprinted without a Hub id: the recorded one stays
    assert registry.get("tiny").hub_id == "org/tiny" and registry.get("tiny").digest == tiny(seed=1).digest
    registry.add(dataclasses.replace(tiny(), hub_id="org/other"), replace=True)
    assert registry.get("tiny").hub_id == "org/other"
    registry.set_hub_id("tiny", None)
    assert registry.get("tiny").hub_id is None
    assert "hub_id" not in (tmp_path / "tiny" / META_FILE).read_text(encoding="utf-8")


def test_hub_id_of_a_missing_entry_or_not_a_string(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.add(tiny())
    with pytest.raises(RegistryError, match="no entry named 'other'"):
        registry.set_hub_id("other", "org/other")
    meta = tmp_path / "tiny" / META_FILE
    meta.write_text(meta.read_text(encoding="utf-8") + "hub_id: [org, tiny]\n", encoding="utf-8")
    with pytest.raises(RegistryError, match="hub_id is not a string"):
        registry.get("tiny")

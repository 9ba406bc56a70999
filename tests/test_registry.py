"""The registry as a file format: atomic writes, lookups, pinned bytes."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from bot.errors import ConfigError, RegistryError
from bot.reef import Anchors, Fingerprint, Verdict, WeightEvidence, WeightJudge, calibrate, compare
from bot.registry import CALIBRATION_DIR, GRAMS_FILE, META_FILE, Registry
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
    assert sorted(p.name for p in tmp_path.iterdir()) == [".calibration", "tiny"]  # no staging or retired folders


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


# The kept calibration (issue 16 item 3): what a check needs that does not depend on the suspect.

TOKENS = tuple(f"t{i}" for i in range(80))


def member(name: str, seed: int, *, base: int | None = None, **kwargs: object) -> Fingerprint:
    """A synthetic entry with anchor rows; ``base`` makes it a noisy copy of that seed's model (a derivative)."""
    own = np.random.default_rng(seed)
    parent = np.random.default_rng(seed if base is None else base)
    states, rows = parent.standard_normal((2, 8, 5)), parent.standard_normal((80, 16))
    if base is not None:
        states, rows = states + 0.3 * own.standard_normal(states.shape), rows + 0.2 * own.standard_normal(rows.shape)
    anchors = Anchors(TOKENS, rows.astype(np.float16).astype(np.float32))
    return synthetic_fingerprint(name, states, anchors=anchors, **kwargs)  # type: ignore[arg-type]


def population(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry")
    for k in range(3):
        registry.add(member(f"source-{k}", k))
    for k in range(6):
        registry.add(member(f"ref-{k}", 10 + k, role="reference"))
    return registry


def assert_same_reports(suspect: Fingerprint, registry: Registry, *, exact: bool = True) -> None:
    """The report with the registry's kept nulls equals the report with every null computed here; ``exact=False``
    allows the last bits of scores added one entry at a time (another order of the same sums)."""
    recomputed = compare(suspect, list(registry)).to_dict()  # a list keeps nothing: every null computed here
    kept = compare(suspect, registry).to_dict()
    assert kept == (recomputed if exact else _close(recomputed))


def _close(value: object) -> object:
    if isinstance(value, dict):
        return {key: _close(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_close(item) for item in value]
    return pytest.approx(value, rel=1e-12, abs=1e-15) if isinstance(value, float) else value


def test_kept_calibration_gives_the_reports_of_recomputed_nulls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = population(tmp_path)
    derived = member("suspect", 99, base=1)
    assert (registry.root / CALIBRATION_DIR).is_dir()  # written by add
    assert compare(derived, registry).verdict is Verdict.DERIVED
    for suspect in (derived, member("stranger", 50)):
        assert_same_reports(suspect, registry, exact=False)  # kept entry by entry: sums in another order
    assert "recomputing" not in caplog.text


def test_add_and_remove_keep_the_calibration_current(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = population(tmp_path)
    suspect = member("suspect", 99, base=2)
    registry.add(member("ref-new", 30, role="reference"))
    registry.add(member("source-new", 31))
    registry.add(member("source-2-ft", 32, base=2, role="reference", related=("source-2",)))
    registry.add(member("source-0", 33), replace=True)
    registry.remove("ref-3")
    registry.remove("source-1")
    entries = list(registry)
    kept = registry.calibration(entries, measure="linear", conditioned=True)
    fresh = calibrate(entries)
    assert kept is not None and kept.entries_digest == fresh.entries_digest
    for stored, recomputed in zip(kept.sources, fresh.sources, strict=True):
        assert stored.source.name == recomputed.source.name
        np.testing.assert_array_equal(stored.members, recomputed.members)
        np.testing.assert_allclose(stored.scores, recomputed.scores, rtol=0, atol=1e-12)
        for statistic, values in recomputed.weight_scores.items():
            np.testing.assert_allclose(stored.weight_scores[statistic], values, rtol=0, atol=1e-12)
    assert "recomputing" not in caplog.text
    assert_same_reports(suspect, registry, exact=False)


def test_an_edited_or_stale_calibration_is_recomputed_never_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = population(tmp_path)
    suspect = member("suspect", 99, base=0)
    expected = compare(suspect, list(registry)).to_dict()
    meta = registry.root / CALIBRATION_DIR / "calibration.json"
    kept = meta.read_text(encoding="utf-8")
    meta.write_text(kept.replace('"conditioned": true', '"conditioned": false'), encoding="utf-8")
    assert compare(suspect, registry).to_dict() == expected
    assert caplog.text.count("does not match its digest (edited?); recomputing it") == 1
    meta.write_text(kept, encoding="utf-8")
    caplog.clear()
    entry = registry.root / "ref-0" / META_FILE  # an entry changed behind the registry's back
    entry.write_text(entry.read_text(encoding="utf-8").replace("related: []", "related:\n- source-0"), encoding="utf-8")
    assert compare(suspect, registry).to_dict() == compare(suspect, list(registry)).to_dict()
    assert caplog.text.count("stale (entries changed); recomputing it") == 1


def test_a_check_only_reads_the_registry(tmp_path: Path) -> None:
    registry = population(tmp_path)
    shutil.rmtree(registry.root / CALIBRATION_DIR)  # a registry committed without its calibration
    before = {path: path.read_bytes() for path in registry.root.rglob("*") if path.is_file()}
    suspect = member("suspect", 99, base=1)
    assert compare(suspect, registry).to_dict() == compare(suspect, list(registry)).to_dict()
    assert WeightJudge(registry).judge(suspect.anchors).unrelated is False  # type: ignore[arg-type]
    assert {path: path.read_bytes() for path in registry.root.rglob("*") if path.is_file()} == before
    registry.remove("ref-5")  # the next write keeps a calibration of every entry
    assert registry.calibration(list(registry), measure="linear", conditioned=True) is not None
    assert (registry.root / CALIBRATION_DIR).is_dir()
    assert_same_reports(suspect, registry)


def test_the_committed_registry_keeps_a_current_calibration(caplog: pytest.LogCaptureFixture) -> None:
    """After changing fingerprints/ by hand, run ``reefguard registry calibrate`` and commit .calibration/ too."""
    registry = Registry(Path(__file__).resolve().parents[1] / "fingerprints")
    assert (registry.root / CALIBRATION_DIR).is_dir()
    assert registry.calibration(list(registry), measure="linear", conditioned=True) is not None
    assert "recomputing" not in caplog.text


def test_a_calibration_that_is_not_an_object_is_recomputed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = population(tmp_path)
    suspect = member("suspect", 99, base=0)
    (registry.root / CALIBRATION_DIR / "calibration.json").write_text('"not a store"', encoding="utf-8")
    assert compare(suspect, registry).to_dict() == compare(suspect, list(registry)).to_dict()
    assert "unreadable (not a JSON object); recomputing it" in caplog.text


def test_an_entry_with_other_probes_drops_the_calibration(tmp_path: Path) -> None:
    registry = population(tmp_path)
    registry.add(member("odd", 40, probe_sha256="1" * 64))
    assert not (registry.root / CALIBRATION_DIR).exists()
    registry.add(member("ref-new", 41, role="reference"))
    assert not (registry.root / CALIBRATION_DIR).exists()
    assert registry.recalibrate() is False
    with pytest.raises(RegistryError, match="same --probes"):
        compare(member("suspect", 99), registry)


def test_the_weight_judge_takes_the_kept_nulls(tmp_path: Path) -> None:
    registry = population(tmp_path)
    kept, recomputed = WeightJudge(registry), WeightJudge(list(registry))
    for name, seed, base in (("copy", 98, 1), ("stranger", 97, None)):
        anchors = member(name, seed, base=base).anchors
        assert anchors is not None
        a, b = kept.judge(anchors), recomputed.judge(anchors)
        assert (a.unrelated, a.reason) == (b.unrelated, b.reason) and a.unrelated == (base is None)
        assert _evidence(a.evidence) == _evidence(b.evidence)


def _evidence(evidence: Mapping[str, WeightEvidence | None]) -> dict[str, object]:
    return {name: None if found is None else found.to_dict() for name, found in evidence.items()}

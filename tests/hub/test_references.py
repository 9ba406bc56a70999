"""`reefguard hub add-references`: the committed list of real base models becomes pinned reference entries.

The Hub double serves small models built by the test suite under the names a list would use; the real
huggingface_hub client fetches them. Nothing is patched.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from bot.cli import ExitCode, main
from bot.errors import ConfigError
from bot.hub.references import load_reference_list
from bot.registry import Registry
from tests.doubles.hub_server import HubServer
from tests.hub.conftest import plant, sha_of, weight_downloads
from tests.hub.test_bad_input import EVIL_PICKLE

ROOT = Path(__file__).resolve().parents[2]


def write_list(path: Path, entries: list[dict[str, object]]) -> Path:
    path.write_text(yaml.safe_dump({"schema_version": 1, "references": entries}, sort_keys=False), encoding="utf-8")
    return path


def entry(name: str, repo: str, revision: str | None = None, size: str = "1M") -> dict[str, object]:
    return {"name": name, "repo": repo, "revision": revision, "family": name, "parameters": size}


@pytest.fixture
def registry_copy(hub_registry: Path, tmp_path: Path) -> Path:
    """A writable copy of the Hub tests' registry (the demo source and six toy references)."""
    target = tmp_path / "fingerprints"
    shutil.copytree(hub_registry, target)
    return target


def args(hub: HubServer, listing: Path, registry: Path, probes: Path, *extra: str) -> list[str]:
    return ["hub", "add-references", "--endpoint", hub.url, "--list", str(listing), "--registry", str(registry),
            "--probes", str(probes), "-q", *extra]  # fmt: skip


def test_listed_models_become_pinned_reference_entries_once(
    hub: HubServer, registry_copy: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(hub, tmp_path, "gpt-lab/base-a", "ref-gpt2-code-b")
    plant(hub, tmp_path, "llama-lab/base-b", "ref-llama-prose")
    pinned = plant(hub, tmp_path, "qwen-lab/base-c", "ref-qwen2-prose")
    plant(hub, tmp_path, "qwen-lab/base-c", "ref-qwen2-code", version=1)  # main moved on; the list pins version 0
    plant(hub, tmp_path, "old-lab/pickled", "ref-gpt2-code")
    (hub.file_root("old-lab/pickled") / "model.safetensors").unlink()
    (hub.file_root("old-lab/pickled") / "pytorch_model.bin").write_bytes(EVIL_PICKLE)
    listing = write_list(tmp_path / "references.yaml", [
        entry("real-a", "gpt-lab/base-a"),
        entry("real-b", "llama-lab/base-b"),
        entry("real-c", "qwen-lab/base-c", revision=pinned),
        entry("real-pickled", "old-lab/pickled"),
    ])  # fmt: skip

    code = main(args(hub, listing, registry_copy, probe_file))

    out = capsys.readouterr().out
    assert code == ExitCode.OK
    registry = Registry(registry_copy)
    added = {name: registry.get(name) for name in ("real-a", "real-b", "real-c")}
    assert {fp.role for fp in added.values()} == {"reference"}
    assert {name: fp.hub_id for name, fp in added.items()} == {
        "real-a": "gpt-lab/base-a", "real-b": "llama-lab/base-b", "real-c": "qwen-lab/base-c"
    }  # fmt: skip
    assert added["real-a"].revision == sha_of("gpt-lab/base-a") and added["real-a"].model.endswith(
        f"@{sha_of('gpt-lab/base-a')}"
    )  # unpinned in the list: pinned to the commit main pointed at
    assert added["real-c"].revision == pinned  # the list's pin, not main
    assert added["real-b"].architecture.startswith("Llama")
    assert "real-pickled" not in registry.names()
    assert "skipped  real-pickled" in out and "only pickle weights" in out
    assert weight_downloads(hub, "old-lab/pickled") == []
    assert "3 added, 0 present, 1 skipped, 0 failed" in out

    seen = len(hub.requests)
    before = {name: (registry_copy / name / "meta.yaml").read_bytes() for name in added}
    plant(hub, tmp_path, "gpt-lab/base-a", "ref-gpt2-code", version=1)  # a new commit does not re-add it

    assert main(args(hub, listing, registry_copy, probe_file)) == ExitCode.OK

    again = capsys.readouterr().out
    assert "3 present" in again and "1 skipped" in again
    assert all(r.path.startswith(("/api/models/old-lab/", "/old-lab/", "/cdn/")) for r in hub.requests[seen:])
    assert {name: (registry_copy / name / "meta.yaml").read_bytes() for name in added} == before


def test_a_failing_model_leaves_the_others_written_and_exits_3(
    hub: HubServer, registry_copy: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(hub, tmp_path, "gpt-lab/base-a", "ref-gpt2-code-b")
    plant(hub, tmp_path, "gone-lab/flaky", "ref-llama-prose")
    hub.misbehave_next("/api/models/gone-lab/flaky", body=b"<html>oops</html>", times=20)
    listing = write_list(
        tmp_path / "references.yaml", [entry("flaky", "gone-lab/flaky"), entry("real-a", "gpt-lab/base-a")]
    )

    code = main(args(hub, listing, registry_copy, probe_file))

    captured = capsys.readouterr()
    assert code == ExitCode.ERROR
    assert captured.err.strip().splitlines()[-1].startswith("reefguard: error: 1 reference models failed (flaky)")
    assert "Traceback" not in captured.err
    assert "failed   flaky" in captured.out and "unusable answer from the Hub (not JSON)" in captured.out
    assert "real-a" in Registry(registry_copy).names() and "flaky" not in Registry(registry_copy).names()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.update(revision="main"), "revision: 'main': use a 40-hex commit sha"),
        (lambda e: e.update(colour="red"), "unknown keys ['colour']"),
        (lambda e: e.update(repo="not a repo"), "is not a Hub repo id"),
        (lambda e: e.update(parameters="big"), "parameters: 'big' is not a parameter count"),
        (lambda e: e.update(name="Bad Name"), "invalid registry name"),
    ],
    ids=["branch", "unknown-key", "repo", "size", "name"],
)
def test_a_bad_list_is_refused_with_the_key_path(
    tmp_path: Path, mutate: Callable[[dict[str, object]], None], message: str
) -> None:
    bad = entry("ok", "org/model")
    mutate(bad)
    path = write_list(tmp_path / "references.yaml", [entry("first", "org/first"), bad])
    with pytest.raises(ConfigError, match="references\\[1\\]") as raised:
        load_reference_list(path)
    assert message in str(raised.value)


def test_the_committed_list_spans_families_and_sizes_without_duplicates() -> None:
    models = load_reference_list(ROOT / "fingerprints" / "references.yaml")
    assert len({model.family for model in models}) >= 8
    sizes = sorted(model.parameters for model in models)
    assert sizes[0] <= 150_000_000 and sizes[-1] >= 1_000_000_000
    # Gemma 3 270M, a registry source, has references within 10x of its size on both sides.
    assert any(27_000_000 <= s < 270_000_000 for s in sizes) and any(270_000_000 < s <= 2_700_000_000 for s in sizes)
    registry = Registry(ROOT / "fingerprints")
    for model in models:  # entries already added are references of the listed repo, never a source renamed
        if model.name in registry.names():
            fp = registry.get(model.name)
            assert fp.role == "reference" and fp.model.startswith(f"{model.repo}@"), model.name
    assert all(model.revision is None or len(model.revision) == 40 for model in models)

"""`reefguard hub scan` and `merge-reports` end to end, through the real client against the Hub double."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from bot.cli import ExitCode, main
from bot.hub.scan import Shard
from tests.doubles.hub_server import HubServer
from tests.hub.conftest import (
    SOURCE,
    SOURCE_REPO,
    bodies_fetched,
    findings_of,
    plant,
    report_of,
    sha_of,
)

ROOT = Path(__file__).resolve().parents[2]


def scan_args(hub: HubServer, registry: Path, probes: Path, tmp_path: Path, name: str = "run") -> list[str]:
    """A scan's arguments; each run name has its own cache (stage 1's bytes depend on what is cached)."""
    return [
        "hub", "scan", "--endpoint", hub.url, "--registry", str(registry), "--probes", str(probes),
        "--cache-dir", str(tmp_path / f"cache-{name}"), "--state", str(tmp_path / f"{name}-state.json"),
        "--out", str(tmp_path / name), "--source-repo", f"{SOURCE}={SOURCE_REPO}", "-q",
    ]  # fmt: skip


def plant_lineage_world(hub: HubServer, root: Path) -> None:
    """Four repos: an undeclared fine-tune, one that declares another base, an honest one, and an unrelated model."""
    plant(hub, root, "lab/quiet-tune", "finetune", card={"license": "mit"})
    plant(hub, root, "lab/wrong-tune", "finetune", card={"license": "mit", "base_model": "other/llama"})
    plant(hub, root, "lab/honest-tune", "finetune", card={"base_model": SOURCE_REPO, "base_model_relation": "finetune"})
    plant(hub, root, "lab/fresh-model", "unrelated", card={"license": "apache-2.0"})


def test_scan_finds_the_undeclared_derivative_and_the_one_declaring_another_base(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant_lineage_world(hub, tmp_path)

    code = main(scan_args(hub, hub_registry, probe_file, tmp_path))

    out = capsys.readouterr().out
    assert code == ExitCode.FINDING
    report = report_of(tmp_path / "run")
    assert findings_of(report) == {
        "lab/quiet-tune": [("undeclared-derivative", SOURCE)],
        "lab/wrong-tune": [("other-declaration", SOURCE)],
        "lab/honest-tune": [],
        "lab/fresh-model": [],
    }
    by_repo = {r["repo_id"]: r for r in report["results"]}
    assert by_repo["lab/honest-tune"]["verdict"] == "derived"  # derived, but declared: no finding
    assert by_repo["lab/fresh-model"]["verdict"] == "unrelated"
    assert by_repo["lab/wrong-tune"]["declared"] == ["other/llama"]
    assert all(r["sha"] == sha_of(r["repo_id"]) for r in report["results"])  # pinned to the listed commit
    assert report["counts"] == {"checked": 4, "skipped": 0, "error": 0, "findings": 2, "reused": 0}
    assert "lab/quiet-tune@" in out and "2 findings" in out
    markdown = (tmp_path / "run" / "hub-report.md").read_text(encoding="utf-8")
    assert "| `lab/wrong-tune` |" in markdown and "other/llama" in markdown
    # Every file was fetched at the pinned sha, and nothing the fingerprint does not read (README, pickles).
    resolves = [p for p in bodies_fetched(hub) if "/resolve/" in p]
    assert resolves and all(f"/resolve/{sha_of(p.split('/')[1] + '/' + p.split('/')[2])}/" in p for p in resolves)
    assert not any(p.endswith(("README.md", ".bin")) for p in resolves)


def test_rerun_downloads_nothing_new(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant_lineage_world(hub, tmp_path)
    assert main(scan_args(hub, hub_registry, probe_file, tmp_path)) == ExitCode.FINDING
    first = report_of(tmp_path / "run")
    seen = len(hub.requests)

    assert main(scan_args(hub, hub_registry, probe_file, tmp_path)) == ExitCode.FINDING

    again = report_of(tmp_path / "run")
    assert [r.path.split("?")[0] for r in hub.requests[seen:]] == ["/api/models"]  # the listing, nothing else
    assert again["results"] == first["results"]
    assert again["counts"]["reused"] == 4 and again["budget"]["download_bytes"] == 0


def test_a_new_commit_is_scanned_again(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(hub, tmp_path, "lab/quiet-tune", "finetune")
    assert main(scan_args(hub, hub_registry, probe_file, tmp_path)) == ExitCode.FINDING
    new_sha = plant(hub, tmp_path, "lab/quiet-tune", "finetune", card={"base_model": SOURCE_REPO}, version=1)

    assert main(scan_args(hub, hub_registry, probe_file, tmp_path)) == ExitCode.OK

    report = report_of(tmp_path / "run")
    assert [(r["sha"], r["findings"]) for r in report["results"]] == [(new_sha, [])]
    state = json.loads((tmp_path / "run-state.json").read_text(encoding="utf-8"))
    assert len(state["results"]) == 2  # both commits remembered


def test_the_registry_entrys_hub_id_names_the_source_repo_without_a_flag(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entry made from a local folder, given its Hub id with ``registry set``, needs no --source-repo: an honest
    card is clean, an undeclared fine-tune's finding names the repo to declare."""
    registry = tmp_path / "fingerprints"
    shutil.copytree(hub_registry, registry)
    assert main(["registry", "set", SOURCE, "--hub-id", SOURCE_REPO, "--registry", str(registry)]) == ExitCode.OK
    plant(hub, tmp_path, "lab/quiet-tune", "finetune")
    plant(hub, tmp_path, "lab/honest-tune", "finetune", card={"base_model": SOURCE_REPO})
    args = scan_args(hub, registry, probe_file, tmp_path)
    flag = args.index("--source-repo")
    del args[flag : flag + 2]

    assert main(args) == ExitCode.FINDING

    results = {r["repo_id"]: r for r in report_of(tmp_path / "run")["results"]}
    assert results["lab/honest-tune"]["findings"] == []
    (finding,) = results["lab/quiet-tune"]["findings"]
    assert (finding["kind"], finding["source_repo"]) == ("undeclared-derivative", SOURCE_REPO)


_KILL_HOOK_TIMEOUT_S = 180


def test_killed_scan_resumes_and_loses_no_result(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL while the second model is being inspected; the rerun keeps the first and does only the second."""
    plant(hub, tmp_path, "lab/second", "unrelated")
    plant(hub, tmp_path, "lab/first", "finetune")  # newer: listed first
    arrived, release = threading.Event(), threading.Event()

    def block() -> None:
        arrived.set()
        release.wait(_KILL_HOOK_TIMEOUT_S)

    hub.on_request("/api/models/lab/second/revision/", block)
    argv = scan_args(hub, hub_registry, probe_file, tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", *argv], cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert arrived.wait(_KILL_HOOK_TIMEOUT_S), "the scan never reached the second model"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        release.set()
        if process.poll() is None:
            process.kill()
    state = json.loads((tmp_path / "run-state.json").read_text(encoding="utf-8"))
    assert [r["repo_id"] for r in state["results"]] == ["lab/first"]  # written before the second began
    assert not (tmp_path / "run" / "hub-report.json").exists()
    seen = len(hub.requests)

    assert main(scan_args(hub, hub_registry, probe_file, tmp_path)) == ExitCode.FINDING

    report = report_of(tmp_path / "run")
    assert findings_of(report) == {"lab/first": [("undeclared-derivative", SOURCE)], "lab/second": []}
    assert report["counts"]["reused"] == 1
    assert not any("lab/first" in r.path for r in hub.requests[seen:])  # nothing of the first asked again


def test_two_shards_plus_merge_equal_one_unsharded_scan(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(hub, tmp_path, "lab/quiet-tune", "finetune", card={"license": "mit"})
    plant(hub, tmp_path, "lab/wrong-tune", "finetune", card={"base_model": "other/llama"})
    plant(hub, tmp_path, "lab/fresh-model", "unrelated")
    owners = {repo: Shard.parse("1/2").owns(repo) for repo in ("lab/quiet-tune", "lab/wrong-tune", "lab/fresh-model")}
    assert set(owners.values()) == {True, False}, "both shards must hold some repos for this test to mean much"

    assert main(scan_args(hub, hub_registry, probe_file, tmp_path, "all")) == ExitCode.FINDING
    for index in (1, 2):
        main([*scan_args(hub, hub_registry, probe_file, tmp_path, f"shard{index}"), "--shard", f"{index}/2"])
    shard_repos = [{r["repo_id"] for r in report_of(tmp_path / f"shard{i}")["results"]} for i in (1, 2)]
    code = main(
        ["hub", "merge-reports", str(tmp_path / "shard1"), str(tmp_path / "shard2" / "hub-report.json"),
         "--out", str(tmp_path / "merged"), "--states", str(tmp_path / "shard1-state.json"),
         str(tmp_path / "shard2-state.json"), "--state-out", str(tmp_path / "merged-state.json")]
    )  # fmt: skip

    assert code == ExitCode.FINDING
    assert shard_repos[0].isdisjoint(shard_repos[1])
    assert shard_repos[0] == {repo for repo, first in owners.items() if first}
    merged, unsharded = report_of(tmp_path / "merged"), report_of(tmp_path / "all")
    assert merged["results"] == unsharded["results"]
    assert merged["shards"] == ["1/2", "2/2"] and merged["counts"] == unsharded["counts"]
    states = [json.loads((tmp_path / f"{n}-state.json").read_text(encoding="utf-8")) for n in ("merged", "all")]
    assert states[0]["results"] == states[1]["results"]


def test_merging_a_shard_twice_is_refused(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(hub, tmp_path, "lab/fresh-model", "unrelated")
    main([*scan_args(hub, hub_registry, probe_file, tmp_path), "--shard", "1/1"])
    code = main(["hub", "merge-reports", str(tmp_path / "run"), str(tmp_path / "run"), "--out", str(tmp_path / "m")])
    assert code == ExitCode.USAGE
    assert "shard 1/1 given twice" in capsys.readouterr().err


def test_an_unexpected_error_on_one_model_is_recorded_and_the_scan_goes_on(
    hub: HubServer,
    hub_registry: Path,
    probe_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bot.hub.scan

    plant(hub, tmp_path, "lab/broken", "unrelated")
    plant(hub, tmp_path, "lab/fresh-model", "unrelated")
    inspect = bot.hub.scan.inspect_candidate

    def defect_on_one_model(api: Any, candidate: Any, **kwargs: Any) -> Any:  # a bug our code meets on one model
        if candidate.repo_id == "lab/broken":
            raise ZeroDivisionError("integer division or modulo by zero")
        return inspect(api, candidate, **kwargs)

    monkeypatch.setattr(bot.hub.scan, "inspect_candidate", defect_on_one_model)
    main(scan_args(hub, hub_registry, probe_file, tmp_path))

    results = {r["repo_id"]: r for r in report_of(tmp_path / "run")["results"]}
    broken = results["lab/broken"]
    assert (broken["status"], broken["reason"]) == (
        "error",
        "unexpected ZeroDivisionError (integer division or modulo by zero); retried next run",
    )
    assert (results["lab/fresh-model"]["status"], results["lab/fresh-model"]["verdict"]) == ("checked", "unrelated")
    state = json.loads((tmp_path / "run-state.json").read_text(encoding="utf-8"))
    assert [r["repo_id"] for r in state["results"]] == ["lab/fresh-model"]  # the broken one is retried next run

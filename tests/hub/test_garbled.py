"""A broken Hub (garbled, cut-off, deeply nested or slow answers) costs one model, never the scan or its report.

Each case goes through the real huggingface_hub client to the double, which spoils chosen answers
(`HubServer.misbehave_next`); nothing is patched.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bot.cli import ExitCode, main
from tests.doubles.hub_server import HubServer
from tests.hub.conftest import SOURCE, plant, report_of
from tests.hub.test_scan import scan_args

NESTED = b"[" * 100_000 + b"]" * 100_000
HTML = b"<html><body>502 Bad Gateway</body></html>"


def _one_line_no_traceback(err: str) -> None:
    # transformers' weight-loading bar: on here because this test process imported transformers before the CLI
    # switched bars off (HF_HUB_DISABLE_PROGRESS_BARS is read at import); a `reefguard` process never draws it.
    lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith("Loading weights")]
    assert "Traceback" not in err
    assert len(lines) <= 1, repr(err)


def test_garbled_and_cut_off_answers_cost_one_model_each(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html_sha = plant(hub, tmp_path, "bad/html-info", "finetune")
    nested_sha = plant(hub, tmp_path, "bad/nested-info", "finetune")
    shape_sha = plant(hub, tmp_path, "bad/list-info", "finetune")
    cut_sha = plant(hub, tmp_path, "bad/cut-config", "finetune")
    plant(hub, tmp_path, "bad/cut-weights", "unrelated")  # weights of its own: the CDN serves by sha256
    plant(hub, tmp_path, "good/tune", "finetune")
    hub.misbehave_next(f"/api/models/bad/html-info/revision/{html_sha}", body=HTML)
    hub.misbehave_next(f"/api/models/bad/nested-info/revision/{nested_sha}", body=NESTED)
    hub.misbehave_next(f"/api/models/bad/list-info/revision/{shape_sha}", body=b"[1, 2, 3]")
    hub.misbehave_next(f"/bad/cut-config/resolve/{cut_sha}/config.json", cut_to=20, times=20)
    weights = hub.file_at("bad/cut-weights", "main", "model.safetensors")
    # Every body GET of the weights is cut (the header read by Range asks for 100 kB: it is cut too).
    hub.misbehave_next(f"/cdn/{hashlib.sha256(weights).hexdigest()}", cut_to=1000, times=50)

    code = main(scan_args(hub, hub_registry, probe_file, tmp_path))

    err = capsys.readouterr().err
    assert code == ExitCode.FINDING  # the good one is still checked and found
    _one_line_no_traceback(err)
    results = {r["repo_id"]: r for r in report_of(tmp_path / "run")["results"]}
    assert results["good/tune"]["findings"][0]["source"] == SOURCE
    reasons = {repo: r["reason"] for repo, r in results.items() if r["status"] == "error"}
    assert set(reasons) == {"bad/html-info", "bad/nested-info", "bad/list-info", "bad/cut-config", "bad/cut-weights"}
    assert "unusable answer from the Hub (not JSON)" in reasons["bad/html-info"]
    assert "unusable answer from the Hub (nested too deep)" in reasons["bad/nested-info"]
    assert "unusable answer from the Hub (not the expected shape)" in reasons["bad/list-info"]
    assert "answer was cut off" in reasons["bad/cut-config"] and "config.json" in reasons["bad/cut-config"]
    assert "answer was cut off" in reasons["bad/cut-weights"]
    assert all("\n" not in reason and "retried next run" in reason for reason in reasons.values())
    # Errors are not remembered: the next run, on a healthy Hub, checks them all.
    state = json.loads((tmp_path / "run-state.json").read_text(encoding="utf-8"))
    assert [r["repo_id"] for r in state["results"]] == ["good/tune"]
    hub.heal()
    assert main(scan_args(hub, hub_registry, probe_file, tmp_path)) == ExitCode.FINDING
    assert {r["status"] for r in report_of(tmp_path / "run")["results"]} == {"checked"}


def test_a_listing_page_that_is_not_json_keeps_the_pages_before_it(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(hub, tmp_path, "lab/older", "unrelated")
    plant(hub, tmp_path, "lab/newer", "finetune")
    hub.page_size = 1
    hub.misbehave_next("/api/models?", body=HTML, after=1)  # the second page

    code = main(scan_args(hub, hub_registry, probe_file, tmp_path))

    err = capsys.readouterr().err
    assert code == ExitCode.FINDING
    _one_line_no_traceback(err)
    report = report_of(tmp_path / "run")
    assert [r["repo_id"] for r in report["results"]] == ["lab/newer"]
    assert "the listing stopped after 1 models" in report["budget"]["stopped"]
    assert "not JSON" in report["budget"]["stopped"]


@pytest.mark.parametrize("body", [HTML, NESTED], ids=["html", "nested"])
def test_a_first_listing_page_that_is_unusable_is_one_line_and_an_empty_report(
    hub: HubServer,
    hub_registry: Path,
    probe_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    body: bytes,
) -> None:
    plant(hub, tmp_path, "lab/any", "finetune")
    hub.misbehave_next("/api/models?", body=body, times=10)

    code = main(scan_args(hub, hub_registry, probe_file, tmp_path))

    err = capsys.readouterr().err
    assert code == ExitCode.ERROR
    _one_line_no_traceback(err)
    assert err.startswith("reefguard: error: listing models: unusable answer from the Hub")
    report = report_of(tmp_path / "run")
    assert report["results"] == [] and report["budget"]["stopped"].startswith("the listing failed")


@pytest.mark.parametrize("kind", ["state", "report"])
def test_a_deeply_nested_state_or_report_file_is_one_line_exit_2(
    hub: HubServer, hub_registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    bad = tmp_path / f"{kind}.json"
    bad.write_bytes(b'{"schema_version": 1, "results": ' + NESTED + b"}")
    if kind == "state":
        argv = ["hub", "scan", "--endpoint", hub.url, "--registry", str(hub_registry), "--state", str(bad)]
    else:
        argv = ["hub", "merge-reports", str(bad), "--out", str(tmp_path / "merged")]

    code = main(argv)

    err = capsys.readouterr().err
    assert code == ExitCode.USAGE
    _one_line_no_traceback(err)
    assert "nested deeper than Python's recursion limit" in err
    assert hub.requests == [] and not (tmp_path / "merged").exists()  # refused before any request


def test_a_silent_hub_cannot_hold_the_run_past_max_seconds(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Hub accepts the connection for one model's info and says nothing for ten minutes."""
    plant(hub, tmp_path, "lab/last", "unrelated")
    slow = plant(hub, tmp_path, "lab/slow", "finetune")  # newer: listed and checked first
    hub.misbehave_next(f"/api/models/lab/slow/revision/{slow}", stall_s=600)

    code = main([*scan_args(hub, hub_registry, probe_file, tmp_path), "--max-seconds", "5"])

    err = capsys.readouterr().err
    _one_line_no_traceback(err)
    report = report_of(tmp_path / "run")
    results = {r["repo_id"]: r for r in report["results"]}
    assert results["lab/slow"]["status"] == "error"
    assert "time budget" in results["lab/slow"]["reason"] and "model info" in results["lab/slow"]["reason"]
    assert results["lab/last"]["status"] == "error" and "not reached" in results["lab/last"]["reason"]
    assert report["budget"]["stopped"] == "time budget of 5 s reached"
    assert code in (ExitCode.OK, ExitCode.FINDING)


def test_a_silent_listing_is_cut_at_max_seconds(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(hub, tmp_path, "lab/any", "finetune")
    hub.misbehave_next("/api/models?", stall_s=600)

    code = main([*scan_args(hub, hub_registry, probe_file, tmp_path), "--max-seconds", "2"])

    err = capsys.readouterr().err
    assert code == ExitCode.ERROR
    _one_line_no_traceback(err)
    assert "listing models" in err and "time budget" in err
    assert report_of(tmp_path / "run")["results"] == []

"""Bad repos on the Hub: each is a reported skip, nothing unsafe is fetched, and the scan goes on."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from bot.cli import ExitCode, main
from tests.doubles.hub_server import HubServer
from tests.hub.conftest import SOURCE, bodies_fetched, plant, report_of, weight_downloads
from tests.hub.test_scan import scan_args

# A pickle whose unpickling would run `os.system("echo hi")`; it must never be fetched, let alone loaded.
EVIL_PICKLE = b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93\x8c\x07echo hi\x85R."


def _lying_header(folder: Path) -> None:
    """model.safetensors whose header claims a 4096 x 4096 float32 tensor the file does not hold."""
    header = json.dumps({"embed.weight": {"dtype": "F32", "shape": [4096, 4096], "data_offsets": [0, 4096 * 4096 * 4]}})
    data = header.encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(data)) + data + b"\0" * 64)


def test_pickle_remote_code_lying_header_and_vanished_revision_are_skipped(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(hub, tmp_path, "bad/pickles", "finetune")
    (hub.file_root("bad/pickles") / "model.safetensors").unlink()
    (hub.file_root("bad/pickles") / "pytorch_model.bin").write_bytes(EVIL_PICKLE)

    remote = plant(hub, tmp_path, "bad/remote-code", "finetune")
    folder = hub.file_root("bad/remote-code")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")

    plant(hub, tmp_path, "bad/lying-header", "finetune")
    _lying_header(hub.file_root("bad/lying-header"))

    vanishing = plant(hub, tmp_path, "bad/vanishing", "finetune")
    # Force-pushed away while the scan reads its safetensors header: the download then finds no such revision.
    header = f"/bad/vanishing/resolve/{vanishing}/model.safetensors"
    hub.on_request(header, lambda: hub.remove_commit("bad/vanishing", vanishing))
    plant(hub, tmp_path, "good/after-all", "finetune")  # newest: listed first
    hub.page_size = 2  # the listing takes three pages

    code = main(scan_args(hub, hub_registry, probe_file, tmp_path))

    assert code == ExitCode.FINDING  # the good one still gets checked
    results = {r["repo_id"]: r for r in report_of(tmp_path / "run")["results"]}
    assert results["good/after-all"]["findings"][0]["source"] == SOURCE
    skipped = {repo: r["reason"] for repo, r in results.items() if r["status"] == "skipped"}
    assert set(skipped) == {"bad/pickles", "bad/remote-code", "bad/lying-header", "bad/vanishing"}
    assert "only pickle weights (pytorch_model.bin): never downloaded or unpickled" in skipped["bad/pickles"]
    assert "trust_remote_code" in skipped["bad/remote-code"]
    assert "bad safetensors header" in skipped["bad/lying-header"] and "67108864" in skipped["bad/lying-header"]
    assert "no such revision" in skipped["bad/vanishing"] or "gone from the Hub" in skipped["bad/vanishing"]
    assert not any(".bin" in path for path in bodies_fetched(hub))
    for repo in ("bad/pickles", "bad/remote-code", "bad/lying-header"):
        assert weight_downloads(hub, repo) == [], repo
    assert remote in json.dumps(results["bad/remote-code"])
    markdown = (tmp_path / "run" / "hub-report.md").read_text(encoding="utf-8")
    assert "### Skipped" in markdown and "bad/pickles" in markdown
    # Final skips are remembered: a rerun asks nothing about them.
    seen = len(hub.requests)
    main(scan_args(hub, hub_registry, probe_file, tmp_path))
    assert not any("/bad/" in r.path for r in hub.requests[seen:])


def test_max_params_skips_before_any_weights_come(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(hub, tmp_path, "lab/big", "finetune")

    code = main([*scan_args(hub, hub_registry, probe_file, tmp_path), "--max-params", "10K"])

    assert code == ExitCode.OK
    (result,) = report_of(tmp_path / "run")["results"]
    assert result["status"] == "skipped" and "> --max-params 10,000" in result["reason"]
    assert weight_downloads(hub, "lab/big") == []
    assert any("range" in r.headers for r in hub.requests if r.path.startswith("/cdn/"))  # the header, by Range


def test_download_budget_defers_models_to_the_next_run(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(hub, tmp_path, "lab/one", "finetune")

    code = main([*scan_args(hub, hub_registry, probe_file, tmp_path), "--max-download", "100KB"])

    report = report_of(tmp_path / "run")
    assert code == ExitCode.OK
    assert report["results"][0]["status"] == "error" and "download budget" in report["results"][0]["reason"]
    assert report["budget"]["stopped"] == "download budget reached" and report["budget"]["download_bytes"] == 0
    assert weight_downloads(hub, "lab/one") == []
    assert not (tmp_path / "run-state.json").exists()  # not done: the next run takes it
    assert main(scan_args(hub, hub_registry, probe_file, tmp_path)) == ExitCode.FINDING
    assert report_of(tmp_path / "run")["budget"]["download_bytes"] > 100_000


def test_no_report_text_names_a_folder_of_the_scanning_machine(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config.json that is no JSON object is a skip whose reason names the file in the repo, not in the cache."""
    sha = plant(hub, tmp_path, "bad/list-config", "finetune")
    (hub.file_root("bad/list-config") / "config.json").write_text("[]", encoding="utf-8")

    main(scan_args(hub, hub_registry, probe_file, tmp_path))

    printed = capsys.readouterr()
    (result,) = report_of(tmp_path / "run")["results"]
    assert result["status"] == "skipped"
    assert result["reason"] == f"bad/list-config@{sha[:12]}/config.json: not a JSON object"
    written = [(tmp_path / "run" / name).read_text(encoding="utf-8") for name in ("hub-report.json", "hub-report.md")]
    for text in (*written, printed.out, printed.err):  # stdout names the report folder the user chose, no more
        assert str(tmp_path / "cache-run") not in text and "snapshots" not in text

"""`reefguard hub annotate`: one discussion per (repo, source), edited in place; card PRs on our own repos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bot._http import make_api
from bot.cli import ExitCode, main
from bot.hub.annotate import Identity, annotate
from bot.hub.client import Budget
from bot.hub.results import UNDECLARED, Finding, ModelResult, Status
from bot.report import HUB_DISCUSSION, Marker, parse_markers
from tests.doubles.hub_server import HubServer
from tests.hub.conftest import BOT_TOKEN, SOURCE, SOURCE_REPO, plant, report_of, sha_of
from tests.hub.test_scan import scan_args

OWN_CARD = {
    "license": "apache-2.0",
    "language": ["en", "fr"],
    "tags": ["text-generation", "custom"],
    "datasets": ["acme/corpus"],
    "custom_key": {"nested": [1, 2]},
    "widget": [{"text": "hello"}],
}


def posts(hub: HubServer) -> list[str]:
    return [r.path for r in hub.requests if r.method == "POST"]


def test_scan_annotate_twice_leaves_one_discussion_and_one_card_pr(
    hub: HubServer,
    hub_registry: Path,
    probe_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plant(hub, tmp_path, "lab/quiet-tune", "finetune", card={"license": "mit"})
    plant(hub, tmp_path, "reefguard-org/own-tune", "finetune", card=OWN_CARD)
    plant(hub, tmp_path, "lab/no-talk", "finetune", discussions=False)
    plant(hub, tmp_path, "lab/gated-tune", "finetune", gated=True)
    plant(hub, tmp_path, "lab/private-tune", "finetune", private=True)
    monkeypatch.setenv("HF_TOKEN", BOT_TOKEN)

    code = main([*scan_args(hub, hub_registry, probe_file, tmp_path), "--annotate", "--write"])

    out = capsys.readouterr().out
    assert code == ExitCode.FINDING
    assert len(report_of(tmp_path / "run")["results"]) == 5
    (thread,) = hub.discussions("lab/quiet-tune")
    body = thread["events"][0]["data"]["latest"]["raw"]
    assert thread["author"]["name"] == "reefbot" and not thread["isPullRequest"]
    assert parse_markers(body) == (Marker(kind=HUB_DISCUSSION, repo="lab/quiet-tune", source=SOURCE),)
    assert f"<!-- reefguard:v1 kind=hub-discussion repo=lab/quiet-tune source={SOURCE} -->" in body  # as documented
    assert "please just close this discussion" in body and "Opting out" in body
    assert f"base_model:\n- {SOURCE_REPO}\nbase_model_relation: finetune\n" in body  # the suggestion
    assert "| `demo-source` |" in body  # the evidence
    assert hub.discussions("lab/no-talk") == []
    assert hub.discussions("lab/gated-tune") == [] and hub.discussions("lab/private-tune") == []
    assert "skipped" in out and "no permission" in out and "gated repo" in out and "private repo" in out
    (pr,) = hub.discussions("reefguard-org/own-tune")
    assert pr["isPullRequest"] and pr["status"] == "draft"

    # Every other key of the card and its text are kept; the two lineage keys are added.
    readme = hub.file_at("reefguard-org/own-tune", "refs/pr/1", "README.md").decode()
    _, front, text = readme.split("---\n", 2)
    metadata = yaml.safe_load(front)
    assert metadata == {**OWN_CARD, "base_model": [SOURCE_REPO], "base_model_relation": "finetune"}
    assert text.strip() == "# reefguard-org/own-tune\n\nA model card."
    assert hub.file_at("reefguard-org/own-tune", "main", "README.md").decode().count("base_model") == 0

    seen = len(hub.requests)
    code = main(["hub", "annotate", str(tmp_path / "run"), "--endpoint", hub.url, "--write", "--json"])

    assert code == ExitCode.OK
    actions = {(a["repo_id"], a["kind"]): a["action"] for a in json.loads(capsys.readouterr().out)}
    assert actions[("lab/quiet-tune", "discussion")] == "unchanged"
    assert actions[("reefguard-org/own-tune", "card-pr")] == "unchanged"
    assert len(hub.discussions("lab/quiet-tune")) == 1 and len(hub.discussions("reefguard-org/own-tune")) == 1
    # The rerun wrote nothing but its retry on the repo whose discussions are disabled.
    assert [r.path for r in hub.requests[seen:] if r.method == "POST"] == ["/api/models/lab/no-talk/discussions"]


def first_message(hub: HubServer, repo_id: str) -> tuple[str, str]:
    """(title, first message) of the one discussion on ``repo_id``."""
    (thread,) = hub.discussions(repo_id)
    return thread["title"], thread["events"][0]["data"]["latest"]["raw"]


def test_each_finding_kind_gets_its_own_discussion_text(
    hub: HubServer,
    hub_registry: Path,
    probe_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A card that declares the source while its weights are unrelated is asked to check its declaration, not to
    add what it already has; a card that declares another base is asked to add the source."""
    plant(hub, tmp_path, "lab/claims-source", "unrelated", card={"base_model": SOURCE_REPO})
    plant(hub, tmp_path, "lab/other-base", "finetune", card={"base_model": "other/llama"})
    monkeypatch.setenv("HF_TOKEN", BOT_TOKEN)

    assert main([*scan_args(hub, hub_registry, probe_file, tmp_path), "--annotate", "--write"]) == ExitCode.FINDING

    title, wrong = first_message(hub, "lab/claims-source")
    assert title == f"reefguard: is this model really derived from {SOURCE_REPO}?"
    assert f"The model card declares `{SOURCE_REPO}` as its base, but the fingerprints find **no relation**" in wrong
    assert "please correct `base_model`" in wrong
    assert "if this model was made from that source (the declaration is right), please just close" in wrong
    for misleading in ("declares something else", "does not declare", "please declare", "```yaml"):
        assert misleading not in wrong
    title, other = first_message(hub, "lab/other-base")
    assert title == f"reefguard: is this model also derived from {SOURCE_REPO}?"
    assert "while the model card declares `other/llama` and not that source" in other
    assert f"```yaml\nbase_model:\n- other/llama\n- {SOURCE_REPO}\nbase_model_relation: merge\n```" in other
    assert "if this model is not derived from that source" in other
    assert parse_markers(wrong) == (Marker(kind=HUB_DISCUSSION, repo="lab/claims-source", source=SOURCE),)


def test_a_discussion_with_the_marker_older_bots_wrote_is_edited_not_duplicated(hub: HubServer, tmp_path: Path) -> None:
    plant(hub, tmp_path, "lab/quiet-tune", "finetune")
    api, me = make_api(hub.url, BOT_TOKEN), Identity(name="reefbot")
    legacy = Marker(kind=HUB_DISCUSSION, path="lab/quiet-tune", source=SOURCE).render()
    assert "path=lab/quiet-tune" in legacy
    api.create_discussion("lab/quiet-tune", "reefguard: is this model derived from acme/source?",
                          description=f"an older text\n\n{legacy}\n")  # fmt: skip

    (done,) = annotate(api, [finding_result("lab/quiet-tune", sha_of("lab/quiet-tune"))], identity=me, write=True,
                       budget=Budget())  # fmt: skip

    assert (done.action, done.number) == ("updated", 1)
    _, body = first_message(hub, "lab/quiet-tune")
    assert "kind=hub-discussion repo=lab/quiet-tune source=demo-source" in body and "path=" not in body


def finding_result(repo_id: str, sha: str, detail: str = "derived from demo-source") -> ModelResult:
    finding = Finding(kind=UNDECLARED, source=SOURCE, source_repo=SOURCE_REPO, relation="finetune", detail=detail)
    return ModelResult(
        repo_id=repo_id,
        sha=sha,
        status=Status.CHECKED,
        reason="derived from demo-source",
        verdict="derived",
        sources=(SOURCE,),
        findings=(finding,),
        evidence_markdown=f"evidence for {sha[:12]}",
    )


def test_new_evidence_edits_the_discussion_in_place(hub: HubServer, tmp_path: Path) -> None:
    plant(hub, tmp_path, "lab/quiet-tune", "finetune")
    api, me = make_api(hub.url, BOT_TOKEN), Identity(name="reefbot")
    first = annotate(api, [finding_result("lab/quiet-tune", sha_of("lab/quiet-tune"))], identity=me, write=True,
                     budget=Budget())  # fmt: skip
    newer = finding_result("lab/quiet-tune", sha_of("lab/quiet-tune", 1))

    second = annotate(api, [newer], identity=me, write=True, budget=Budget())

    assert [(a.action, a.number) for a in first + second] == [("opened", 1), ("updated", 1)]
    (thread,) = hub.discussions("lab/quiet-tune")
    comment = thread["events"][0]
    assert comment["data"]["edited"] and f"evidence for {newer.sha[:12]}" in comment["data"]["latest"]["raw"]
    assert len(thread["events"]) == 1  # edited, not commented again


def test_a_closed_discussion_is_the_opt_out(hub: HubServer, tmp_path: Path) -> None:
    plant(hub, tmp_path, "lab/quiet-tune", "finetune")
    api, me = make_api(hub.url, BOT_TOKEN), Identity(name="reefbot")
    result = finding_result("lab/quiet-tune", sha_of("lab/quiet-tune"))
    annotate(api, [result], identity=me, write=True, budget=Budget())
    hub.close_discussion("lab/quiet-tune", 1)

    (again,) = annotate(api, [finding_result("lab/quiet-tune", "f" * 40)], identity=me, write=True, budget=Budget())

    assert (again.action, again.number) == ("left-closed", 1)
    assert len(hub.discussions("lab/quiet-tune")) == 1


def test_dry_run_is_the_default_and_writing_needs_a_token(
    hub: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plant(hub, tmp_path, "lab/quiet-tune", "finetune")
    report = {
        "schema_version": 1, "kind": "reefguard-hub-scan", "shards": ["all"],
        "counts": {"checked": 1, "skipped": 0, "error": 0, "findings": 1, "reused": 0},
        "budget": {"download_bytes": 0, "elapsed_s": 1.0, "retries": 0, "waited_s": 0.0},
        "results": [finding_result("lab/quiet-tune", sha_of("lab/quiet-tune")).to_dict()],
    }  # fmt: skip
    path = tmp_path / "hub-report.json"
    path.write_text(json.dumps(report), encoding="utf-8")

    assert main(["hub", "annotate", str(path), "--endpoint", hub.url]) == ExitCode.OK
    assert "would-open-or-update" in capsys.readouterr().out
    assert hub.requests == []  # without a token nothing is even looked up

    assert main(["hub", "annotate", str(path), "--endpoint", hub.url, "--write"]) == ExitCode.USAGE
    assert "needs a Hub token" in capsys.readouterr().err

    monkeypatch.setenv("HF_TOKEN", BOT_TOKEN)
    assert main(["hub", "annotate", str(path), "--endpoint", hub.url]) == ExitCode.OK
    assert "would-open" in capsys.readouterr().out
    assert posts(hub) == [] and hub.discussions("lab/quiet-tune") == []

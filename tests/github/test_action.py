"""The Action end to end: env vars, event files and output files in, GitHub requests and exit codes out."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from bot.cli import ExitCode, main
from bot.report import CLEARED, ISSUE, PR_COMMENT, Marker, find_marker
from tests.doubles.github_server import READ_ONLY, SECONDARY_RATE_LIMIT, GitHubServer
from tests.github.conftest import (
    REPOSITORY,
    TOKEN,
    ActionRun,
    Outcome,
    Workspace,
    git,
    pull_request_event,
    push_event,
)

WEIGHTS = "models/mine/model.safetensors"


def _push(workspace: Workspace, demo: str, path: str = "models/mine") -> dict[str, object]:
    before = git(workspace.root, "rev-parse", "HEAD")
    workspace.put_model(path, demo)
    after = workspace.commit(f"add {path}")
    return push_event(before, after)


def _no_token_anywhere(outcome: Outcome) -> None:
    for text in (outcome.stdout, outcome.stderr, outcome.summary, *outcome.outputs.values()):
        assert TOKEN not in text


def test_detection_opens_exactly_one_issue_across_five_reruns(
    run_action: ActionRun, workspace: Workspace, github_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Other labelled issues come first, so the bot's own issue sits on a later page (pages hold 2).
    for n in range(3):
        github_server.add_issue(REPOSITORY, title=f"someone else's {n}", labels=("reefguard",))
    event = _push(workspace, "source")

    outcomes = [run_action("push", event, capsys) for _ in range(5)]

    assert [o.code for o in outcomes] == [ExitCode.FINDING] * 5
    created = github_server.writes("POST", "/issues")
    assert len(created) == 1
    mine = [i for i in github_server.issues(REPOSITORY) if find_marker(i["body"], kind=ISSUE)]
    assert len(mine) == 1
    assert mine[0]["title"] == "reefguard: models/mine is derived from demo-source"
    assert mine[0]["labels"] == ["reefguard"]
    assert find_marker(mine[0]["body"], kind=ISSUE) == Marker(kind=ISSUE, path="models/mine", source="demo-source")
    # The first run created the label and the issue; the four reruns only read.
    assert len(github_server.writes()) == 2
    assert any("page=2" in r.path for r in github_server.requests if r.path.startswith("/repos/octo/models/issues?"))
    first = outcomes[0]
    assert first.outputs["verdict"] == "derived"
    assert json.loads(first.outputs["matches"]) == [
        {"path": "models/mine", "verdict": "derived", "sources": ["demo-source"],
         "reason": json.loads(first.outputs["matches"])[0]["reason"],
         "report": "reefguard-report/models-mine/report.md"}
    ]  # fmt: skip
    assert first.outputs["report"] == "reefguard-report/summary.md"
    assert (workspace.root / "reefguard-report/models-mine/report.json").is_file()
    assert "```mermaid" in first.summary and "| `models/mine` | **derived** |" in first.summary
    assert f"::error file={WEIGHTS},title=reefguard%3A derived::models/mine is derived from demo-source" in first.stdout
    assert "Issue #4 (models/mine / demo-source) opened" in first.summary
    assert "unchanged" in outcomes[-1].summary
    for outcome in outcomes:
        _no_token_anywhere(outcome)
    assert all(github_server.tokens_seen)


def test_clean_push_opens_nothing(
    run_action: ActionRun, workspace: Workspace, github_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = run_action("push", _push(workspace, "unrelated"), capsys)

    assert outcome.code == ExitCode.OK
    assert outcome.outputs["verdict"] == "unrelated"
    assert github_server.writes() == []
    assert "::notice file=models/mine/model.safetensors" in outcome.stdout


def test_push_without_weights_checks_nothing_and_trusts_the_workspace(
    run_action: ActionRun, workspace: Workspace, github_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    before = git(workspace.root, "rev-parse", "HEAD")
    workspace.write("README.md", "# models, documented\n")
    event = push_event(before, workspace.commit("docs"))

    outcome = run_action("push", event, capsys)

    assert outcome.code == ExitCode.OK
    assert outcome.outputs["verdict"] == "none"
    assert json.loads(outcome.outputs["matches"]) == []
    assert "No model weights to check" in outcome.summary
    assert github_server.requests == []
    safe = git(workspace.root, "config", "--global", "--get-all", "safe.directory")
    assert str(workspace.root.resolve()) in safe.splitlines()


def test_a_model_that_stops_matching_is_said_so_once(
    run_action: ActionRun, workspace: Workspace, github_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_action("push", _push(workspace, "source"), capsys).code == ExitCode.FINDING
    (issue,) = github_server.issues(REPOSITORY)

    event = _push(workspace, "unrelated")  # same path, other weights
    first, second = run_action("push", event, capsys), run_action("push", event, capsys)

    assert (first.code, second.code) == (ExitCode.OK, ExitCode.OK)
    (comment,) = github_server.comments(REPOSITORY, issue["number"])
    assert "no longer matches" in comment["body"]
    assert find_marker(comment["body"], kind=CLEARED) is not None
    assert f"Issue #{issue['number']} (models/mine / demo-source) still-cleared" in second.summary


def test_pull_request_gets_one_comment_updated_in_place(
    run_action: ActionRun, workspace: Workspace, github_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    number = github_server.add_pull(REPOSITORY, files=[{"filename": WEIGHTS, "status": "added"},
                                                       {"filename": "README.md", "status": "modified"}])  # fmt: skip
    workspace.put_model("models/mine", "source")
    event = pull_request_event(number, workspace.commit("add"))
    first, rerun = run_action("pull_request", event, capsys), run_action("pull_request", event, capsys)
    workspace.put_model("models/mine", "unrelated")
    changed = run_action("pull_request", pull_request_event(number, workspace.commit("replace")), capsys)

    assert (first.code, rerun.code, changed.code) == (ExitCode.FINDING, ExitCode.FINDING, ExitCode.OK)
    (comment,) = github_server.comments(REPOSITORY, number)
    assert find_marker(comment["body"], kind=PR_COMMENT) is not None
    assert "**unrelated**" in comment["body"]
    assert len(github_server.writes("POST", "/comments")) == 1
    assert len(github_server.writes("PATCH", "/issues/comments/")) == 1  # the rerun changed nothing
    assert github_server.issues(REPOSITORY) == []  # pull requests get the comment, not issues
    assert "Pull request comment created" in first.summary
    assert "Pull request comment updated" in changed.summary


def test_server_errors_and_rate_limits_are_retried(
    run_action: ActionRun, workspace: Workspace, github_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    issues = f"/repos/{REPOSITORY}/issues"
    github_server.fail_next("GET", issues, 500, times=2)
    github_server.fail_next("GET", f"/repos/{REPOSITORY}/labels", 429, headers={"Retry-After": "1"})
    github_server.fail_next("POST", f"/repos/{REPOSITORY}/labels", 403, message=SECONDARY_RATE_LIMIT)
    github_server.fail_next("POST", issues, 502)

    outcome = run_action("push", _push(workspace, "source"), capsys)

    assert outcome.code == ExitCode.FINDING
    assert len(github_server.issues(REPOSITORY)) == 1
    statuses = [r.method + " " + r.path.split("?")[0] for r in github_server.requests]
    assert statuses.count(f"GET {issues}") == 3
    assert statuses.count(f"POST {issues}") == 2
    assert "Issue #1 (models/mine / demo-source) opened" in outcome.summary


def test_errors_that_outlast_the_retries_fail_the_step(
    run_action: ActionRun, workspace: Workspace, github_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    github_server.fail_next("GET", f"/repos/{REPOSITORY}/issues", 503, times=100)

    outcome = run_action("push", _push(workspace, "source"), capsys)

    assert outcome.code == ExitCode.ERROR
    assert "::error title=reefguard::GitHub API: listing open reefguard issues failed with HTTP 503" in outcome.stdout
    assert outcome.outputs["verdict"] == "derived"  # the results were written before posting
    assert github_server.writes() == []


def test_fork_pull_request_with_a_read_only_token_degrades_to_the_summary(
    run_action: ActionRun, workspace: Workspace, github_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    number = github_server.add_pull(REPOSITORY, files=[{"filename": WEIGHTS, "status": "added"}],
                                    head_repo="someone/models")  # fmt: skip
    github_server.fail_next("POST", f"/repos/{REPOSITORY}/issues/{number}/comments", 403, message=READ_ONLY)
    workspace.put_model("models/mine", "source")
    event = pull_request_event(number, workspace.commit("fork change"), fork=True)

    outcome = run_action("pull_request", event, capsys, fail_on_detection="never")

    assert outcome.code == ExitCode.OK
    assert "::warning title=reefguard%3A read-only token::reefguard could not comment on the pull request" in (
        outcome.stdout
    )
    assert "Pull requests from forks always get a read-only token." in outcome.stdout
    assert "[!WARNING]" in outcome.summary and "| `models/mine` | **derived** |" in outcome.summary
    assert github_server.comments(REPOSITORY, number) == []
    assert len(github_server.writes()) == 1  # the refused one; nothing after it


def test_shallow_clone_asks_the_compare_api(
    run_action: ActionRun, workspace: Workspace, github_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = "c" * 40  # not in the clone, as with fetch-depth: 1
    workspace.put_model("models/mine", "unrelated")
    after = workspace.commit("add")
    files = [{"filename": WEIGHTS, "status": "added"}, {"filename": "gone.safetensors", "status": "removed"}]
    github_server.add_compare(REPOSITORY, unknown, after, files)

    outcome = run_action("push", push_event(unknown, after), capsys)

    assert outcome.code == ExitCode.OK
    assert [m["path"] for m in json.loads(outcome.outputs["matches"])] == ["models/mine"]
    assert any(r.path.startswith(f"/repos/{REPOSITORY}/compare/{unknown}...{after}") for r in github_server.requests)


CARD = "---\nlicense: mit\ntags:\n- demo\n---\n# Mine\n"
CARD_INPUTS = {"paths": "models/mine", "annotate_card": "true", "open_issue": "false"}


@pytest.fixture
def card_server(run_action: ActionRun, workspace: Workspace) -> Iterator[GitHubServer]:
    """A GitHub double whose ``models/mine/README.md`` is ``CARD``; the demo source is put at ``models/mine``."""
    with GitHubServer() as server:
        server.add_repo(REPOSITORY, files={"models/mine/README.md": CARD.encode()})
        run_action.server = server
        workspace.put_model("models/mine", "source")
        yield server
    assert server.errors == []


def test_card_pull_request_declares_the_base_model_once(
    run_action: ActionRun, workspace: Workspace, card_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["registry", "set", "demo-source", "--hub-id", "demo-org/source",
                 "--registry", str(workspace.root / "fingerprints")]) == ExitCode.OK  # fmt: skip
    workspace.commit("add")

    first = run_action("workflow_dispatch", {"inputs": {}}, capsys, **CARD_INPUTS)
    second = run_action("workflow_dispatch", {"inputs": {}}, capsys, **CARD_INPUTS)

    assert (first.code, second.code) == (ExitCode.FINDING, ExitCode.FINDING)
    (pull,) = card_server.pulls(REPOSITORY)
    branch = pull["pull"]["head"]["ref"]
    assert branch.startswith("reefguard/card-models-mine-")
    assert pull["pull"]["base"]["ref"] == "main"
    assert card_server.file(REPOSITORY, "main", "models/mine/README.md") == CARD.encode()  # never pushed to
    proposed = (card_server.file(REPOSITORY, branch, "models/mine/README.md") or b"").decode()
    assert proposed == (
        "---\nlicense: mit\ntags:\n- demo\nbase_model:\n- demo-org/source\nbase_model_relation: finetune\n---\n# Mine\n"
    )
    assert len(card_server.writes("PUT")) == 1 and len(card_server.writes("POST", "/pulls")) == 1
    assert "unchanged" in second.summary
    assert card_server.issues(REPOSITORY) == []  # open-issue: false


def test_card_change_is_not_proposed_for_a_source_without_a_hub_id(
    run_action: ActionRun, workspace: Workspace, card_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace.commit("add")  # the small registry's demo-source was fingerprinted from a path: no Hub id

    outcome = run_action("workflow_dispatch", {"inputs": {}}, capsys, **CARD_INPUTS)

    assert outcome.code == ExitCode.FINDING
    assert card_server.pulls(REPOSITORY) == [] and card_server.writes("PUT") == []
    assert card_server.writes("POST") == []
    fix = "`reefguard registry set demo-source --hub-id ORG/NAME`"
    for text in (outcome.stdout, outcome.summary):
        assert "cannot propose a model-card change for models/mine" in text and fix in text
    warnings = [line for line in outcome.stdout.splitlines() if line.startswith("::warning")]
    assert len(warnings) == 1 and fix in warnings[0]


@pytest.mark.parametrize("event_name", ["schedule", "new-branch push"])
def test_every_tracked_model_is_checked_when_nothing_names_them(
    run_action: ActionRun,
    workspace: Workspace,
    github_server: GitHubServer,
    capsys: pytest.CaptureFixture[str],
    event_name: str,
) -> None:
    workspace.put_model("models/mine", "unrelated")
    workspace.put_model("untracked", "source")
    (workspace.root / ".gitignore").write_text("untracked/\n", encoding="utf-8")
    after = workspace.commit("add")
    if event_name == "schedule":
        outcome = run_action("schedule", {"schedule": "17 5 * * 1"}, capsys)
    else:
        outcome = run_action("push", push_event("0" * 40, after, created=True), capsys)

    assert outcome.code == ExitCode.OK
    # fingerprints/*/grams.safetensors are registry files, not models; untracked folders are not the repository's
    assert [m["path"] for m in json.loads(outcome.outputs["matches"])] == ["models/mine"]

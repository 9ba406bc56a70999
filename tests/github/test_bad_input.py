"""Bad input stops the action before anything is loaded or posted: one ``::error::`` line, a documented exit code."""

from __future__ import annotations

import hashlib

import pytest

from bot.cli import ExitCode
from tests.doubles.github_server import GitHubServer
from tests.github.conftest import ActionRun, Outcome, Workspace, git, push_event

POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"


def _push_model(workspace: Workspace, demo: str = "source") -> dict[str, object]:
    before = git(workspace.root, "rev-parse", "HEAD")
    workspace.put_model("models/mine", demo)
    return push_event(before, workspace.commit("add models/mine"))


def _refused(outcome: Outcome, server: GitHubServer, code: ExitCode, *needles: str) -> None:
    assert outcome.code == code
    errors = [line for line in outcome.stdout.splitlines() if line.startswith("::error")]
    assert len(errors) == 1, outcome.stdout
    for needle in needles:
        assert needle in errors[0]
    assert server.requests == []  # nothing read, nothing posted
    assert outcome.outputs == {}


def test_lfs_pointer_that_cannot_be_fetched(
    run_action: ActionRun, workspace: Workspace, github_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    before = git(workspace.root, "rev-parse", "HEAD")
    workspace.put_model("models/mine", "source")
    weights = workspace.root / "models/mine/model.safetensors"
    data = weights.read_bytes()
    weights.write_text(POINTER.format(oid=hashlib.sha256(data).hexdigest(), size=len(data)), encoding="utf-8")
    event = push_event(before, workspace.commit("add a pointer"))

    outcome = run_action("push", event, capsys)

    _refused(outcome, github_server, ExitCode.ERROR, "models/mine/model.safetensors: Git LFS pointer",
             "`lfs: true` on the actions/checkout step")  # fmt: skip


def test_lfs_pointer_size_is_checked_before_fetching(
    run_action: ActionRun, workspace: Workspace, github_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    before = git(workspace.root, "rev-parse", "HEAD")
    workspace.put_model("models/mine", "source")
    pointer = POINTER.format(oid="a" * 64, size=20 * 10**9)
    (workspace.root / "models/mine/model.safetensors").write_text(pointer, encoding="utf-8")
    event = push_event(before, workspace.commit("add a big pointer"))

    outcome = run_action("push", event, capsys)

    _refused(outcome, github_server, ExitCode.ERROR, "20.0 GB of weights is over max-model-size (4.0 GB)")


def test_missing_registry(
    run_action: ActionRun, workspace: Workspace, github_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = run_action("push", _push_model(workspace), capsys, registry="no-such-registry")

    _refused(outcome, github_server, ExitCode.ERROR, "no-such-registry: no fingerprint registry here")


def test_model_over_max_model_size(
    run_action: ActionRun, workspace: Workspace, github_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = run_action("push", _push_model(workspace), capsys, max_model_size="500kB")

    _refused(outcome, github_server, ExitCode.ERROR, "models/mine: ", "MB of weights is over max-model-size (500.0 kB)")


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("fail_on_detection", "sometimes", "input fail-on-detection: unknown value 'sometimes'"),
        ("dtype", "int4", "input dtype: unknown value 'int4' (known: float32, bfloat16, float16)"),
        ("extraction", "lazy", "input extraction: unknown value 'lazy' (known: auto, stream, full)"),
        ("open_issue", "yes", "input open-issue: 'yes' is not a boolean"),
        ("max_model_size", "huge", "input max-model-size: 'huge' is not a size"),
        ("max_model_size", "7B", "input max-model-size: '7B': a bare B reads as billions of parameters"),
        ("registry", "../elsewhere", "input registry: '../elsewhere' must be a path inside the repository"),
        ("paths", "models/mine\n/abs", "input paths: '/abs' must be a path inside the repository"),
        ("paths", "models/nothing-here", "input paths: 'models/nothing-here' matches no model folder"),
    ],
)
def test_unknown_input_value(
    run_action: ActionRun,
    workspace: Workspace,
    github_server: GitHubServer,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    needle: str,
) -> None:
    outcome = run_action("push", _push_model(workspace), capsys, **{name: value})

    _refused(outcome, github_server, ExitCode.USAGE, "::error title=reefguard%3A invalid input::", needle)


@pytest.mark.parametrize(
    ("event_name", "payload", "needle"),
    [
        ("push", "{not json", "the event payload is not JSON"),
        ("push", "[1, 2]", "the event payload is not a JSON object"),
        ("push", '{"before": "abc"}', "the event payload has no str at 'after'"),
        ("pull_request", '{"pull_request": {"number": "7"}}', "has no int at 'pull_request.number'"),
        ("pull_request_target", "{}", "event 'pull_request_target' is not supported (it would load a fork's"),
        ("issues", "{}", "event 'issues' is not supported"),
    ],
)
def test_malformed_or_unsupported_event(
    run_action: ActionRun,
    github_server: GitHubServer,
    capsys: pytest.CaptureFixture[str],
    event_name: str,
    payload: str,
    needle: str,
) -> None:
    outcome = run_action(event_name, payload, capsys)

    _refused(outcome, github_server, ExitCode.USAGE, needle)


def test_missing_event_file(
    run_action: ActionRun, github_server: GitHubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = run_action("push", None, capsys)

    _refused(outcome, github_server, ExitCode.USAGE, "cannot read the event payload")


def test_outside_actions_it_says_where_it_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    assert main(["action"]) == ExitCode.USAGE
    assert "GITHUB_EVENT_NAME is not set" in capsys.readouterr().out

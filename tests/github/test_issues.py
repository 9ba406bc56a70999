"""One issue per (model path, source), driven directly against the GitHub double."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot import report
from bot.github.client import Pacing, make_client
from bot.github.issues import IssueDraft, sync_issues
from bot.report import Marker
from tests.doubles.github_server import GitHubServer

REPO = "octo/models"


@pytest.fixture
def server() -> Iterator[GitHubServer]:
    with GitHubServer(page_size=2) as github:
        github.add_repo(REPO)
        yield github
    assert github.errors == []


def _draft(path: str, source: str, text: str = "evidence") -> IssueDraft:
    body = f"{Marker(kind=report.ISSUE, path=path, source=source).render()}\n{text}\n"
    return IssueDraft(path=path, source=source, title=f"reefguard: {path} matches {source}", body=body)


def _sync(server: GitHubServer, drafts: list[IssueDraft], cleared: dict[str, str]) -> list[tuple[str, str, str]]:
    repo = make_client("t", server.url, pacing=Pacing().scaled(0.001)).get_repo(REPO)
    outcomes = sync_issues(repo, drafts, cleared_texts=cleared, matched_again_text="matches again")
    return [(o.path, o.source, o.action) for o in outcomes]


def test_merged_model_gets_one_issue_per_source_and_reruns_edit_them(server: GitHubServer) -> None:
    drafts = [_draft("m", "a"), _draft("m", "b")]
    assert _sync(server, drafts, {"m": "gone"}) == [("m", "a", "opened"), ("m", "b", "opened")]
    assert _sync(server, drafts, {"m": "gone"}) == [("m", "a", "unchanged"), ("m", "b", "unchanged")]
    changed = [_draft("m", "a", "new evidence"), _draft("m", "b")]
    assert _sync(server, changed, {"m": "gone"}) == [("m", "a", "updated"), ("m", "b", "unchanged")]
    assert len(server.issues(REPO)) == 2
    assert len(server.writes("PATCH")) == 1


def test_cleared_then_matched_again_each_said_once(server: GitHubServer) -> None:
    _sync(server, [_draft("m", "a"), _draft("other", "a")], {"m": "", "other": ""})

    assert _sync(server, [], {"m": "m stopped matching"}) == [("m", "a", "cleared")]  # "other" was not checked
    assert _sync(server, [], {"m": "m stopped matching"}) == [("m", "a", "still-cleared")]
    assert _sync(server, [_draft("m", "a")], {"m": ""}) == [("m", "a", "unchanged")]
    assert _sync(server, [_draft("m", "a")], {"m": ""}) == [("m", "a", "unchanged")]

    number = next(i["number"] for i in server.issues(REPO) if "path=m " in i["body"])
    kinds = [report.parse_markers(c["body"])[0].kind for c in server.comments(REPO, number)]
    assert kinds == [report.CLEARED, report.MATCHED_AGAIN]


def test_people_s_issues_and_closed_ones_are_left_alone(server: GitHubServer) -> None:
    server.add_issue(REPO, title="a person's issue", body="mentions reefguard", labels=("reefguard",))
    server.add_issue(REPO, title="unlabelled copy", body=_draft("m", "a").body)

    assert _sync(server, [_draft("m", "a")], {"m": ""}) == [("m", "a", "opened")]

    assert len(server.issues(REPO)) == 3
    assert [r for r in server.writes() if "/issues/" in r.path] == []  # neither was edited or commented on


def test_the_label_is_created_once_with_its_colour(server: GitHubServer) -> None:
    _sync(server, [_draft("m", "a")], {})
    _sync(server, [_draft("n", "a")], {})
    (created,) = server.writes("POST", "/labels")
    assert created.body["name"] == "reefguard" and created.body["color"]


def test_listing_costs_one_request_per_page(server: GitHubServer) -> None:
    for n in range(3):
        server.add_issue(REPO, title=f"person {n}", labels=("reefguard",))
    # A labelled pull request carrying an issue marker is still not an issue.
    server.add_pull(REPO, files=[], body=_draft("m", "a").body, labels=("reefguard",))

    assert _sync(server, [], {"m": "gone"}) == []

    assert [r.path.split("?")[0] for r in server.requests] == [f"/repos/{REPO}/issues"] * 2

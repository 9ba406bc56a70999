"""One issue per (model path, source), found again by its hidden marker and edited in place.

Open issues carrying the bot's label are listed (every page) and indexed by their ``kind=issue`` marker. A
detection edits its issue when the text changed and opens one only when none is open; a model checked in this
run that no longer matches a source gets one comment saying so (and one more if it matches again later).
Closing the issue is left to people.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot import report
from bot.github.client import github_errors, is_not_found
from bot.report import Marker

if TYPE_CHECKING:
    from github.Issue import Issue
    from github.Repository import Repository

logger = logging.getLogger(__name__)

LABEL = "reefguard"
LABEL_COLOR = "b60205"
LABEL_DESCRIPTION = "reefguard found weights derived from a registered model"


@dataclass(frozen=True, slots=True, kw_only=True)
class IssueDraft:
    """An issue the bot wants open, as text.

    Attributes:
        path: the model path; source: the registry source it matches.
        title: the issue title; body: the issue text, which must carry ``marker``'s rendering.
    """

    path: str
    source: str
    title: str
    body: str

    @property
    def marker(self) -> Marker:
        return Marker(kind=report.ISSUE, path=self.path, source=self.source)


@dataclass(frozen=True, slots=True, kw_only=True)
class IssueOutcome:
    """What happened to one issue.

    Attributes:
        path, source: the (model path, source) it is about.
        action: ``opened``, ``updated``, ``unchanged``, ``cleared`` (commented: no longer matches) or
            ``still-cleared`` (said so before).
        number: the issue number; url: its page.
    """

    path: str
    source: str
    action: str
    number: int
    url: str


def ensure_label(repo: Repository, name: str = LABEL) -> None:
    """Create the bot's label if the repository lacks it.

    Raises:
        RemoteError: GitHub refused.
    """
    from github import GithubException

    with github_errors(f"reading label {name!r}"):
        try:
            repo.get_label(name).complete()  # the client is lazy: complete() makes the request
            return
        except GithubException as e:
            if not is_not_found(e):
                raise
    with github_errors(f"creating label {name!r}"):
        try:
            repo.create_label(name, LABEL_COLOR, LABEL_DESCRIPTION)
        except GithubException as e:
            if e.status != 422:  # 422: a concurrent run created it first
                raise


def open_issues_by_marker(repo: Repository, label: str = LABEL) -> dict[tuple[str, str], Issue]:
    """Open labelled issues (not pull requests) keyed by their marker's (path, source); the oldest wins.

    Raises:
        RemoteError: GitHub refused.
    """
    found: dict[tuple[str, str], Issue] = {}
    with github_errors("listing open reefguard issues"):
        for issue in repo.get_issues(state="open", labels=[label], sort="created", direction="asc"):
            # The issues list includes pull requests. Reading `issue.pull_request` would cost a request per
            # issue (the key is absent on issues, so the lazy object fetches itself); html_url is in the page.
            if "/pull/" in issue.html_url:
                continue
            marker = report.find_marker(issue.body, kind=report.ISSUE)
            if marker is not None:
                found.setdefault((marker.path, marker.source), issue)
    return found


def _last_bot_comment_kind(issue: Issue) -> str | None:
    """The kind of the bot's latest ``cleared`` / ``matched-again`` comment on ``issue``, if any."""
    if not issue.comments:
        return None
    kind = None
    with github_errors(f"listing comments of issue #{issue.number}"):
        for comment in issue.get_comments():
            for marker in report.parse_markers(comment.body):
                if marker.kind in (report.CLEARED, report.MATCHED_AGAIN):
                    kind = marker.kind
    return kind


def sync_issues(
    repo: Repository,
    drafts: Sequence[IssueDraft],
    *,
    cleared_texts: Mapping[str, str],
    matched_again_text: str,
    label: str = LABEL,
) -> list[IssueOutcome]:
    """Make the open issues match ``drafts``: edit, open, or say a model no longer matches.

    Args:
        repo: the repository (a client object).
        drafts: the issues that should be open after this run.
        cleared_texts: model path checked this run -> the comment for its open issues whose source it no longer
            matches (a marker is added); issues of paths not checked are left alone.
        matched_again_text: the comment for an issue that matches again after being cleared.
        label: the bot's label.

    Returns:
        One outcome per draft, then one per cleared issue.

    Raises:
        RemoteError: GitHub refused (a 403 for a read-only token).
    """
    existing = open_issues_by_marker(repo, label)
    wanted = {(draft.path, draft.source) for draft in drafts}
    outcomes = []
    if drafts:
        ensure_label(repo, label)
    for draft in drafts:
        issue = existing.get((draft.path, draft.source))
        if issue is None:
            with github_errors(f"opening an issue for {draft.path}"):
                issue = repo.create_issue(title=draft.title, body=draft.body, labels=[label])
            action = "opened"
        else:
            action = "unchanged"
            if issue.body != draft.body or issue.title != draft.title:
                with github_errors(f"updating issue #{issue.number}"):
                    issue.edit(title=draft.title, body=draft.body)
                action = "updated"
            if _last_bot_comment_kind(issue) == report.CLEARED:
                marker = Marker(kind=report.MATCHED_AGAIN, path=draft.path, source=draft.source)
                with github_errors(f"commenting on issue #{issue.number}"):
                    issue.create_comment(f"{matched_again_text}\n\n{marker.render()}\n")
        logger.info("issue #%d for %s / %s: %s", issue.number, draft.path, draft.source, action)
        outcomes.append(IssueOutcome(path=draft.path, source=draft.source, action=action,
                                     number=issue.number, url=issue.html_url))  # fmt: skip
    for (path, source), issue in sorted(existing.items()):
        if path not in cleared_texts or (path, source) in wanted:
            continue
        action = "still-cleared"
        if _last_bot_comment_kind(issue) != report.CLEARED:
            marker = Marker(kind=report.CLEARED, path=path, source=source)
            with github_errors(f"commenting on issue #{issue.number}"):
                issue.create_comment(f"{cleared_texts[path]}\n\n{marker.render()}\n")
            action = "cleared"
        outcomes.append(IssueOutcome(path=path, source=source, action=action, number=issue.number,
                                     url=issue.html_url))  # fmt: skip
    return outcomes

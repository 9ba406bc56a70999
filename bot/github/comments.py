"""The one sticky comment on a pull request, found again by its hidden marker and edited in place."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot import report
from bot.github.client import github_errors

if TYPE_CHECKING:
    from github.Repository import Repository

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class CommentOutcome:
    """What happened to the sticky comment.

    Attributes:
        action: ``created``, ``updated`` or ``unchanged``.
        url: the comment's link.
    """

    action: str
    url: str


def pr_comment_body(text: str) -> str:
    """The sticky comment's body: ``text`` and the marker that finds it again.

    Example:
        >>> pr_comment_body("hello").endswith("<!-- reefguard:v1 kind=pr-comment -->\\n")
        True
    """
    return f"{text.rstrip()}\n\n{report.Marker(kind=report.PR_COMMENT).render()}\n"


def upsert_pr_comment(repo: Repository, number: int, body: str) -> CommentOutcome:
    """Edit the bot's comment on pull request ``number`` to ``body``, or post it if there is none.

    Args:
        repo: the repository (a client object).
        number: the pull request number.
        body: the full comment text, marker included (``pr_comment_body``).

    Raises:
        RemoteError: GitHub refused (a 403 for a read-only token).
    """
    conversation = repo.get_issue(number)  # a pull request's conversation is an issue
    with github_errors(f"listing comments of pull request #{number}"):
        mine = next(
            (c for c in conversation.get_comments() if report.find_marker(c.body, kind=report.PR_COMMENT)),
            None,
        )
    if mine is None:
        with github_errors(f"commenting on pull request #{number}"):
            created = conversation.create_comment(body)
        logger.info("commented on pull request #%d", number)
        return CommentOutcome(action="created", url=created.html_url)
    if mine.body == body:
        return CommentOutcome(action="unchanged", url=mine.html_url)
    with github_errors(f"updating the comment on pull request #{number}"):
        mine.edit(body)
    logger.info("updated the comment on pull request #%d", number)
    return CommentOutcome(action="updated", url=mine.html_url)

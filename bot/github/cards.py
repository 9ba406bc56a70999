"""The model-card pull request: declare ``base_model`` / ``base_model_relation`` in a model folder's README.

The card text is read and written by ``bot.cards`` (the one front-matter writer: other keys kept in order, the
text after the front matter byte for byte, ``base_model`` a list of Hub ids and never a path). This module only
moves it through GitHub: the change goes on the branch ``reefguard/card-<path-slug>`` with one pull request into
the default branch, both reused by reruns; the default branch itself is never written.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot import report
from bot.cards import ModelCard, set_base_model
from bot.errors import ConfigError
from bot.github.client import github_errors, is_not_found
from bot.github.models import path_slug

if TYPE_CHECKING:
    from github.Repository import Repository

logger = logging.getLogger(__name__)

BRANCH_PREFIX = "reefguard/card-"


def branch_for(model_path: str) -> str:
    """The card branch of a model path: a readable slug plus a short hash keeping distinct paths apart.

    Example:
        >>> branch_for("models/My Model")
        'reefguard/card-models-my-model-e6de211f'
    """
    digest = hashlib.sha256(model_path.encode("utf-8")).hexdigest()[:8]
    return f"{BRANCH_PREFIX}{path_slug(model_path)[:60]}-{digest}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CardDraft:
    """A model-card change the bot wants proposed.

    Attributes:
        model_path: the model; card_path: its README (workspace-relative).
        base_models: the sources' Hub ids; relation: the Hub's ``base_model_relation`` (``bot.cards.relation_for``).
        title: the pull request title; body: its text, which the marker is added to.
    """

    model_path: str
    card_path: str
    base_models: tuple[str, ...]
    relation: str
    title: str
    body: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CardOutcome:
    """What happened: ``action`` is ``opened``, ``updated``, ``unchanged`` or ``declared`` (the default branch
    already says so); ``url`` links the pull request, empty when there is none."""

    model_path: str
    action: str
    url: str


def _declares(card: str | None, draft: CardDraft) -> bool:
    return ModelCard.parse(card, where=draft.card_path).declares(draft.base_models, relation=draft.relation)


def _with_lineage(card: str | None, draft: CardDraft) -> str:
    return set_base_model(card, base_models=draft.base_models, relation=draft.relation, where=draft.card_path)


def _read(repo: Repository, path: str, ref: str) -> tuple[str | None, str | None]:
    """(text, blob sha) of a file on a branch, (None, None) if it is absent."""
    from github import GithubException

    with github_errors(f"reading {path} on {ref}"):
        try:
            content = repo.get_contents(path, ref=ref)
        except GithubException as e:
            if is_not_found(e):
                return None, None
            raise
    if isinstance(content, list):
        raise ConfigError(f"{path}: a folder, not a model card", key="annotate-card")
    return content.decoded_content.decode("utf-8"), content.sha


def _branch_sha(repo: Repository, branch: str) -> str | None:
    from github import GithubException

    with github_errors(f"reading branch {branch}"):
        try:
            return repo.get_git_ref(f"heads/{branch}").object.sha
        except GithubException as e:
            if is_not_found(e):
                return None
            raise


def sync_card_pr(repo: Repository, draft: CardDraft, *, owner: str, default_branch: str) -> CardOutcome:
    """Open or update the pull request that declares the model's base in its card.

    Args:
        repo: the repository (a client object).
        draft: the change.
        owner: the repository owner (the pull request's head is ``owner:branch``).
        default_branch: the branch the pull request targets, never written.

    Raises:
        RemoteError: GitHub refused (a 403 without ``contents: write`` / ``pull-requests: write``).
        ConfigError: the card's front matter is not a mapping, or a base is not a Hub id.
    """
    branch = branch_for(draft.model_path)
    if branch == default_branch:  # cannot happen with the prefix; the guard makes the promise explicit
        raise ConfigError(f"refusing to write the default branch {default_branch!r}", key="annotate-card")
    current, _ = _read(repo, draft.card_path, default_branch)
    if _declares(current, draft):
        return CardOutcome(model_path=draft.model_path, action="declared", url="")
    proposed = _with_lineage(current, draft)  # a base that is not a Hub id is refused before anything is written
    branch_sha = _branch_sha(repo, branch)
    if branch_sha is None:
        base_sha = _branch_sha(repo, default_branch)
        if base_sha is None:
            raise ConfigError(f"default branch {default_branch!r} not found", key="annotate-card")
        with github_errors(f"creating branch {branch}"):
            repo.create_git_ref(f"refs/heads/{branch}", base_sha)
    on_branch, blob_sha = _read(repo, draft.card_path, branch)
    action = "unchanged"
    if not _declares(on_branch, draft):
        text = proposed if on_branch is None else _with_lineage(on_branch, draft)
        message = f"Declare the base model of {draft.model_path} (reefguard)"
        with github_errors(f"committing {draft.card_path} to {branch}"):
            if blob_sha is None:
                repo.create_file(draft.card_path, message, text, branch=branch)
            else:
                repo.update_file(draft.card_path, message, text, blob_sha, branch=branch)
        action = "updated"
    body = f"{draft.body.rstrip()}\n\n{report.Marker(kind=report.CARD_PR, path=draft.model_path).render()}\n"
    with github_errors(f"listing pull requests from {branch}"):
        existing = next(iter(repo.get_pulls(state="open", head=f"{owner}:{branch}", base=default_branch)), None)
    if existing is None:
        with github_errors(f"opening a pull request from {branch}"):
            created = repo.create_pull(base=default_branch, head=branch, title=draft.title, body=body)
        return CardOutcome(model_path=draft.model_path, action="opened", url=created.html_url)
    if existing.body != body or existing.title != draft.title:
        with github_errors(f"updating pull request #{existing.number}"):
            existing.edit(title=draft.title, body=body)
        action = "updated"
    return CardOutcome(model_path=draft.model_path, action=action, url=existing.html_url)

"""The event that started the workflow, read from ``$GITHUB_EVENT_PATH`` into a frozen ``Event``.

Only the fields the bot uses are read (GitHub docs, "Events that trigger workflows"): ``push`` gives ``before``
and ``after`` (``before`` is forty zeros on a new branch; the payload has no per-commit file lists), and
``pull_request`` gives the number, the head and base commits and whether the head lives in a fork.
``pull_request_target`` is refused: it runs with a write token on a fork's code, and loading a fork's weights
is exactly the untrusted input it warns against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import ConfigError

PUSH, PULL_REQUEST, SCHEDULE, WORKFLOW_DISPATCH = "push", "pull_request", "schedule", "workflow_dispatch"
SUPPORTED_EVENTS = (PUSH, PULL_REQUEST, SCHEDULE, WORKFLOW_DISPATCH)
NULL_SHA = "0" * 40


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """What the bot needs from the event payload.

    Attributes:
        name: one of ``SUPPORTED_EVENTS``.
        sha: the commit under check (push: ``after``; pull request: the head).
        before: push only: the commit before the push, None on a new branch.
        deleted: push only: the push deleted the branch (nothing to check).
        pr_number: pull request only: its number.
        from_fork: pull request only: the head is in another repository (the token is then read-only).
        default_branch: the repository's default branch, when the payload names it.
    """

    name: str
    sha: str
    before: str | None = None
    deleted: bool = False
    pr_number: int | None = None
    from_fork: bool = False
    default_branch: str | None = None


def _load(path: Path | None) -> dict[str, Any]:
    if path is None:
        raise ConfigError("GITHUB_EVENT_PATH is not set; the runner sets it to the event payload", key="event")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the event payload ({e.strerror})", path=path, key="event") from e
    except ValueError as e:
        raise ConfigError(f"{path}: the event payload is not JSON ({e})", path=path, key="event") from e
    except RecursionError as e:
        raise ConfigError(f"{path}: the event payload is nested too deeply to read", path=path, key="event") from e
    if not isinstance(payload, dict):
        raise ConfigError(f"{path}: the event payload is not a JSON object", path=path, key="event")
    return payload


def _field(payload: dict[str, Any], dotted: str, kind: type, path: Path | None) -> Any:
    value: Any = payload
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise ConfigError(
            f"{path}: the event payload has no {kind.__name__} at {dotted!r}; is it the file the runner wrote?",
            path=path,
            key=dotted,
        )
    return value


def read_event(name: str, path: Path | None, *, sha: str) -> Event:
    """Read the event payload of a ``name`` event.

    Args:
        name: ``GITHUB_EVENT_NAME``.
        path: ``GITHUB_EVENT_PATH`` (not read for ``schedule`` / ``workflow_dispatch`` when None).
        sha: ``GITHUB_SHA``, the commit for events whose payload names none.

    Raises:
        ConfigError: an unsupported event, or a payload that is unreadable, not JSON or lacks a needed field.
    """
    if name not in SUPPORTED_EVENTS:
        hint = " (it would load a fork's weights with a write token; use pull_request)" if "target" in name else ""
        raise ConfigError(
            f"event {name!r} is not supported{hint}; supported: {', '.join(SUPPORTED_EVENTS)}", key="event"
        )
    if name in (SCHEDULE, WORKFLOW_DISPATCH) and path is None:
        return Event(name=name, sha=sha)
    payload = _load(path)
    default_branch = (
        payload.get("repository", {}).get("default_branch") if isinstance(payload.get("repository"), dict) else None
    )
    default_branch = default_branch if isinstance(default_branch, str) else None
    if name == PUSH:
        after = _field(payload, "after", str, path)
        before = _field(payload, "before", str, path)
        return Event(
            name=name,
            sha=after,
            before=None if before == NULL_SHA or payload.get("created") is True else before,
            deleted=payload.get("deleted") is True or after == NULL_SHA,
            default_branch=default_branch,
        )
    if name == PULL_REQUEST:
        number = _field(payload, "pull_request.number", int, path)
        head_repo = payload["pull_request"].get("head", {}).get("repo") or {}
        base_repo = payload["pull_request"].get("base", {}).get("repo") or {}
        return Event(
            name=name,
            sha=_field(payload, "pull_request.head.sha", str, path),
            pr_number=number,
            from_fork=head_repo.get("full_name") != base_repo.get("full_name"),
            default_branch=default_branch,
        )
    return Event(name=name, sha=sha, default_branch=default_branch)

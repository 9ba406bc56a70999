"""Event payloads: the fields the bot uses, and the shapes it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.github.events import NULL_SHA, read_event
from tests.github.conftest import pull_request_event, push_event


def _write(tmp_path: Path, payload: object) -> Path:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def test_push(tmp_path: Path) -> None:
    event = read_event("push", _write(tmp_path, push_event("a" * 40, "b" * 40)), sha="ignored")
    assert (event.sha, event.before, event.deleted, event.default_branch) == ("b" * 40, "a" * 40, False, "main")


def test_push_of_a_new_branch_and_a_deletion(tmp_path: Path) -> None:
    created = read_event("push", _write(tmp_path, push_event(NULL_SHA, "b" * 40, created=True)), sha="")
    assert created.before is None
    deleted = read_event("push", _write(tmp_path, push_event("a" * 40, NULL_SHA, deleted=True)), sha="")
    assert deleted.deleted


@pytest.mark.parametrize("fork", [False, True])
def test_pull_request(tmp_path: Path, fork: bool) -> None:
    event = read_event("pull_request", _write(tmp_path, pull_request_event(7, "c" * 40, fork=fork)), sha="merge")
    assert (event.pr_number, event.sha, event.from_fork) == (7, "c" * 40, fork)


def test_schedule_needs_no_payload() -> None:
    event = read_event("schedule", None, sha="d" * 40)
    assert (event.name, event.sha) == ("schedule", "d" * 40)


def test_a_boolean_is_not_a_pull_request_number(tmp_path: Path) -> None:
    payload = pull_request_event(7, "c" * 40)
    payload["pull_request"]["number"] = True  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"no int at 'pull_request\.number'") as caught:
        read_event("pull_request", _write(tmp_path, payload), sha="")
    assert caught.value.path == tmp_path / "event.json"

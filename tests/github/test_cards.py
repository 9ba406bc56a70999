"""The model-card pull request through the GitHub double (the card text itself: tests/test_cards.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.errors import ConfigError
from bot.github.cards import CardDraft, branch_for, sync_card_pr
from bot.github.client import Pacing, make_client
from tests.doubles.github_server import GitHubServer


def test_branches_never_collide_and_never_are_the_default() -> None:
    assert branch_for("models/a b") != branch_for("models/a-b")
    assert branch_for(".").startswith("reefguard/card-root-")


@pytest.fixture
def server() -> Iterator[GitHubServer]:
    with GitHubServer() as server:
        server.add_repo("octo/models", default_branch="trunk")
        yield server
    assert server.errors == []


def _draft(*bases: str) -> CardDraft:
    return CardDraft(model_path="models/q.gguf", card_path="models/README.md", base_models=bases,
                     relation="quantized", title="Declare", body="Because.")  # fmt: skip


def test_card_pull_request_for_a_folder_without_a_readme(server: GitHubServer) -> None:
    repo = make_client("t", server.url, pacing=Pacing().scaled(0.001)).get_repo("octo/models")

    first = sync_card_pr(repo, _draft("org/base"), owner="octo", default_branch="trunk")
    again = sync_card_pr(repo, _draft("org/base"), owner="octo", default_branch="trunk")

    assert (first.action, again.action) == ("opened", "unchanged")
    assert first.url == again.url
    branch = branch_for("models/q.gguf")
    assert server.file("octo/models", branch, "models/README.md") == (
        b"---\nbase_model:\n- org/base\nbase_model_relation: quantized\n---\n"
    )
    assert server.file("octo/models", "trunk", "models/README.md") is None
    assert len(server.writes("PUT")) == 1 and len(server.writes("POST", "/git/refs")) == 1


@pytest.mark.parametrize("base", ["./demo/models/source", "/abs/source", "org/base@main"])
def test_a_path_is_never_written_as_base_model(server: GitHubServer, base: str) -> None:
    repo = make_client("t", server.url, pacing=Pacing().scaled(0.001)).get_repo("octo/models")

    with pytest.raises(ConfigError, match="base_model"):
        sync_card_pr(repo, _draft(base), owner="octo", default_branch="trunk")

    assert server.writes("PUT") == [] and server.writes("POST") == []  # not even the branch

"""Model card front matter: base_model set, every other key kept in order."""

from __future__ import annotations

import pytest

from bot.errors import ConfigError
from bot.github.cards import branch_for, declares, set_base_model


def test_keys_and_body_are_kept() -> None:
    card = (
        "---\nlicense: apache-2.0\nlanguage:\n- en\nbase_model: old/one\npipeline_tag: text-generation\n---\n\n# Hi\n"
    )
    updated = set_base_model(card, base_models=["org/base"], relation="finetune")
    assert updated == (
        "---\nlicense: apache-2.0\nlanguage:\n- en\nbase_model:\n- org/base\npipeline_tag: text-generation\n"
        "base_model_relation: finetune\n---\n\n# Hi\n"
    )
    assert declares(updated, base_models=["org/base"], relation="finetune")
    assert not declares(updated, base_models=["org/base"], relation="merge")


@pytest.mark.parametrize("card", [None, "", "# Just text\n---\nnot: front matter\n"])
def test_a_card_without_front_matter_gets_one(card: str | None) -> None:
    updated = set_base_model(card, base_models=["a/x", "b/y"], relation="merge")
    assert updated.startswith("---\nbase_model:\n- a/x\n- b/y\nbase_model_relation: merge\n---\n")
    assert updated.endswith(card or "")


def test_front_matter_that_is_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="not a YAML mapping"):
        set_base_model("---\n- a\n- b\n---\n", base_models=["x"], relation="finetune")


def test_a_single_string_base_model_counts_as_declared() -> None:
    assert declares("---\nbase_model: org/base\nbase_model_relation: adapter\n---\n", base_models=["org/base"],
                    relation="adapter")  # fmt: skip


def test_branches_never_collide_and_never_are_the_default() -> None:
    assert branch_for("models/a b") != branch_for("models/a-b")
    assert branch_for(".").startswith("reefguard/card-root-")


def test_card_pull_request_for_a_folder_without_a_readme() -> None:
    from bot.github.cards import CardDraft, sync_card_pr
    from bot.github.client import Pacing, make_client
    from tests.doubles.github_server import GitHubServer

    draft = CardDraft(model_path="models/q.gguf", card_path="models/README.md",
                      base_models=("org/base",), relation="quantized", title="Declare", body="Because.")  # fmt: skip
    with GitHubServer() as server:
        server.add_repo("octo/models", default_branch="trunk")
        repo = make_client("t", server.url, pacing=Pacing().scaled(0.001)).get_repo("octo/models")

        first = sync_card_pr(repo, draft, owner="octo", default_branch="trunk")
        again = sync_card_pr(repo, draft, owner="octo", default_branch="trunk")

        assert (first.action, again.action) == ("opened", "unchanged")
        assert first.url == again.url
        branch = branch_for("models/q.gguf")
        assert server.file("octo/models", branch, "models/README.md") == (
            b"---\nbase_model:\n- org/base\nbase_model_relation: quantized\n---\n"
        )
        assert server.file("octo/models", "trunk", "models/README.md") is None
        assert len(server.writes("PUT")) == 1 and len(server.writes("POST", "/git/refs")) == 1
        assert server.errors == []

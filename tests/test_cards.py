"""bot.cards: the one model-card front-matter writer keeps what it does not own and never writes a path."""

from __future__ import annotations

import pytest
import yaml

from bot.cards import ModelCard, parse_hub_id, relation_for, set_base_model
from bot.errors import ConfigError

CARD = """---
license: apache-2.0
# a comment the re-dump drops
tags:
- text-generation
base_model: org/old
language: [en, fr]
---
# My model

Some text with --- dashes and a second block:
---
not: metadata
---
"""


def front_matter(text: str) -> dict[str, object]:
    _, header, _ = text.split("---\n", 2)
    loaded = yaml.safe_load(header)
    assert isinstance(loaded, dict)
    return loaded


def test_setting_the_lineage_keeps_every_other_key_in_order_and_the_text_byte_for_byte() -> None:
    written = set_base_model(CARD, base_models=["org/base"], relation="finetune")

    metadata = front_matter(written)
    assert list(metadata) == ["license", "tags", "base_model", "language", "base_model_relation"]
    assert metadata["base_model"] == ["org/base"] and metadata["base_model_relation"] == "finetune"
    assert metadata["language"] == ["en", "fr"] and metadata["tags"] == ["text-generation"]
    assert written.endswith(CARD.split("---\n", 2)[2])
    assert ModelCard.parse(written).declares(["org/base"], relation="finetune")


def test_a_card_without_front_matter_gets_one_and_keeps_its_text() -> None:
    written = set_base_model("# Just text\n", base_models=["org/b", "org/a"], relation="merge")

    assert written == "---\nbase_model:\n- org/b\n- org/a\nbase_model_relation: merge\n---\n# Just text\n"
    assert ModelCard.parse(written).declares(["org/a", "org/b"], relation="merge")
    assert set_base_model(None, base_models=["gpt2"], relation="adapter").startswith("---\nbase_model:\n- gpt2\n")


def test_base_model_is_always_written_as_a_list() -> None:
    card = ModelCard(metadata={"base_model": "org/base", "license": "mit"}, text="# Release\n")

    assert front_matter(card.render())["base_model"] == ["org/base"]
    assert ModelCard.parse(card.render()).base_models == ("org/base",)


@pytest.mark.parametrize("base", ["demo/models/source", "./models/source", "/abs/source", "~/source", "org/name@main"])
def test_a_local_path_or_revision_is_never_written_as_base_model(base: str) -> None:
    with pytest.raises(ConfigError, match=r"base_model: .*(local path|not a Hub model id)"):
        set_base_model(CARD, base_models=[base], relation="finetune")
    with pytest.raises(ConfigError, match="base_model"):
        ModelCard(metadata={"base_model": [base]}).render()


def test_the_hub_id_check_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--hub-id: 'org/team/model' is not a Hub model id") as caught:
        parse_hub_id("org/team/model", key="--hub-id")
    assert caught.value.key == "--hub-id"
    assert parse_hub_id(" org/source ") == "org/source"


@pytest.mark.parametrize("front", ["---\n- a list\n---\n", "---\nkey: [unclosed\n---\n"])
def test_front_matter_that_is_no_mapping_is_one_config_error(front: str) -> None:
    with pytest.raises(ConfigError, match="org/name: the model card's front matter"):
        ModelCard.parse(front + "# text\n", where="org/name")


def test_relation_follows_the_verdict_then_the_files() -> None:
    assert relation_for("merged") == "merge"
    assert relation_for("derived", n_bases=2, adapter=True) == "merge"
    assert relation_for("derived", adapter=True) == "adapter"
    assert relation_for("derived", quantized=True) == "quantized"
    assert relation_for("derived") == "finetune"
    with pytest.raises(ConfigError, match="base_model_relation 'fine-tune'"):
        set_base_model(CARD, base_models=["org/base"], relation="fine-tune")

"""Model cards: the one reader and writer of a card's YAML front matter, and the one rule for its lineage keys.

A Hugging Face model card is a README whose YAML front matter (between ``---`` lines) holds metadata. The Hub's
model tree reads ``base_model`` (model ids) and ``base_model_relation`` (``adapter``, ``merge``, ``quantized`` or
``finetune``). Every writer in reefguard (the Action's card pull request, the Hub bot's card pull request, the
Trap² release card) goes through `ModelCard`, so they agree on three things:

- every other key keeps its value and order, and the card text after the front matter is kept byte for byte
  (comments and layout inside the front matter are not: it is re-dumped);
- ``base_model`` is always written as a list of Hub ids, and never a local path (`parse_hub_id`): a path there
  means nothing to the Hub or on anyone else's machine (issue 15);
- the relation comes from `relation_for`, from the verdict and what the model files are.

Neutral: imports nothing from ``bot.github``, ``bot.hub`` or ``bot.trap2``; ``bot.sources`` re-exports
`parse_hub_id`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bot.errors import ConfigError

RELATIONS = ("adapter", "merge", "quantized", "finetune")
#: File suffixes that mark a text with a path separator as a local path even before it exists.
LOCAL_SUFFIXES = (".gguf", ".safetensors", ".bin")

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(?P<yaml>.*?)^---[ \t]*(?:\r?\n|\Z)", re.DOTALL | re.MULTILINE)
# Hub repo names: letters, digits, "_", "-", "."; no leading or trailing "-" or "."; at most 96 characters.
HUB_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"(?:{HUB_NAME}/)?{HUB_NAME}")


def looks_local(text: str) -> bool:
    """Whether `text` names a local path: starts with ``.``, ``~`` or a separator, has a separator and a weights
    suffix, or exists.

    Example:
        >>> looks_local("./models/tiny"), looks_local("org/name")
        (True, False)
    """
    separators = tuple(sep for sep in (os.sep, os.altsep) if sep)
    if text.startswith((".", "~", *separators)):
        return True
    if any(sep in text for sep in separators) and text.lower().endswith(LOCAL_SUFFIXES):
        return True
    try:
        return Path(text).exists()
    except (OSError, ValueError):  # a name too long for the OS, or with a NUL byte: not a path here
        return False


def parse_hub_id(text: str, *, key: str | None = None) -> str:
    """The Hub model id in `text` (``org/name``, or a legacy ``name`` such as ``gpt2``), without revision.

    The one check for a Hub id that goes into a model card (``base_model``), a registry entry (``hub_id``) or a
    flag. A local path is refused even where it reads like an id (``models/source`` when that folder exists).

    Args:
        text: the id.
        key: the flag or key `text` came from, for the message.

    Returns:
        The id, stripped.

    Raises:
        ConfigError: `text` is a local path, carries a revision, or is not a Hub id.

    Example:
        >>> parse_hub_id(" org/name "), parse_hub_id("gpt2")
        ('org/name', 'gpt2')
    """
    where = f"{key}: " if key else ""
    hub_id = text.strip()
    if not hub_id:
        raise ConfigError(f"{where}empty Hub id; use org/name", key=key)
    if looks_local(hub_id):
        raise ConfigError(f"{where}{hub_id!r} is a local path, not a Hub id; use the model's org/name", key=key)
    if not _HUB_ID.fullmatch(hub_id) or ".." in hub_id or "--" in hub_id:
        raise ConfigError(f"{where}{hub_id!r} is not a Hub model id; use org/name (no revision)", key=key)
    return hub_id


def relation_for(verdict: str, *, n_bases: int = 1, adapter: bool = False, quantized: bool = False) -> str:
    """The ``base_model_relation`` a verdict and the model's files call for.

    A merge (the verdict, or more than one base) wins; then an adapter (``adapter_config.json``), then quantized
    weights (GGUF); anything else derived is a fine-tune.

    Args:
        verdict: ``"derived"`` or ``"merged"`` (a ``Verdict``'s value).
        n_bases: how many base models the card will name.
        adapter: the model is a PEFT adapter; quantized: its weights are quantized (GGUF).

    Example:
        >>> relation_for("derived"), relation_for("derived", n_bases=2), relation_for("derived", adapter=True)
        ('finetune', 'merge', 'adapter')
    """
    if str(verdict) == "merged" or n_bases > 1:
        return "merge"
    if adapter:
        return "adapter"
    return "quantized" if quantized else "finetune"


def base_model_ids(value: object) -> tuple[str, ...]:
    """The ids a ``base_model`` value holds: a string, a list of strings, or anything else (none).

    Example:
        >>> base_model_ids("org/a"), base_model_ids(["org/a", " org/b "]), base_model_ids(None)
        (('org/a',), ('org/a', 'org/b'), ())
    """
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return ()
    return tuple(str(v).strip() for v in value if str(v).strip())


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelCard:
    """A model card: its front-matter metadata (read-only, in file order) and the text after it.

    Example:
        >>> card = ModelCard.parse("---\\nlicense: mit\\n---\\n# Model\\n")
        >>> print(card.with_lineage(["org/base"], relation="finetune").render())
        ---
        license: mit
        base_model:
        - org/base
        base_model_relation: finetune
        ---
        # Model
        <BLANKLINE>
    """

    metadata: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    @classmethod
    def parse(cls, card: str | None, *, where: str = "README.md") -> ModelCard:
        """Split a README into metadata and text; a README without front matter has empty metadata.

        Args:
            card: the README text, None or empty for a missing card.
            where: the card's name for messages (a path or ``org/name``).

        Raises:
            ConfigError: the front matter is not valid YAML or not a mapping.
        """
        import yaml

        card = card or ""
        match = _FRONT_MATTER.match(card)
        if match is None:
            return cls(text=card)
        try:
            loaded = yaml.safe_load(match.group("yaml")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: the model card's front matter is not valid YAML ({e})", path=where) from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{where}: the model card's front matter is not a YAML mapping", path=where)
        return cls(metadata=loaded, text=card[match.end() :])

    @property
    def base_models(self) -> tuple[str, ...]:
        """The ids ``base_model`` declares (a string or a list in the card)."""
        return base_model_ids(self.metadata.get("base_model"))

    @property
    def relation(self) -> str | None:
        """The declared ``base_model_relation``, or None."""
        relation = self.metadata.get("base_model_relation")
        return str(relation) if relation else None

    def declares(self, base_models: Sequence[str], *, relation: str) -> bool:
        """Whether the card already declares exactly these base models (in any order) and relation."""
        return sorted(self.base_models) == sorted(base_models) and self.relation == relation

    def with_lineage(self, base_models: Sequence[str], *, relation: str) -> ModelCard:
        """This card with ``base_model`` (a list) and ``base_model_relation`` set; every other key kept in order.

        Raises:
            ConfigError: a base is not a Hub id (a local path, say), or the relation is not one of `RELATIONS`.
        """
        if relation not in RELATIONS:
            raise ConfigError(f"base_model_relation {relation!r}: use one of {', '.join(RELATIONS)}",
                              key="base_model_relation")  # fmt: skip
        if not base_models:
            raise ConfigError("base_model: no base model to declare", key="base_model")
        ids = [parse_hub_id(base, key="base_model") for base in base_models]
        return replace(self, metadata={**self.metadata, "base_model": ids, "base_model_relation": relation})

    def render(self) -> str:
        """The README: front matter (when there is metadata), then the text.

        Raises:
            ConfigError: ``base_model`` holds something that is not a Hub id (set directly in `metadata`).
            A ``base_model`` string is written as a one-element list.
        """
        import yaml

        metadata = dict(self.metadata)
        if "base_model" in metadata:  # one form everywhere: a list of Hub ids
            metadata["base_model"] = [parse_hub_id(b, key="base_model") for b in base_model_ids(metadata["base_model"])]
        if not metadata:
            return self.text
        header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, default_flow_style=False)
        return f"---\n{header}---\n{self.text}"


def set_base_model(card: str | None, *, base_models: Sequence[str], relation: str, where: str = "README.md") -> str:
    """The README text `card` with ``base_model`` / ``base_model_relation`` set (see `ModelCard.with_lineage`).

    Raises:
        ConfigError: the front matter is not a YAML mapping; a base is not a Hub id; an unknown relation.
    """
    return ModelCard.parse(card, where=where).with_lineage(base_models, relation=relation).render()

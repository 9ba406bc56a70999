"""Training text -> token windows for the causal-LM loss (deterministic: fixed split, seeded batch order)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenData:
    """Tokenized training and validation text.

    Attributes:
        train: 1-D token ids to draw random training windows from.
        val: validation windows, shape (n_windows, context), consecutive and non-overlapping.
        context: tokens per window.
        sources: the files the text came from.
    """

    train: torch.Tensor = field(compare=False, repr=False)
    val: torch.Tensor = field(compare=False, repr=False)
    context: int
    sources: tuple[str, ...]

    def batch(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        """``batch_size`` random training windows (the generator fixes the order)."""
        import torch

        starts = torch.randint(0, len(self.train) - self.context, (batch_size,), generator=generator)
        return torch.stack([self.train[int(s) : int(s) + self.context] for s in starts])


def read_text(paths: Sequence[Path]) -> str:
    """The files' text joined by blank lines.

    Raises:
        ConfigError: no files, a missing or unreadable file, or no text at all.
    """
    if not paths:
        raise ConfigError("no training data; pass --data FILE", key="--data")
    parts = []
    for path in paths:
        try:
            parts.append(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read training text ({e})", path=path, key="--data") from e
    text = "\n\n".join(p for p in parts if p.strip())
    if not text:
        names = ", ".join(str(p) for p in paths)
        raise ConfigError(f"{names}: no text (the data is empty)", path=paths[0], key="--data")
    return text


def tokenize(tokenizer: Any, text: str) -> torch.Tensor:
    """All of ``text`` as one 1-D id tensor (no special tokens, no truncation)."""
    import torch

    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def windows(ids: torch.Tensor, context: int, limit: int) -> torch.Tensor:
    """Up to ``limit`` consecutive non-overlapping windows of ``context`` tokens."""
    n = min(len(ids) // context, limit)
    return ids[: n * context].reshape(n, context)


def prepare(
    tokenizer: Any,
    data: Sequence[Path],
    *,
    validation: Sequence[Path] = (),
    context: int,
    val_fraction: float,
    max_val_windows: int,
) -> TokenData:
    """Tokenize training text and split off validation windows (the stream's tail, unless files are given).

    Raises:
        ConfigError: empty data, or too little for one training and one validation window.
    """
    ids = tokenize(tokenizer, read_text(data))
    if validation:
        train, val_ids = ids, tokenize(tokenizer, read_text(validation))
    else:
        cut = len(ids) - max(int(len(ids) * val_fraction), context)
        train, val_ids = ids[:cut], ids[cut:]
    val = windows(val_ids, context, max_val_windows)
    if len(train) <= context or len(val) == 0:
        raise ConfigError(
            f"{', '.join(map(str, data))}: {len(ids)} tokens is too little for training and validation windows of "
            f"{context} tokens; add text or lower --context",
            path=data[0],
            key="--data",
        )
    return TokenData(train=train, val=val, context=context, sources=tuple(str(p) for p in (*data, *validation)))


def validation_windows(tokenizer: Any, paths: Sequence[Path], *, context: int, max_windows: int) -> torch.Tensor:
    """Evaluation windows from text files (all of the text is evaluation text).

    Raises:
        ConfigError: empty or unreadable text, or fewer tokens than one window.
    """
    val = windows(tokenize(tokenizer, read_text(paths)), context, max_windows)
    if len(val) == 0:
        raise ConfigError(
            f"{paths[0]}: fewer than {context} tokens of evaluation text; add text or lower --context",
            path=paths[0],
            key="--data",
        )
    return val

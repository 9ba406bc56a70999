"""Training text -> token windows for the causal-LM loss (deterministic: fixed split, seeded batch order).

A window starts with the tokenizer's beginning-of-sequence token when the tokenizer adds one to every text
(Gemma: ``<bos>``), because that is the input the model was trained on: Gemma 3 270M's loss on a window of Python's
language reference is 7.76 nats without it and 4.92 with it (docs/protection.md), and an update trained without
it mostly learns to cope with the missing token (issue 17). Tokenizers that add nothing (the demo's byte-level BPE)
get plain windows.
"""

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
        context: tokens per window (the beginning-of-sequence token included).
        sources: the files the text came from.
        bos: the beginning-of-sequence token that starts every window, or None.
    """

    train: torch.Tensor = field(compare=False, repr=False)
    val: torch.Tensor = field(compare=False, repr=False)
    context: int
    sources: tuple[str, ...]
    bos: int | None = None

    def batch(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        """``batch_size`` random training windows (the generator fixes the order)."""
        import torch

        span = self.context - (self.bos is not None)
        starts = torch.randint(0, len(self.train) - span, (batch_size,), generator=generator)
        rows = torch.stack([self.train[int(s) : int(s) + span] for s in starts])
        return _with_bos(rows, self.bos)


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


def bos_token(tokenizer: Any) -> int | None:
    """The token the tokenizer puts before every text when it adds special tokens, or None.

    Example:
        >>> class Plain:
        ...     bos_token_id = 0
        ...     def __call__(self, text, add_special_tokens=True, verbose=False):
        ...         return {"input_ids": [5, 6]}
        >>> bos_token(Plain()) is None
        True
    """
    first = tokenizer("a", add_special_tokens=True, verbose=False)["input_ids"][:1]
    bos = getattr(tokenizer, "bos_token_id", None)
    return int(bos) if bos is not None and first == [bos] else None


def _with_bos(rows: torch.Tensor, bos: int | None) -> torch.Tensor:
    import torch

    if bos is None:
        return rows
    return torch.cat([torch.full((len(rows), 1), bos, dtype=rows.dtype), rows], dim=1)


def windows(ids: torch.Tensor, context: int, limit: int, bos: int | None = None) -> torch.Tensor:
    """Up to ``limit`` consecutive non-overlapping windows of ``context`` tokens (``bos`` first, if given)."""
    span = context - (bos is not None)
    n = min(len(ids) // span, limit) if span > 0 else 0
    return _with_bos(ids[: n * span].reshape(n, span), bos)


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
    bos = bos_token(tokenizer)
    if validation:
        train, val_ids = ids, tokenize(tokenizer, read_text(validation))
    else:
        cut = len(ids) - max(int(len(ids) * val_fraction), context)
        train, val_ids = ids[:cut], ids[cut:]
    val = windows(val_ids, context, max_val_windows, bos)
    if len(train) <= context or len(val) == 0:
        raise ConfigError(
            f"{', '.join(map(str, data))}: {len(ids)} tokens is too little for training and validation windows of "
            f"{context} tokens; add text or lower --context",
            path=data[0],
            key="--data",
        )
    return TokenData(train=train, val=val, context=context, sources=tuple(str(p) for p in (*data, *validation)),
                     bos=bos)  # fmt: skip


def validation_windows(tokenizer: Any, paths: Sequence[Path], *, context: int, max_windows: int) -> torch.Tensor:
    """Evaluation windows from text files (all of the text is evaluation text).

    Raises:
        ConfigError: empty or unreadable text, or fewer tokens than one window.
    """
    val = windows(tokenize(tokenizer, read_text(paths)), context, max_windows, bos_token(tokenizer))
    if len(val) == 0:
        raise ConfigError(
            f"{paths[0]}: fewer than {context} tokens of evaluation text; add text or lower --context",
            path=paths[0],
            key="--data",
        )
    return val

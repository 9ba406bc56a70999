"""Trap² training settings: one frozen dataclass, validated once, with the paper's defaults.

Defaults follow the official Trap² code for LLM LoRA: s ∈ [0.05, 0.95] ∪ [1.05, 2.0],
w(s) = 1/√s, gradient clipping at 1.0, AdamW with a linear schedule and 2 % warm-up, early stopping on the nominal
(s = 1) validation loss. λ and the learning rate are set for the small models this project trains on CPU (the
paper's λ = 1e-2 and lr = 1e-4 are for an 8B model trained for thousands of steps); see docs/trap2.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from bot.errors import ConfigError

Form = Literal["lora", "full"]
WeightName = Literal["inv", "inv_sqrt", "none"]
FORMS: tuple[Form, ...] = ("lora", "full")
WEIGHTS: tuple[WeightName, ...] = ("inv", "inv_sqrt", "none")
# The numeric settings as `reefguard protect` flags (the Action's inputs drop the dashes): flag, field, type, help.
TRAINING_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--lambda", "lam", float, "λ, weight of the off-nominal term"),
    ("--s-min", "s_min", float, "smallest sampled scale"),
    ("--s-max", "s_max", float, "largest sampled scale"),
    ("--delta", "delta", float, "excluded band around the authorised scale 1"),
    ("--loss-cap", "loss_cap", float, "cap the off-nominal loss at this many nats (our extension)"),
    ("--steps", "steps", int, "maximum optimizer steps"),
    ("--lr", "lr", float, "AdamW learning rate"),
    ("--batch-size", "batch_size", int, "token windows per step"),
    ("--context", "context", int, "tokens per window"),
    ("--eval-every", "eval_every", int, "steps between validation evaluations"),
    ("--patience", "patience", int, "evaluations without improvement before stopping"),
    ("--seed", "seed", int, "random seed"),
    ("--lora-r", "lora_r", int, "LoRA rank"),
    ("--lora-alpha", "lora_alpha", int, "LoRA alpha (scaling alpha / r)"),
    ("--lora-dropout", "lora_dropout", float, "LoRA dropout"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectConfig:
    """How to train one update (protected when ``lam > 0``, its plain twin when ``lam == 0``).

    Attributes:
        form: ``"lora"`` (a PEFT adapter; the scale multiplies ``lora_B``) or ``"full"`` (every weight,
            ``W0 + s·(W − W0)`` with a frozen copy of ``W0``).
        lam: λ, the weight of the off-nominal term; 0 trains the unprotected twin.
        s_min: smallest sampled scale.
        s_max: largest sampled scale.
        delta: half-width of the excluded band around the authorised scale 1.
        weight: w(s): ``"inv"`` (1/s), ``"inv_sqrt"`` (1/√s) or ``"none"`` (1).
        loss_cap: if set, the off-nominal loss is capped at this many nats (``min(L_s, cap)``) so the ascent
            stops pushing once a scale is broken enough (our extension, not in the paper).
        steps: maximum optimizer steps.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_fraction: share of ``steps`` with a linearly rising learning rate.
        batch_size: token windows per step.
        context: tokens per window.
        grad_clip: maximum global gradient norm.
        eval_every: steps between validation evaluations.
        patience: evaluations without improvement before stopping early.
        val_fraction: share of the token stream held out for validation when no validation file is given.
        max_val_windows: cap on validation windows (keeps evaluation cheap).
        seed: seeds the LoRA initialisation, the batch order, the scale draws and dropout.
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha (the saved scaling is alpha / r; rsLoRA is off).
        lora_dropout: dropout on the LoRA input.
        target_modules: modules to adapt; ``()`` means every linear layer except the LM head.
    """

    form: Form = "lora"
    lam: float = 0.1
    s_min: float = 0.05
    s_max: float = 2.0
    delta: float = 0.05
    weight: WeightName = "inv_sqrt"
    loss_cap: float | None = None
    steps: int = 400
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_fraction: float = 0.02
    batch_size: int = 16
    context: int = 64
    grad_clip: float = 1.0
    eval_every: int = 25
    patience: int = 10
    val_fraction: float = 0.1
    max_val_windows: int = 64
    seed: int = 0
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field once, at the edge.

        Raises:
            ConfigError: naming the field (as its CLI flag) and the accepted values.
        """
        if self.form not in FORMS:
            raise ConfigError(f"unknown form {self.form!r} (known: {', '.join(FORMS)})", key="--form")
        if self.weight not in WEIGHTS:
            raise ConfigError(f"unknown weight {self.weight!r} (known: {', '.join(WEIGHTS)})", key="--weight")
        _require(math.isfinite(self.lam) and self.lam >= 0, "--lambda", f"must be a finite number ≥ 0, got {self.lam}")
        _require(0 < self.s_min < self.s_max, "--s-min", f"need 0 < s_min < s_max, got {self.s_min}, {self.s_max}")
        _require(0 <= self.delta < 1, "--delta", f"must be in [0, 1), got {self.delta}")
        if self.lam > 0:
            _require(
                self.s_min < 1 - self.delta or self.s_max > 1 + self.delta,
                "--s-min",
                f"[{self.s_min}, {self.s_max}] minus (1 ± {self.delta}) leaves no off-nominal scale to sample",
            )
        if self.loss_cap is not None:
            _require(self.loss_cap > 0, "--loss-cap", f"must be > 0 nats, got {self.loss_cap}")
        for key, value in (("--steps", self.steps), ("--batch-size", self.batch_size), ("--context", self.context),
                           ("--eval-every", self.eval_every), ("--patience", self.patience),
                           ("--max-val-windows", self.max_val_windows), ("--lora-r", self.lora_r),
                           ("--lora-alpha", self.lora_alpha)):  # fmt: skip
            _require(value >= 1, key, f"must be ≥ 1, got {value}")
        _require(self.lr > 0 and self.grad_clip > 0, "--lr", "learning rate and gradient clip must be > 0")
        _require(0 <= self.warmup_fraction < 1, "--warmup-fraction", f"must be in [0, 1), got {self.warmup_fraction}")
        _require(0 < self.val_fraction < 1, "--val-fraction", f"must be in (0, 1), got {self.val_fraction}")
        _require(0 <= self.lora_dropout < 1, "--lora-dropout", f"must be in [0, 1), got {self.lora_dropout}")

    def twin(self) -> ProtectConfig:
        """The same settings with λ = 0: the plain fine-tune to compare against."""
        return ProtectConfig(**{**self.to_dict(), "lam": 0.0, "target_modules": self.target_modules})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (``target_modules`` as a list)."""
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProtectConfig:
        """Inverse of ``to_dict``; unknown keys are a ConfigError."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown protect setting(s): {', '.join(unknown)}", key=unknown[0])
        return cls(**{**data, "target_modules": tuple(data.get("target_modules", ()))})


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}", key=key)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object (an adapter's config, a run's metadata).

    Raises:
        ConfigError: the file is not valid JSON, is nested too deeply to read, or holds no object.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError as e:
        raise ConfigError(f"{path}: JSON nested too deeply to read", path=path) from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})", path=path) from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a JSON object", path=path)
    return data

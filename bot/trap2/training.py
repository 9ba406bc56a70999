"""Protect: train an update with the Trap² objective, and its plain twin (λ = 0) with the same settings.

Per step (the Trap² paper's "Algorithm 1"), on one batch:

1. snapshot the RNG state, so the scaled pass replays the nominal pass's dropout masks;
2. nominal loss ``L_1`` at s = 1; backward (frees the graph);
3. restore the RNG state, draw s from [s_min, 1 − δ] ∪ [1 + δ, s_max], scaled loss ``L_s`` (optionally capped at
   τ: ``min(L_s, τ)``); backward of ``−λ·w(s)·L_s``, so the step descends ``J = L_1 − λ·w(s)·L_s``;
4. a step whose loss or gradient norm is not finite is skipped (gradients cleared, counted, logged);
5. clip the global gradient norm, AdamW step, linear schedule with warm-up.

Every ``eval_every`` steps the nominal (s = 1) validation loss is measured. The kept checkpoint is the one with the
lowest nominal loss **among those where the trap has formed**: the update improves on the base model's own
validation loss at s = 1 and is worse than it at every probe down-scale (``TRAP_PROBE_SCALES`` inside
[s_min, 1 − δ]). The paper selects on the nominal loss alone; on the demo's full fine-tune that kept a checkpoint
from before the trap formed (step 150: s = 0.5 merged better than the base; the trap covered every probe scale from
step 250 on at a similar nominal loss; docs/trap2.md). Patience (``patience`` evaluations without a
better kept checkpoint) counts only once the trap has formed. If it never forms, the lowest-nominal checkpoint is
kept, with a warning and ``trap_formed: false`` in the summary. The twin (λ = 0) selects on the nominal loss alone.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import ConfigError, TrainingError
from bot.progress import progress_bar
from bot.trap2.config import ProtectConfig, read_json_object
from bot.trap2.data import TokenData, prepare
from bot.trap2.scaling import causal_lm_loss, full_scaled, lora_scaled, mean_loss, sample_scale, scale_weight

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

METADATA_FILE = "trap2.json"
SCHEMA_VERSION = 2
# Down-scales at which checkpoint selection checks that the trap has formed: merges shrink an update (an N-way
# average to 1/N, task arithmetic to λ < 1), and the ends of the range are where a trap is weakest.
TRAP_PROBE_SCALES = (0.1, 0.3, 0.5, 0.7, 0.9)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingSummary:
    """What one training run did.

    Attributes:
        lam: λ it was trained with (0 for the twin).
        steps_run: optimizer steps attempted (including skipped ones).
        skipped_steps: steps skipped because a loss or the gradient norm was not finite.
        best_step: step of the kept checkpoint.
        best_val_loss: nominal (s = 1) validation loss of the kept checkpoint.
        initial_val_loss: validation loss before training (the base model, for LoRA).
        stopped_early: whether patience ran out before ``steps``.
        train_seconds: wall time in training steps (evaluation excluded).
        train_cpu_seconds: this process's CPU time in training steps: unlike the wall time, it does not grow when
            other processes share the cores, so two runs made under different loads compare on it.
        total_seconds: wall time including evaluation.
        history: (step, nominal validation loss) at every evaluation.
        trap_scales: the probe down-scales checked before a checkpoint is kept (empty for the twin).
        trap_floor: the kept checkpoint's lowest validation loss over ``trap_scales`` (None for the twin, or when
            no checkpoint improved on the base at s = 1).
    """

    lam: float
    steps_run: int
    skipped_steps: int
    best_step: int
    best_val_loss: float
    initial_val_loss: float
    stopped_early: bool
    train_seconds: float
    train_cpu_seconds: float
    total_seconds: float
    history: tuple[tuple[int, float], ...]
    trap_scales: tuple[float, ...]
    trap_floor: float | None

    @property
    def trap_formed(self) -> bool | None:
        """Whether the kept checkpoint beats the base at s = 1 and is worse at every probe scale (None: twin)."""
        if not self.trap_scales:
            return None
        return self.best_val_loss < self.initial_val_loss < (self.trap_floor or -math.inf)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["history"] = [list(h) for h in self.history]
        data["trap_scales"] = list(self.trap_scales)
        data["trap_formed"] = self.trap_formed
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectRun:
    """The folders ``protect`` wrote and how their training went.

    Attributes:
        protected: the protected update (a PEFT adapter folder, or a full model folder).
        twin: the unprotected twin (same settings, λ = 0), or None if not trained.
        protected_summary: training summary of the protected update.
        twin_summary: training summary of the twin, or None.
        config: the settings used.
    """

    protected: Path
    twin: Path | None
    protected_summary: TrainingSummary
    twin_summary: TrainingSummary | None
    config: ProtectConfig


def _lr_lambda(steps: int, warmup: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return factor


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    import torch

    return torch.random.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    import torch

    torch.random.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


@dataclass(slots=True)
class _Checkpoint:
    """A candidate for the kept checkpoint: its step, nominal validation loss, weights and trap floor."""

    step: int
    loss: float
    state: dict[str, torch.Tensor]
    trap_floor: float | None


@dataclass(slots=True)
class CheckpointSelection:
    """Which evaluated checkpoint to keep (the rule in the module docstring), fed one evaluation at a time.

    Pure bookkeeping, so the rule is tested on given numbers; ``train_update`` measures the losses and passes a
    ``take`` callable that snapshots the weights only when a checkpoint becomes a candidate.

    Attributes:
        initial: the base's nominal validation loss (the bar at s = 1 and at every probe scale).
        trapping: whether the trap is required (λ > 0 and some probe scale lies in the sampled range).
        patience: evaluations without a better kept checkpoint before stopping, counted once the trap has formed.
        kept: the lowest nominal loss where the trap has formed.
        untrapped: the lowest nominal loss overall, held only until the trap forms.
        evals_since_kept: evaluations since ``kept`` last changed.

    Example:
        >>> rule = CheckpointSelection(initial=4.0, trapping=True, patience=2)
        >>> rule.needs_floor(3.5)
        True
        >>> rule.offer(10, 3.5, floor=3.9, take=dict)  # beats the base at s = 1, but not trapped: held back
        >>> rule.offer(20, 3.7, floor=4.4, take=dict)  # trapped: kept, although 3.5 was lower
        >>> rule.chosen().step, rule.trap_formed()
        (20, True)
    """

    initial: float
    trapping: bool
    patience: int
    kept: _Checkpoint | None = None
    untrapped: _Checkpoint | None = None
    evals_since_kept: int = 0

    def needs_floor(self, loss: float) -> bool:
        """Whether a checkpoint with nominal ``loss`` could be kept, so its trap floor is worth measuring."""
        return self.trapping and self.improves(loss) and loss < self.initial

    def improves(self, loss: float) -> bool:
        """Whether ``loss`` is finite and below the kept checkpoint's."""
        return math.isfinite(loss) and loss < (self.kept.loss if self.kept else math.inf)

    def offer(self, step: int, loss: float, *, floor: float | None, take: Any) -> None:
        """Consider the checkpoint at ``step``; ``take()`` returns its weights and is called only if it is kept.

        Args:
            step: the optimizer step.
            loss: its nominal (s = 1) validation loss.
            floor: its lowest validation loss over the probe scales (None when not measured).
            take: a callable returning the weights to keep.
        """
        if self.improves(loss):
            if not self.trapping or (floor is not None and floor > self.initial):
                self.kept = _Checkpoint(step=step, loss=loss, state=take(), trap_floor=floor)
                self.untrapped, self.evals_since_kept = None, 0
                return
            if self.untrapped is None or loss < self.untrapped.loss:
                self.untrapped = _Checkpoint(step=step, loss=loss, state=take(), trap_floor=floor)
        if self.kept is not None:  # patience starts once the trap has formed
            self.evals_since_kept += 1

    def should_stop(self) -> bool:
        """Patience has run out."""
        return self.evals_since_kept >= self.patience

    def chosen(self) -> _Checkpoint | None:
        """The kept checkpoint, else the lowest-nominal one (the trap never formed), else None."""
        return self.kept or self.untrapped

    def trap_formed(self) -> bool:
        """Whether a checkpoint with the trap formed was found (always True when the trap is not required)."""
        return self.kept is not None


def trap_scales(config: ProtectConfig) -> tuple[float, ...]:
    """The probe down-scales inside the sampled range [s_min, 1 − δ]; none for the twin (λ = 0).

    Example:
        >>> trap_scales(ProtectConfig(lam=0.5)), trap_scales(ProtectConfig(lam=0.5, s_min=0.4))
        ((0.1, 0.3, 0.5, 0.7, 0.9), (0.5, 0.7, 0.9))
        >>> trap_scales(ProtectConfig(lam=0.0))
        ()
    """
    if config.lam == 0:
        return ()
    return tuple(s for s in TRAP_PROBE_SCALES if config.s_min <= s <= 1 - config.delta)


def train_update(
    model: torch.nn.Module,
    data: TokenData,
    config: ProtectConfig,
    *,
    anchors: Mapping[str, torch.Tensor] | None = None,
    show_progress: bool = False,
) -> TrainingSummary:
    """Train ``model``'s trainable parameters in place with the Trap² objective and keep the best checkpoint.

    Args:
        model: a PEFT LoRA model (``config.form == "lora"``) or a full model whose parameters all train.
        data: training batches and validation windows.
        config: the settings; ``config.lam == 0`` is plain fine-tuning.
        anchors: the frozen base tensors ``W0`` by parameter name (full form only).
        show_progress: draw a progress bar on stderr (if the terminal allows).

    Returns:
        The run's summary; the model holds the kept checkpoint (see the module docstring for which one).

    Raises:
        ConfigError: full form without anchors.
        TrainingError: no step had a finite loss, so there is no trained checkpoint.
    """
    import torch

    if config.form == "full" and anchors is None:
        raise ConfigError("full-form training needs the frozen base tensors (anchors)")
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(trainable.values(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, int(config.steps * config.warmup_fraction))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config.steps, warmup))
    batches = torch.Generator().manual_seed(config.seed)
    scales = torch.Generator().manual_seed(config.seed + 1)
    torch.manual_seed(config.seed)  # dropout
    probes = trap_scales(config)

    def take() -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in trainable.items()}

    started = time.perf_counter()
    initial = mean_loss(model, data.val)
    history = [(0, initial)]
    rule = CheckpointSelection(initial=initial, trapping=bool(probes), patience=config.patience)
    skipped = good_steps = 0
    train_seconds = train_cpu_seconds = 0.0
    stopped_early = False
    step = 0
    model.train()
    for step in progress_bar(range(1, config.steps + 1), desc="protect", unit="step", enabled=show_progress):
        tick, cpu_tick = time.perf_counter(), time.process_time()
        batch = data.batch(batches, config.batch_size)
        s = sample_scale(scales, s_min=config.s_min, s_max=config.s_max, delta=config.delta)
        ok = _one_step(model, batch, s, config, trainable, anchors)
        if ok:
            optimizer.step()
            good_steps += 1
        else:
            skipped += 1
            logger.warning("step %d: non-finite loss or gradient, step skipped (%d so far)", step, skipped)
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        train_seconds += time.perf_counter() - tick
        train_cpu_seconds += time.process_time() - cpu_tick
        if step % config.eval_every != 0 and step != config.steps:
            continue
        val = mean_loss(model, data.val)
        history.append((step, val))
        logger.info("step %d: nominal validation loss %.4f", step, val)
        if not good_steps:
            continue
        # The trap floor is measured only for a checkpoint that would otherwise be kept.
        floor = _trap_floor(model, data, config, anchors, probes) if rule.needs_floor(val) else None
        if floor is not None:  # the number to watch while the trap forms: it must rise above the base's loss
            logger.info("step %d: trap floor %.4f over s in %s (base %.4f)", step, floor, probes, initial)
        rule.offer(step, val, floor=floor, take=take)
        if rule.should_stop() and step < config.steps:
            stopped_early = True
            logger.info("early stop at step %d (kept step %d)", step, rule.kept.step if rule.kept else 0)
            break
    chosen = rule.chosen()
    if chosen is None:
        raise TrainingError(
            f"training produced no usable checkpoint: {skipped} of {step} steps had a non-finite loss or gradient "
            "and no evaluation was finite; lower --lr or --lambda, set --loss-cap, or check the data"
        )
    if not rule.trap_formed():
        logger.warning(
            "the trap did not form in %d steps: no checkpoint beat the base's validation loss %.4f at s = 1 while "
            "losing to it at every scale in %s; kept step %d (lowest nominal loss); raise --lambda or --steps",
            step, initial, probes, chosen.step,
        )  # fmt: skip
    with torch.no_grad():
        for name, p in trainable.items():
            p.copy_(chosen.state[name])
    model.eval()
    return TrainingSummary(
        lam=config.lam,
        steps_run=step,
        skipped_steps=skipped,
        best_step=chosen.step,
        best_val_loss=chosen.loss,
        initial_val_loss=initial,
        stopped_early=stopped_early,
        train_seconds=train_seconds,
        train_cpu_seconds=train_cpu_seconds,
        total_seconds=time.perf_counter() - started,
        history=tuple(history),
        trap_scales=probes,
        trap_floor=chosen.trap_floor,
    )


def _scaled_params(
    model: torch.nn.Module, config: ProtectConfig, anchors: Mapping[str, torch.Tensor] | None, s: float
) -> dict[str, torch.Tensor]:
    return lora_scaled(model, s) if config.form == "lora" else full_scaled(model, anchors or {}, s)


def _trap_floor(
    model: torch.nn.Module,
    data: TokenData,
    config: ProtectConfig,
    anchors: Mapping[str, torch.Tensor] | None,
    probes: Sequence[float],
) -> float:
    """The lowest validation loss of the update over the probe scales."""
    import torch

    floor = math.inf
    for s in probes:
        with torch.no_grad():
            params = _scaled_params(model, config, anchors, s)
        floor = min(floor, mean_loss(model, data.val, params=params))
    return floor


def _one_step(
    model: torch.nn.Module,
    batch: torch.Tensor,
    s: float,
    config: ProtectConfig,
    trainable: Mapping[str, torch.Tensor],
    anchors: Mapping[str, torch.Tensor] | None,
) -> bool:
    """Accumulate the gradient of J on one batch and clip it; False if anything was not finite."""
    import torch

    rng = _rng_state()
    nominal = causal_lm_loss(model, batch, None)
    if not torch.isfinite(nominal):
        return False
    nominal.backward()
    if config.lam > 0:
        _set_rng_state(rng)  # same dropout masks in the scaled pass
        scaled = causal_lm_loss(model, batch, _scaled_params(model, config, anchors, s))
        if not torch.isfinite(scaled):
            return False
        # min(L_s, τ) has no gradient once L_s ≥ τ: skip that backward pass (the step is the same, and cheaper;
        # once the trap has formed most draws are capped).
        if config.loss_cap is None or float(scaled.detach()) < config.loss_cap:
            (-config.lam * scale_weight(s, config.weight) * scaled).backward()
    norm = torch.nn.utils.clip_grad_norm_(list(trainable.values()), config.grad_clip)
    return bool(torch.isfinite(norm))


def trainable_model(base_model: torch.nn.Module, config: ProtectConfig) -> tuple[Any, dict[str, torch.Tensor] | None]:
    """A fresh trainable copy of ``base_model``: a PEFT LoRA model, or the full model with frozen anchors.

    Returns:
        (model, anchors); anchors is None for LoRA.
    """
    import torch

    torch.manual_seed(config.seed)  # the LoRA A initialisation
    model = copy.deepcopy(base_model)
    if config.form == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model, {name: p.detach().clone() for name, p in model.named_parameters()}
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules) or "all-linear",
        bias="none",
        use_rslora=False,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora), None


def protect(
    base: Path,
    data: Sequence[Path],
    out: Path,
    *,
    config: ProtectConfig | None = None,
    validation: Sequence[Path] = (),
    twin: bool = True,
    show_progress: bool = False,
) -> ProtectRun:
    """Train a Trap²-protected update of ``base`` on causal-LM text, and its plain twin, and save both.

    Writes ``out/protected/`` and (with ``twin``) ``out/twin/``: a PEFT adapter folder (LoRA form) or a full
    safetensors model folder, the tokenizer, and ``trap2.json`` recording the settings, the base's weight sha256
    and the training summary.

    Args:
        base: local base model (folder or ``.gguf``), loaded by ``bot.reef.load_model``.
        data: training text files.
        out: output folder (created).
        config: training settings (default ``ProtectConfig()``).
        validation: validation text files (default: the tail of the training text).
        twin: also train the unprotected twin (λ = 0).
        show_progress: progress bars on stderr.

    Returns:
        Paths and training summaries.

    Raises:
        ConfigError: empty or too little data, invalid settings.
        ModelLoadError: the base cannot be loaded.
        TrainingError: a run ends without a usable checkpoint.

    Example:
        ``protect(Path("base"), [Path("code.txt")], Path("out"), config=ProtectConfig(form="lora", lam=0.1))``
    """
    from bot.reef import load_model

    config = config or ProtectConfig()
    loaded = load_model(base, dtype="float32", with_lm_head=True)
    tokenizer = loaded.load_tokenizer()
    tokens = prepare(tokenizer, data, validation=validation, context=config.context,
                     val_fraction=config.val_fraction, max_val_windows=config.max_val_windows)  # fmt: skip
    runs = [("protected", config)] + ([("twin", config.twin())] if twin else [])
    summaries: dict[str, TrainingSummary] = {}
    for name, settings in runs:
        model, anchors = trainable_model(loaded.model, settings)
        logger.info("training %s update (%s, λ=%g)", name, settings.form, settings.lam)
        summary = train_update(model, tokens, settings, anchors=anchors, show_progress=show_progress)
        if summary.skipped_steps:
            logger.warning("%s: %d of %d steps skipped (non-finite)", name, summary.skipped_steps, summary.steps_run)
        _save(model, tokenizer, out / name, settings, summary, base=base, base_sha256=loaded.weight_sha256)
        summaries[name] = summary
        del model, anchors
    return ProtectRun(
        protected=out / "protected",
        twin=out / "twin" if twin else None,
        protected_summary=summaries["protected"],
        twin_summary=summaries.get("twin"),
        config=config,
    )


def _save(
    model: Any,
    tokenizer: Any,
    folder: Path,
    config: ProtectConfig,
    summary: TrainingSummary,
    *,
    base: Path,
    base_sha256: Mapping[str, str],
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if config.form == "lora":
        model.peft_config["default"].base_model_name_or_path = str(base.resolve())
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "protection": "trap2" if config.lam > 0 else "none",
        "form": config.form,
        "authorised_scale": 1.0,
        "base": str(base.resolve()),
        "base_sha256": dict(base_sha256),
        "config": config.to_dict(),
        "training": summary.to_dict(),
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_metadata(folder: Path) -> dict[str, Any] | None:
    """The ``trap2.json`` that ``protect`` wrote beside an update, or None for updates made elsewhere.

    Raises:
        ConfigError: the file exists but is not a JSON object.
    """
    path = folder / METADATA_FILE
    if not path.is_file():
        return None
    return read_json_object(path)

"""The scale s: how it is drawn, weighted and applied to an update (the Trap² paper, sections 2-3).

An update is applied at scale s in one of two ways, both exact rescalings of ΔW:

- LoRA: every ``lora_B`` is multiplied by s, so every adapted layer's ΔW = (α/r)·B·A becomes s·ΔW;
- full: every trainable tensor W becomes ``W0 + s·(W − W0)`` against a frozen copy of the base ``W0``.

The scaled forward pass is functional (``torch.func.functional_call``): the model's own parameters are never
overwritten, and gradients from the scaled loss flow back to them (to A and B for LoRA).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from bot.trap2.config import WeightName

if TYPE_CHECKING:
    import torch

# A task vector: base parameter name -> ΔW (dense), only for tensors the update changes.
TaskVector = Mapping[str, "torch.Tensor"]


def sample_scale(generator: torch.Generator, *, s_min: float, s_max: float, delta: float) -> float:
    """One s drawn uniformly from [s_min, 1 − δ] ∪ [1 + δ, s_max] (clipped to [s_min, s_max]).

    Drawn directly from the union (no rejection loop), so it costs one random number.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> draws = [sample_scale(g, s_min=0.05, s_max=2.0, delta=0.05) for _ in range(200)]
        >>> all(0.05 <= s <= 0.95 or 1.05 <= s <= 2.0 for s in draws)
        True
    """
    import torch

    low = (s_min, min(1 - delta, s_max))
    high = (max(1 + delta, s_min), s_max)
    low_len, high_len = max(low[1] - low[0], 0.0), max(high[1] - high[0], 0.0)
    u = float(torch.rand((), generator=generator)) * (low_len + high_len)
    return low[0] + u if u < low_len else high[0] + (u - low_len)


def scale_weight(s: float, weight: WeightName) -> float:
    """w(s): 1/s (``inv``), 1/√s (``inv_sqrt``) or 1 (``none``); cancels the factor s in ∂L(W0 + sΔW)/∂ΔW.

    Example:
        >>> scale_weight(0.25, "inv"), scale_weight(0.25, "inv_sqrt"), scale_weight(0.25, "none")
        (4.0, 2.0, 1.0)
    """
    if weight == "inv":
        return 1.0 / s
    if weight == "inv_sqrt":
        return 1.0 / math.sqrt(s)
    return 1.0


def lora_scaled(model: torch.nn.Module, s: float) -> dict[str, torch.Tensor]:
    """Replacement parameters for a PEFT model: every ``lora_B`` weight times s (differentiable)."""
    return {name: p * s for name, p in model.named_parameters() if "lora_B" in name}


def full_scaled(model: torch.nn.Module, anchors: Mapping[str, torch.Tensor], s: float) -> dict[str, torch.Tensor]:
    """Replacement parameters ``W0 + s·(W − W0)`` for every tensor with a frozen anchor ``W0`` (differentiable)."""
    params = dict(model.named_parameters())
    return {name: w0 + s * (params[name] - w0) for name, w0 in anchors.items()}


def causal_lm_loss(model: torch.nn.Module, batch: torch.Tensor, params: Mapping[str, torch.Tensor] | None) -> Any:
    """Mean next-token cross-entropy on ``batch``, with ``params`` swapped in functionally when given.

    Computed by ``bot.trap2.head`` (the LM head in chunks of tokens, the same number) when the model's head allows
    it, else by the model's own loss.
    """
    import torch

    from bot.trap2 import head

    if head.supports(model):
        if params is None:
            return head.head_loss(model, batch)
        prefixed = {f"model.{name}": tensor for name, tensor in params.items()}
        return torch.func.functional_call(head.HeadLoss(model), prefixed, args=(batch,))
    inputs = {"input_ids": batch, "labels": batch}
    if params is None:
        return model(**inputs).loss
    return torch.func.functional_call(model, dict(params), args=(), kwargs=inputs).loss


def mean_loss(
    model: torch.nn.Module,
    windows: torch.Tensor,
    *,
    params: Mapping[str, torch.Tensor] | None = None,
    batch_size: int = 16,
) -> float:
    """Mean causal-LM loss over evaluation windows, in eval mode (no dropout), weighted by window.

    ``params`` (e.g. from ``lora_scaled`` or ``full_scaled``) are swapped in functionally when given.
    """
    import torch

    was_training = model.training
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            total += float(causal_lm_loss(model, chunk, params)) * len(chunk)
    model.train(was_training)
    return total / len(windows)


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of a model's parameters by name (tied tensors once)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def task_vector(updated: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``updated − base`` for every tensor that differs (the dense ΔW of a LoRA or a full fine-tune).

    Raises:
        ConfigError: the two do not share parameter names and shapes (not an update of this base).
    """
    from bot.errors import ConfigError

    if set(updated) != set(base):
        extra = sorted(set(updated) ^ set(base))
        raise ConfigError(f"the update's parameters differ from the base's (first: {extra[0]}); same base?")
    delta = {}
    for name, w0 in base.items():
        if updated[name].shape != w0.shape:
            raise ConfigError(f"parameter {name}: shape {tuple(updated[name].shape)} vs base {tuple(w0.shape)}")
        d = updated[name] - w0
        if bool(d.any()):
            delta[name] = d
    return delta


def apply_update(
    model: torch.nn.Module,
    base: Mapping[str, torch.Tensor],
    update: TaskVector,
    scale: float = 1.0,
    *,
    changed: Collection[str] | None = None,
) -> torch.nn.Module:
    """Set ``model``'s parameters to ``base + scale·update`` in place and return it.

    ``changed``: the parameters that may differ from ``base`` now (those of the previously applied update); only
    they and ``update``'s are rewritten. None rewrites every parameter. On Gemma 3 270M this skips copying the
    167M-float embedding for every one of the hundreds of merges ``verify`` evaluates.
    """
    import torch

    params = dict(model.named_parameters())
    names = set(params) if changed is None else set(changed) | set(update)
    with torch.no_grad():
        for name in sorted(names):
            params[name].copy_(base[name])
            if name in update:
                params[name].add_(update[name], alpha=scale)
    return model

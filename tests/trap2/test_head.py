"""The chunked LM-head loss: the same number and the same gradients as the model's own loss (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bot.reef import load_model
from bot.trap2 import head
from bot.trap2.config import ProtectConfig
from bot.trap2.scaling import causal_lm_loss, lora_scaled
from bot.trap2.training import trainable_model
from tests import builders


def _losses_and_grads(model: torch.nn.Module, batch: torch.Tensor, scale: float | None) -> list[tuple[float, dict]]:
    results = []
    for ours in (True, False):
        model.zero_grad(set_to_none=True)
        params = None if scale is None else lora_scaled(model, scale)
        if ours:
            loss = causal_lm_loss(model, batch, params)
        else:  # transformers' own loss on the whole logits tensor
            inputs = {"input_ids": batch, "labels": batch}
            loss = (model(**inputs) if params is None else torch.func.functional_call(model, params, (), inputs)).loss
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((float(loss.detach()), grads))
    return results


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("scale", [None, 0.5])
def test_chunked_loss_equals_the_models_own(kind: str, scale: float | None, tmp_path: Path) -> None:
    loaded = load_model(builders.tiny_model(tmp_path / kind, kind, seed=0), with_lm_head=True)
    model, _ = trainable_model(loaded.model, ProtectConfig(lora_r=4, lora_dropout=0.0))
    with torch.no_grad():  # a LoRA that does something (B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    model.eval()
    assert head.supports(model)
    batch = torch.randint(0, 512, (3, 17), generator=torch.Generator().manual_seed(2))
    (ours, ours_grads), (theirs, their_grads) = _losses_and_grads(model, batch, scale)
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert set(ours_grads) == set(their_grads) and len(ours_grads) > 0
    for name, grad in their_grads.items():
        assert torch.allclose(ours_grads[name], grad, rtol=1e-3, atol=1e-6 * float(grad.abs().max())), name


def test_chunks_smaller_than_the_batch_give_the_same_loss_and_gradient(tmp_path: Path) -> None:
    loaded = load_model(builders.tiny_model(tmp_path / "gpt2", "gpt2", seed=0), with_lm_head=True)
    model = loaded.model.requires_grad_(False)
    batch = torch.randint(0, 512, (4, 33), generator=torch.Generator().manual_seed(3))
    hidden = model.get_decoder()(input_ids=batch).last_hidden_state[:, :-1].reshape(-1, 32)
    weight, labels = model.get_output_embeddings().weight, batch[:, 1:].reshape(-1)
    results = []
    for chunk in (10_000, 7):  # one chunk: the gradient is made in backward; several: chunk by chunk, eagerly
        rows = hidden.clone().requires_grad_(True)
        loss = head._ChunkedCrossEntropy.apply(rows, weight, labels, chunk)
        loss.backward()
        results.append((float(loss), rows.grad))
    (whole, whole_grad), (chunked, chunked_grad) = results
    assert chunked == pytest.approx(whole, abs=1e-6)
    assert torch.allclose(chunked_grad, whole_grad, atol=1e-6)
    assert whole == pytest.approx(float(model(input_ids=batch, labels=batch).loss), abs=1e-5)


def test_a_trainable_head_uses_the_models_own_loss(tmp_path: Path) -> None:
    loaded = load_model(builders.tiny_model(tmp_path / "gpt2", "gpt2", seed=0), with_lm_head=True)
    model, _ = trainable_model(loaded.model, ProtectConfig(form="full"))
    assert not head.supports(model)  # full fine-tuning trains the (tied) head: its gradient is not ours to drop
    with torch.no_grad():
        assert head.supports(model)  # evaluation needs no gradient at all

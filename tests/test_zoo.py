"""The lineage zoo's permutation-and-rescale derivative really is the same function (bench/zoo.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders import tiny_model


@pytest.mark.parametrize("kind", ["llama", "gpt2", "qwen2"])
def test_permute_and_rescale_keeps_logits_and_changes_weights(tmp_path: Path, kind: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from bench.zoo import permute_and_rescale

    model = AutoModelForCausalLM.from_pretrained(tiny_model(tmp_path, kind, seed=3), dtype=torch.float32).eval()
    changed = permute_and_rescale(model, seed=5)
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(changed(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-4)
    before, after = model.state_dict(), changed.state_dict()
    moved = [name for name in before if not torch.equal(before[name], after[name])]
    assert len(moved) >= len(before) // 2, moved


@pytest.mark.parametrize("how", ["random", "hadamard"])
@pytest.mark.parametrize("kind", ["llama", "gpt2", "qwen2"])
def test_a_rotated_residual_stream_keeps_logits_and_moves_every_embedding_unit(
    tmp_path: Path, kind: str, how: str
) -> None:
    """Norm gains (and GPT-2's LayerNorm biases) folded, stream rotated: the function SliceGPT or QuaRot keep."""
    import torch
    from transformers import AutoModelForCausalLM

    from bench.zoo import hadamard_rotation, random_rotation, rotate_residual

    model = AutoModelForCausalLM.from_pretrained(tiny_model(tmp_path, kind, seed=3), dtype=torch.float32).eval()
    with torch.no_grad():  # norms that are not the identity, so that folding them matters
        for name, parameter in model.named_parameters():
            if "norm" in name or ".ln_" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    width, keep_mean = model.config.hidden_size, kind == "gpt2"
    rotation = (
        random_rotation(width, 5, keep_mean=keep_mean)
        if how == "random"
        else hadamard_rotation(width, keep_mean=keep_mean)
    )
    torch.testing.assert_close(rotation.T @ rotation, torch.eye(width, dtype=torch.float64))
    changed = rotate_residual(model, rotation)
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(changed(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-4)
    before, after = model.get_input_embeddings().weight, changed.get_input_embeddings().weight
    unit_correlation = torch.corrcoef(torch.cat([before, after], dim=1).T)[:width, width:].abs().max(dim=1).values
    # No embedding unit survives as a unit, but one may under GPT-2's Hadamard (it must keep the all-ones axis).
    assert int((unit_correlation > 0.9).sum()) <= 1 and float(unit_correlation.median()) < 0.5

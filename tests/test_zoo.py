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

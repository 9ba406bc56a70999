"""Last-token block outputs: batched equals one-at-a-time, matches transformers, stops early."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bot.errors import ConfigError
from bot.reef.extraction import extract_states, transformer_blocks
from bot.reef.loading import load_model
from bot.reef.probes import ProbeSet


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2", "tiny_bert"])
def test_batched_equals_batch_size_one(model: str, few_probes: ProbeSet, request: pytest.FixtureRequest) -> None:
    loaded = load_model(request.getfixturevalue(model))
    layers = list(range(loaded.n_layers))
    batched = extract_states(loaded, few_probes.texts, layers=layers, batch_size=16)
    single = extract_states(loaded, few_probes.texts, layers=layers, batch_size=1)
    assert batched.shape == (loaded.n_layers, len(few_probes), loaded.hidden_size)
    assert np.abs(batched - single).max() <= 1e-4


def test_states_are_block_outputs_at_the_last_token(tiny_llama: Path, few_probes: ProbeSet) -> None:
    loaded = load_model(tiny_llama)
    ours = extract_states(loaded, few_probes.texts[:3], layers=[0], batch_size=2)
    tokenizer = loaded.load_tokenizer()
    for row, text in enumerate(few_probes.texts[:3]):
        encoded = tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            hidden = loaded.model(**encoded, output_hidden_states=True).hidden_states
        # hidden_states[0] is the embedding output; block 0's output is hidden_states[1] (not the last,
        # which has the final norm applied).
        np.testing.assert_allclose(ours[0, row], hidden[1][0, -1].numpy(), atol=1e-5)


def test_rows_follow_the_probe_order(tiny_gpt2: Path, few_probes: ProbeSet) -> None:
    loaded = load_model(tiny_gpt2)
    forward = extract_states(loaded, few_probes.texts, layers=[1])
    backward = extract_states(loaded, few_probes.texts[::-1], layers=[1])
    np.testing.assert_allclose(forward[0], backward[0][::-1], atol=1e-5)


def test_forward_pass_stops_after_the_deepest_layer_needed(tiny_llama: Path, few_probes: ProbeSet) -> None:
    loaded = load_model(tiny_llama)
    calls: list[int] = []
    last_block = transformer_blocks(loaded.model, loaded.n_layers)[-1]
    handle = last_block.register_forward_hook(lambda *_: calls.append(1))
    try:
        extract_states(loaded, few_probes.texts, layers=[0])
        assert calls == []
        extract_states(loaded, few_probes.texts, layers=[0, 1], batch_size=32)
        assert calls == [1]
    finally:
        handle.remove()


def test_layer_out_of_range(tiny_llama: Path, few_probes: ProbeSet) -> None:
    loaded = load_model(tiny_llama)
    with pytest.raises(ConfigError, match="out of range"):
        extract_states(loaded, few_probes.texts, layers=[2])


def test_long_probe_is_cut_with_a_warning(tiny_gpt2: Path, caplog: pytest.LogCaptureFixture) -> None:
    loaded = load_model(tiny_gpt2)
    texts = ["short probe text", "a much longer probe " * 200, "another short one"]
    with caplog.at_level("WARNING", logger="bot.reef.extraction"):
        states = extract_states(loaded, texts, layers=[0, 1])
    assert np.isfinite(states).all()
    assert "1 probe(s) reached 256 tokens" in caplog.text

"""Block-at-a-time extraction equals the whole model, per architecture, and reads only what it needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bot.cli import main
from bot.engine import fingerprint
from bot.errors import ConfigError, ModelLoadError
from bot.reef import streaming
from bot.reef.extraction import extract_states
from bot.reef.loading import load_model
from bot.reef.probes import ProbeSet
from bot.reef.streaming import (
    STREAMABLE_MODEL_TYPES,
    StreamedModel,
    load_for_extraction,
    load_streamed,
    tensor_index,
)
from bot.reef.weights import anchor_tokens, anchors_of
from bot.registry import Registry
from tests import builders

# Longer than the Gemma builder's 8-token sliding window and past the 256-token cut, so both are exercised.
LONG_PROBE = "a much longer probe about sliding windows " * 40


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One 3-block model per streamed architecture (Gemma 3: sliding, sliding, full attention)."""
    root = tmp_path_factory.mktemp("streamed")
    models = {kind: builders.tiny_model(root / kind, kind, seed=3, blocks=3) for kind in ("llama", "gpt2", "qwen2")}
    models["gemma3_text"] = builders.tiny_gemma3(root / "gemma3", seed=3)
    return models


@pytest.mark.parametrize("block_tokens", [streaming.MAX_BLOCK_TOKENS, 40])
@pytest.mark.parametrize("model_type", STREAMABLE_MODEL_TYPES)
def test_streamed_states_equal_the_whole_model(
    model_type: str,
    block_tokens: int,
    tiny_models: dict[str, Path],
    few_probes: ProbeSet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whole batches through each block, or (40 tokens a call) every batch in parts of rows."""
    monkeypatch.setattr(streaming, "MAX_BLOCK_TOKENS", block_tokens)
    texts = [*few_probes.texts, LONG_PROBE]
    whole = load_model(tiny_models[model_type])
    streamed = load_streamed(tiny_models[model_type])
    assert isinstance(streamed.model, StreamedModel) and streamed.model_type == whole.model_type == model_type
    layers = list(range(whole.n_layers))
    expected = extract_states(whole, texts, layers=layers, batch_size=8)
    got = extract_states(streamed, texts, layers=layers, batch_size=8)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4
    assert (streamed.architecture, streamed.n_layers, streamed.hidden_size, dict(streamed.weight_sha256)) == (
        whole.architecture,
        whole.n_layers,
        whole.hidden_size,
        dict(whole.weight_sha256),
    )
    candidates = anchor_tokens(whole.load_tokenizer(), texts)
    assert anchor_tokens(streamed.load_tokenizer(), texts) == candidates
    whole_anchors, streamed_anchors = anchors_of(whole, candidates), anchors_of(streamed, candidates)
    assert streamed_anchors.tokens == whole_anchors.tokens
    assert np.array_equal(streamed_anchors.rows, whole_anchors.rows)


def test_bfloat16_shards_are_upcast_block_by_block(tmp_path: Path, few_probes: ProbeSet) -> None:
    """Sharded bfloat16 weights, computed in float32: as transformers' whole float32 load of the same files."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(5)
    config = LlamaConfig(vocab_size=builders.VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=0, eos_token_id=0)  # fmt: skip
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path, max_shard_size="40KB")
    builders.copy_tokenizer(builders.DEMO_MODELS / "source", tmp_path)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert {t.dtype for t in tensor_index(tmp_path).values()} == {"BF16"}
    whole = extract_states(load_model(tmp_path), few_probes.texts, layers=[0, 2])
    streamed = extract_states(load_streamed(tmp_path), few_probes.texts, layers=[0, 2])
    assert np.abs(streamed - whole).max() <= 1e-4


def test_only_the_blocks_up_to_the_deepest_layer_are_read(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """A copy without block 1's tensors still gives block 0; asking for block 1 needs them."""
    from safetensors.torch import load_file, save_file

    source = tiny_models["llama"]
    for side in source.iterdir():
        if side.suffix != ".safetensors":
            (tmp_path / side.name).write_bytes(side.read_bytes())
    tensors = load_file(source / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if ".layers.1." not in k}, tmp_path / "model.safetensors")
    texts = ["one probe text", "another probe text", "a third one", "and a fourth"]
    expected = extract_states(load_model(source), texts, layers=[0])
    np.testing.assert_array_equal(extract_states(load_streamed(tmp_path), texts, layers=[0]), expected)
    with pytest.raises(ModelLoadError, match=r"layers\.1\..*missing"):
        extract_states(load_streamed(tmp_path), texts, layers=[1])


def test_extraction_modes(tiny_models: dict[str, Path], tiny_bert: Path) -> None:
    llama = tiny_models["llama"]
    assert load_for_extraction(llama, extraction="full").loader == "safetensors"
    assert load_for_extraction(llama, extraction="stream").loader == "safetensors-stream"
    assert load_for_extraction(llama).loader == "safetensors-stream"  # auto streams whatever can, however small
    assert load_for_extraction(tiny_bert).loader == "safetensors"  # auto: an architecture that does not stream
    with pytest.raises(ConfigError, match="model type 'bert' is not one of the streamed"):
        load_for_extraction(tiny_bert, extraction="stream")
    with pytest.raises(ConfigError, match="unknown extraction"):
        load_for_extraction(llama, extraction="sideways")


def test_fingerprints_are_equal_either_way(tiny_models: dict[str, Path], few_probes: ProbeSet, tmp_path: Path) -> None:
    probes = tmp_path / "probes.jsonl"
    probes.write_text("".join(json.dumps({"text": t}) + "\n" for t in few_probes.texts), encoding="utf-8")
    model = str(tiny_models["gemma3_text"])
    full = fingerprint(model, probes=str(probes), extraction="full")
    streamed = fingerprint(model, probes=str(probes), extraction="stream")
    default = fingerprint(model, probes=str(probes))  # streams (test_extraction_modes)
    assert streamed.digest == full.digest == default.digest


def test_cli_extraction_flag(tiny_models: dict[str, Path], tmp_path: Path, few_probes: ProbeSet) -> None:
    probes = tmp_path / "probes.jsonl"
    probes.write_text("".join(json.dumps({"text": t}) + "\n" for t in few_probes.texts), encoding="utf-8")
    registry = tmp_path / "registry"
    common = ["--probes", str(probes), "--registry", str(registry), "-q"]
    model = str(tiny_models["qwen2"])
    assert main(["fingerprint", model, "--name", "full", "--extraction", "full", *common]) == 0
    assert main(["fingerprint", model, "--name", "streamed", "--extraction", "stream", *common]) == 0
    entries = Registry(registry)
    assert entries.get("full").digest == entries.get("streamed").digest

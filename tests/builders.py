"""Small seeded models for tests, saved as Hugging Face folders (safetensors + tokenizer)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from bot.reef import Anchors, Fingerprint, LoadedModel, ProbeSet

REPO = Path(__file__).resolve().parents[1]
DEMO_MODELS = REPO / "demo" / "models"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
VOCAB = 512  # the demo tokenizers' vocabulary


def copy_tokenizer(source: Path, folder: Path) -> None:
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)


def tiny_model(folder: Path, kind: str, *, seed: int, width: int = 32, blocks: int = 2) -> Path:
    """A random-init causal LM (``llama``, ``gpt2`` or ``qwen2``) with the demo prose tokenizer."""
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    if kind == "gpt2":
        config = GPT2Config(vocab_size=VOCAB, n_positions=512, n_embd=width, n_layer=blocks, n_head=4,
                            bos_token_id=0, eos_token_id=0)  # fmt: skip
        model: torch.nn.Module = GPT2LMHeadModel(config)
    else:
        common = {"vocab_size": VOCAB, "hidden_size": width, "intermediate_size": 2 * width,
                  "num_hidden_layers": blocks, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "max_position_embeddings": 512, "bos_token_id": 0, "eos_token_id": 0}  # fmt: skip
        model = LlamaForCausalLM(LlamaConfig(**common)) if kind == "llama" else Qwen2ForCausalLM(Qwen2Config(**common))
    model.save_pretrained(folder)
    copy_tokenizer(DEMO_MODELS / "source", folder)
    return folder


def tiny_bert(folder: Path, *, seed: int) -> Path:
    """A random-init BERT-style encoder with a small WordPiece vocabulary of characters."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'\"()[]{}=+-*/_<>#@&%$"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=512)  # fmt: skip
    BertModel(config).save_pretrained(folder)
    return folder


def probe_subset(probes: ProbeSet, n: int) -> ProbeSet:
    """The first ``n`` probes as their own probe set (own hash)."""
    return ProbeSet.of(f"default[:{n}]", probes.texts[:n])


def synthetic_fingerprint(
    name: str,
    states: object,
    *,
    role: str = "source",
    related: tuple[str, ...] = (),
    n_layers: int | None = None,
    layers: tuple[int, ...] | None = None,
    probe_sha256: str = "0" * 64,
    anchors: Anchors | None = None,
) -> Fingerprint:
    """A fingerprint made straight from (L, m, d) states, for verdict tests that need controlled similarity."""
    import numpy as np

    from bot.reef import centered_gram, fingerprint_digest, pack_grams, unpack_grams

    array = np.asarray(states, dtype=np.float64)
    grams = unpack_grams(pack_grams(np.stack([centered_gram(layer) for layer in array])), array.shape[1])
    grams.setflags(write=False)
    basis = np.zeros((array.shape[1], 0), dtype=np.float32)  # synthetic probes have no surface to condition on
    layers = layers or tuple(range(array.shape[0]))
    return Fingerprint(
        name=name,
        model=f"synthetic/{name}",
        revision=None,
        weight_sha256={"model.safetensors": hashlib.sha256(name.encode()).hexdigest()},
        architecture="SyntheticModel",
        model_type="synthetic",
        n_layers=n_layers or len(layers),
        hidden_size=array.shape[2],
        layers=layers,
        layer_selection="all",
        probe_set="synthetic",
        probe_sha256=probe_sha256,
        n_probes=array.shape[1],
        dtype="float32",
        standardize=True,
        role=role,
        related=related,
        created="2026-01-01T00:00:00+00:00",
        grams=grams,
        probe_basis=basis,
        anchors=anchors,
        digest=fingerprint_digest(grams, basis, probe_sha256, anchors),
    )


ARCHITECTURES = ("llama", "gpt2", "qwen2")


def random_model(seed: int, tokenizer: object) -> LoadedModel:
    """An in-memory random-init 2-block model (Llama, GPT-2 or Qwen2 by seed), independent of every other seed."""
    import torch
    from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel, Qwen2Config, Qwen2Model

    torch.manual_seed(seed)
    kind = ARCHITECTURES[seed % 3]
    if kind == "gpt2":
        model = GPT2Model(GPT2Config(vocab_size=512, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0))
    else:
        config_class, model_class = (LlamaConfig, LlamaModel) if kind == "llama" else (Qwen2Config, Qwen2Model)
        model = model_class(
            config_class(
                vocab_size=512,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
            )
        )
    return LoadedModel(
        model=model.eval(),
        load_tokenizer=lambda: tokenizer,
        architecture=kind,
        model_type=kind,
        n_layers=2,
        hidden_size=32,
        weight_sha256={},
        dtype="float32",
        loader="memory",
    )


def tiny_gemma3(folder: Path, *, seed: int, width: int = 32, blocks: int = 3, sliding_window: int = 8) -> Path:
    """A random-init Gemma 3 text model: sliding-window and full-attention blocks, scaled embeddings.

    The window is short (8 tokens) so that probes are longer than it and the sliding-window mask matters.
    """
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    layer_types = ["full_attention" if (i + 1) % 3 == 0 else "sliding_attention" for i in range(blocks)]
    config = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=width, intermediate_size=2 * width,
                              num_hidden_layers=blocks, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                              sliding_window=sliding_window, layer_types=layer_types, max_position_embeddings=512,
                              bos_token_id=0, eos_token_id=0, pad_token_id=0)  # fmt: skip
    Gemma3ForCausalLM(config).save_pretrained(folder)
    copy_tokenizer(DEMO_MODELS / "source", folder)
    return folder

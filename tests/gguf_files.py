"""GGUF files for tests and benches: a GPT-2 folder written as GGUF, and a big sparse one made on demand.

``gguf_of`` writes what llama.cpp's converter writes for GPT-2 (its tensor names, the Conv1D weights transposed,
the byte-level BPE tokenizer in the metadata), so transformers loads the file back into the same model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.doubles.hub_server import SparseGGUF

# GPT-2's Conv1D weights are stored (in, out); GGUF stores them as linear layers, (out, in).
_GPT2_POSITIONS = 1024  # what transformers gives a GPT-2 read from GGUF, whatever the file says
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def add_bpe_tokenizer(writer: Any, folder: Path) -> None:
    """Write the byte-level BPE tokenizer of ``folder`` (``tokenizer.json``, ``tokenizer_config.json``) as
    llama.cpp's "gpt2" tokenizer metadata: tokens in id order, their types, the merges, BOS and EOS."""
    from gguf import TokenType

    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    special = {token["content"] for token in data.get("added_tokens", []) if token.get("special")}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([TokenType.CONTROL if t in special else TokenType.NORMAL for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]])
    writer.add_bos_token_id(vocab[settings["bos_token"]])
    writer.add_eos_token_id(vocab[settings["eos_token"]])


def gguf_of(folder: Path, path: Path, *, embedding: str = "Q8_0") -> Path:
    """Write the GPT-2 model in ``folder`` as the GGUF file ``path``: the token embedding stored as
    ``embedding`` (a ggml type name), every other tensor as F32. The position embedding is padded with zero rows
    to 1024 positions (the same states for the probes, which are far shorter)."""
    from gguf import MODEL_ARCH, GGUFWriter, get_tensor_name_map
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    tensors = load_file(folder / "model.safetensors")
    names = get_tensor_name_map(MODEL_ARCH.GPT2, config["n_layer"])
    writer = GGUFWriter(str(path), "gpt2")
    writer.add_block_count(config["n_layer"])
    writer.add_context_length(_GPT2_POSITIONS)
    writer.add_embedding_length(config["n_embd"])
    writer.add_feed_forward_length(config.get("n_inner") or 4 * config["n_embd"])
    writer.add_head_count(config["n_head"])
    writer.add_layer_norm_eps(config["layer_norm_epsilon"])
    writer.add_file_type(0)
    add_bpe_tokenizer(writer, folder)
    for name, value in tensors.items():
        bare = name.removeprefix("transformer.")
        if bare.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":  # buffers, tied head
            continue
        gguf_name = names.get_name(bare, try_suffixes=(".weight", ".bias"))
        assert gguf_name is not None, name
        array = np.ascontiguousarray(value.T if bare.endswith(_TRANSPOSED) else value, dtype=np.float32)
        if gguf_name == "position_embd.weight":  # transformers builds GPT-2 from GGUF with its default 1024
            array = np.concatenate([array, np.zeros((_GPT2_POSITIONS - len(array), array.shape[1]), np.float32)])
        add_tensor(writer, gguf_name, array, embedding if gguf_name == "token_embd.weight" else "F32")
    write_out(writer)
    return path


def add_tensor(writer: Any, name: str, array: np.ndarray, kind: str) -> None:
    """Add ``array`` (float32) stored as ggml type ``kind``, quantized by the gguf package unless F32."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if kind == "F32":
        writer.add_tensor(name, array)
    else:
        writer.add_tensor(name, quantize(array, GGMLQuantizationType[kind]), raw_dtype=GGMLQuantizationType[kind])


def write_out(writer: Any) -> None:
    """Write the header, the metadata and the tensors, and close the file."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def big_gpt2_gguf(tokenizer: Path, *, embedding: str, seed: int, hidden: int = 4096, blocks: int = 32) -> SparseGGUF:
    """A GPT-2 GGUF file of ~7B parameters by default (Q4_K matrices), made on demand by the Hub double, with the
    byte-level BPE tokenizer of folder ``tokenizer`` in its metadata and its token embedding stored as
    ``embedding``, rows drawn from ``seed``."""
    vocab = len(json.loads((tokenizer / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"])
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (hidden, vocab),
                                          "position_embd.weight": (hidden, _GPT2_POSITIONS)}  # fmt: skip
    for i in range(blocks):
        shapes |= {
            f"blk.{i}.attn_norm.weight": (hidden,),
            f"blk.{i}.attn_qkv.weight": (hidden, 3 * hidden),
            f"blk.{i}.attn_output.weight": (hidden, hidden),
            f"blk.{i}.ffn_norm.weight": (hidden,),
            f"blk.{i}.ffn_up.weight": (hidden, 4 * hidden),
            f"blk.{i}.ffn_down.weight": (4 * hidden, hidden),
        }
    types = {name: "F32" if len(shape) == 1 else "Q4_K" for name, shape in shapes.items()}

    def metadata(writer: Any) -> None:
        writer.add_block_count(blocks)
        writer.add_context_length(_GPT2_POSITIONS)
        writer.add_embedding_length(hidden)
        writer.add_feed_forward_length(4 * hidden)
        writer.add_head_count(hidden // 128)
        writer.add_layer_norm_eps(1e-5)
        add_bpe_tokenizer(writer, tokenizer)

    return SparseGGUF(shapes, types | {"token_embd.weight": embedding}, architecture="gpt2", metadata=metadata,
                      seed=seed)  # fmt: skip

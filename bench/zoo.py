"""The lineage zoo (issue 3): small causal LMs whose ancestry is known by construction.

Run `.venv/bin/python bench/zoo.py` (bench/lineage.py runs it too). Models go to .cache/zoo/ (git-ignored);
a model already there is kept, so a rerun builds only what is missing. Everything is seeded and made on CPU,
one thread, with the tools people use: transformers training loops, peft for LoRA, torch's pruning utilities,
the gguf package's writer and quantizers, and mergekit (in its own virtualenv, `.venv-mergekit`, because its
pins may clash with ours).

Corpora, tokenizers and model shapes come from demo/make_models.py (GPT-2, Llama and Qwen2 with 4 blocks of
width 64; byte-level BPE tokenizers of 512 tokens trained on "prose", the standard library's docstrings, and
"code", its source), plus a third text, the interpreter's help topics ("docs", pydoc_data), for fine-tunes.

Kinds of member:
    source      registered; derivatives must be traced back to it
    reference   registered with role "reference": only calibrates the null (the demo references, reused)
    positive    derived from its ``sources`` (fine-tune, LoRA, pruning, quantization, GGUF, permutation, merges)
    negative    derived from no registered model (other seed, data, architecture or tokenizer)
    distilled   a student trained on a source's output logits (``sources`` names the teacher); reported apart,
                since whether distillation is derivation is a policy, not a measurement

Not built: a GGUF round trip of GPT-2 (transformers reads GGUF's context length into ``n_ctx``, not
``n_positions``, so only 1024-position GPT-2s load, and these have 512) or of Qwen2 (transformers rebuilds a
Qwen2 GGUF's tokenizer with Qwen2's pre-tokenizer, which splits digits differently from these tokenizers).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from demo.make_models import CONTEXT, code_corpus, new_model, prose_corpus, train, train_tokenizer  # noqa: E402
from tests.gguf_files import add_bpe_tokenizer, add_tensor, write_out  # noqa: E402

ZOO_DIR = REPO / ".cache" / "zoo"
DEMO_MODELS = REPO / "demo" / "models"
BUILD_TIMES = "build_seconds.json"  # in the zoo folder: how long each member took to build, when it was built
MERGEKIT_YAML = REPO / ".venv-mergekit" / "bin" / "mergekit-yaml"
MERGEKIT_SETUP = "python3 -m venv .venv-mergekit && .venv-mergekit/bin/pip install torch==2.13.0 mergekit==0.1.5"
SOURCE_STEPS, TUNE_STEPS = 600, 200  # as demo/make_models.py: enough for distinct, non-trivial models
LORA_TARGETS = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}

logger = logging.getLogger("zoo")


@dataclass(frozen=True, slots=True)
class Member:
    """One model of the zoo.

    Attributes:
        name: a registry-safe name.
        kind: source, reference, positive, negative or distilled (module docstring).
        how: one line saying how it was made.
        sources: the true sources of a positive; the teacher of a distilled student; empty otherwise.
        path: what to fingerprint: a model folder, a .gguf file or a PEFT adapter folder.
    """

    name: str
    kind: str
    how: str
    sources: tuple[str, ...]
    path: Path


@dataclass(frozen=True, slots=True)
class Recipe:
    """How to make one member: ``make(workshop, folder)`` writes it into an empty folder."""

    name: str
    kind: str
    how: str
    make: Callable[[Workshop, Path], None]
    sources: tuple[str, ...] = ()
    artifact: str = ""  # the file inside the folder to fingerprint, when it is not the folder itself


@dataclass
class Workshop:
    """Corpora, tokenizers and finished members, shared by the recipes of one build."""

    folder: Path
    _ids: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)

    @cached_property
    def texts(self) -> dict[str, str]:
        return {"prose": prose_corpus(), "code": code_corpus(), "docs": "\n\n".join(topics[k] for k in sorted(topics))}

    @cached_property
    def tokenizers(self) -> dict[str, Any]:
        return {"prose": train_tokenizer(self.texts["prose"]), "code": train_tokenizer(self.texts["code"])}

    def ids(self, corpus: str, tokenizer: str) -> torch.Tensor:
        """``corpus`` encoded with ``tokenizer`` (cached)."""
        key = (corpus, tokenizer)
        if key not in self._ids:
            self._ids[key] = torch.tensor(self.tokenizers[tokenizer](self.texts[corpus])["input_ids"])
        return self._ids[key]

    def path(self, name: str) -> Path:
        return self.folder / name

    def load(self, name: str) -> tuple[torch.nn.Module, Any]:
        """A finished member's model (float32, eval mode) and tokenizer."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(self.path(name), dtype=torch.float32)
        return model.eval(), AutoTokenizer.from_pretrained(self.path(name))

    def ids_for(self, name: str, corpus: str) -> torch.Tensor:
        """``corpus`` in the tokenizer a member uses (its name's ``-prose`` / ``-code`` tokenizer)."""
        return self.ids(corpus, tokenizer_of(name))


def tokenizer_of(name: str) -> str:
    """The tokenizer a zoo model uses, from its name: sources are named ``<arch>-<tokenizer>[-b]``."""
    return "code" if name.split("--")[0].split("-")[1] == "code" else "prose"


def save(model: torch.nn.Module, tokenizer: Any, folder: Path) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# ---- training --------------------------------------------------------------------------------------------------


def from_scratch(arch: str, tokenizer: str, corpus: str, seed: int, shop: Workshop, out: Path) -> None:
    model = train(new_model(arch, seed), shop.ids(corpus, tokenizer), steps=SOURCE_STEPS, lr=3e-3, seed=seed)
    save(model, shop.tokenizers[tokenizer], out)


def fine_tune(source: str, corpus: str, seed: int, shop: Workshop, out: Path) -> None:
    model, tokenizer = shop.load(source)
    save(train(model, shop.ids_for(source, corpus), steps=TUNE_STEPS, lr=5e-4, seed=seed), tokenizer, out)


def extend_vocabulary(source: str, corpus: str, n_tokens: int, seed: int, shop: Workshop, out: Path) -> None:
    """Add the ``corpus``'s most frequent words the source's tokenizer lacks as whole tokens, append their
    embedding rows (transformers' resize, initialised at the mean row), then fine-tune on ``corpus``."""
    from collections import Counter

    model, tokenizer = shop.load(source)
    vocabulary = tokenizer.get_vocab()
    words = Counter(re.findall(r"[A-Za-z_]{4,}", shop.texts[corpus]))
    new = [word for word, _ in words.most_common() if f"Ġ{word}" not in vocabulary and word not in vocabulary]
    tokenizer.add_tokens(new[:n_tokens])
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    ids = torch.tensor(tokenizer(shop.texts[corpus])["input_ids"])
    save(train(model, ids, steps=TUNE_STEPS, lr=5e-4, seed=seed), tokenizer, out)


def lora_adapter(source: str, corpus: str, seed: int, shop: Workshop, out: Path) -> None:
    """A LoRA adapter (r=8, every linear layer) trained with peft; its config names the source folder as base."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = shop.load(source)
    arch = model.config.model_type
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS[arch],
                        fan_in_fan_out=arch == "gpt2", task_type="CAUSAL_LM")  # fmt: skip
    torch.manual_seed(seed)
    adapted = train(get_peft_model(model, config), shop.ids_for(source, corpus), steps=TUNE_STEPS, lr=2e-3, seed=seed)
    adapted.save_pretrained(out)
    tokenizer.save_pretrained(out)


def lora_merged(adapter: str, shop: Workshop, out: Path) -> None:
    """An adapter merged into its base with peft's ``merge_and_unload``, saved as a plain model."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    adapted = AutoPeftModelForCausalLM.from_pretrained(shop.path(adapter), dtype=torch.float32)
    save(adapted.merge_and_unload(), AutoTokenizer.from_pretrained(shop.path(adapter)), out)


def distill(teacher: str, arch: str, seed: int, shop: Workshop, out: Path) -> None:
    """A fresh ``arch`` student trained only on the teacher's next-token distributions (KL) over its training text."""
    teacher_model, tokenizer = shop.load(teacher)
    student = new_model(arch, seed)
    ids = shop.ids_for(teacher, tokenizer_of(teacher))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3, weight_decay=0.01)
    student.train()
    for _ in range(SOURCE_STEPS):
        starts = torch.randint(0, len(ids) - CONTEXT - 1, (16,), generator=generator)
        batch = torch.stack([ids[s : s + CONTEXT] for s in starts])
        with torch.no_grad():
            target = torch.log_softmax(teacher_model(input_ids=batch).logits, dim=-1).flatten(0, 1)
        predicted = torch.log_softmax(student(input_ids=batch).logits, dim=-1).flatten(0, 1)
        loss = torch.nn.functional.kl_div(predicted, target, log_target=True, reduction="batchmean")
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
    save(student.eval(), tokenizer, out)


# ---- weight edits ----------------------------------------------------------------------------------------------


def linear_layers(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The transformer blocks' linear maps (nn.Linear, GPT-2's Conv1D); not the (tied) embeddings or LM head."""
    from transformers.pytorch_utils import Conv1D

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear | Conv1D) and not name.endswith("lm_head"):
            yield module


def magnitude_prune(source: str, amount: float, shop: Workshop, out: Path) -> None:
    """Zero the smallest ``amount`` of each linear weight by magnitude (torch.nn.utils.prune, L1 unstructured)."""
    from torch.nn.utils import prune

    model, tokenizer = shop.load(source)
    for module in linear_layers(model):
        prune.l1_unstructured(module, "weight", amount=amount)
        prune.remove(module, "weight")
    save(model, tokenizer, out)


def quantize_dequantize(source: str, bits: int, group_size: int | None, shop: Workshop, out: Path) -> None:
    """Symmetric absmax round trip of each linear weight, per output channel or per group of ``group_size``
    inputs (int8 per channel as LLM.int8's weights; 4-bit in groups of 32 as GGUF's Q4_0 and GPTQ's g32)."""
    from transformers.pytorch_utils import Conv1D

    model, tokenizer = shop.load(source)
    levels = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for module in linear_layers(model):
            weight = module.weight.T if isinstance(module, Conv1D) else module.weight  # as (out, in)
            groups = weight.reshape(weight.shape[0], -1, group_size or weight.shape[1])
            scale = groups.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / levels
            weight.copy_((torch.round(groups / scale).clamp(-levels - 1, levels) * scale).reshape(weight.shape))
    save(model, tokenizer, out)


# Axes of each tensor that index the residual stream ("d") or one block's MLP channels ("f"), by tensor name.
# Reindexing these consistently (norms with the stream) leaves the function unchanged.
_AXES = {
    "llama": (
        (r"(embed_tokens|lm_head)\.weight$", (None, "d")),
        (r"(layernorm|model\.norm)\.weight$", ("d",)),
        (r"self_attn\.[qkv]_proj\.weight$", (None, "d")),
        (r"self_attn\.o_proj\.weight$", ("d", None)),
        (r"mlp\.(gate|up)_proj\.weight$", ("f", "d")),
        (r"mlp\.down_proj\.weight$", ("d", "f")),
    ),
    "gpt2": (  # Conv1D weights are (in, out)
        (r"(wte|wpe|lm_head)\.weight$", (None, "d")),
        (r"ln_(1|2|f)\.(weight|bias)$", ("d",)),
        (r"attn\.c_attn\.weight$", ("d", None)),
        (r"attn\.c_proj\.weight$", (None, "d")),
        (r"(attn|mlp)\.c_proj\.bias$", ("d",)),
        (r"mlp\.c_fc\.weight$", ("d", "f")),
        (r"mlp\.c_fc\.bias$", ("f",)),
        (r"mlp\.c_proj\.weight$", ("f", "d")),
    ),
}
_AXES["qwen2"] = _AXES["llama"]
_BLOCK = re.compile(r"\.(?:layers|h)\.(\d+)\.")
# Norm -> its parameters, the weights that read its output, and their input axis: scaling the norm's output by c
# and its readers' inputs by 1/c is a no-op.
_NORM_READERS = {
    "llama": (("input_layernorm", ("weight",), ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), 1),
              ("post_attention_layernorm", ("weight",), ("mlp.gate_proj", "mlp.up_proj"), 1)),
    "gpt2": (("ln_1", ("weight", "bias"), ("attn.c_attn",), 0), ("ln_2", ("weight", "bias"), ("mlp.c_fc",), 0)),
}  # fmt: skip
_NORM_READERS["qwen2"] = _NORM_READERS["llama"]


def reindex(
    state: dict[str, torch.Tensor], arch: str, stream: torch.Tensor, channels: dict[int, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Select ``stream`` along every residual axis and ``channels[block]`` along every MLP-channel axis."""
    result = {}
    for name, tensor in state.items():
        roles = next((axes for pattern, axes in _AXES[arch] if re.search(pattern, name)), ())
        block = _BLOCK.search(name)
        for axis, role in enumerate(roles):
            if role == "d":
                tensor = tensor.index_select(axis, stream)
            elif role == "f" and block:
                tensor = tensor.index_select(axis, channels[int(block.group(1))])
        result[name] = tensor.contiguous()
    return result


def rescale(state: dict[str, torch.Tensor], arch: str, generator: torch.Generator) -> None:
    """In place: scale each block's norms by c and their readers' inputs by 1/c; Llama-style MLPs also scale
    up-projection rows by c and down-projection columns by 1/c (SwiGLU is linear in the up branch)."""
    stems = sorted({name[: found.end()] for name in state if (found := _BLOCK.search(name))})
    for stem in stems:
        for norm, parameters, readers, axis in _NORM_READERS[arch]:
            scale = torch.empty(state[f"{stem}{norm}.weight"].shape[0]).uniform_(0.5, 2.0, generator=generator)
            for parameter in parameters:
                state[f"{stem}{norm}.{parameter}"] = state[f"{stem}{norm}.{parameter}"] * scale
            for reader in readers:
                shape = (-1, 1) if axis == 0 else (1, -1)
                state[f"{stem}{reader}.weight"] = state[f"{stem}{reader}.weight"] / scale.reshape(shape)
        if arch != "gpt2":
            up, down = f"{stem}mlp.up_proj.weight", f"{stem}mlp.down_proj.weight"
            scale = torch.empty(state[up].shape[0]).uniform_(0.5, 2.0, generator=generator)
            state[up], state[down] = state[up] * scale[:, None], state[down] / scale


def permute_and_rescale(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A function-preserving reparametrization: random permutations of the residual stream and of each block's
    MLP channels, then the rescalings of ``rescale``. Logits are unchanged up to float rounding."""
    arch = model.config.model_type
    generator = torch.Generator().manual_seed(seed)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    width = model.config.hidden_size
    n_channels = _mlp_width(model.config)
    channels = {b: torch.randperm(n_channels, generator=generator) for b in range(model.config.num_hidden_layers)}
    state = reindex(state, arch, torch.randperm(width, generator=generator), channels)
    rescale(state, arch, generator)
    result = copy.deepcopy(model)
    result.load_state_dict(state)
    return result


def _mlp_width(config: Any) -> int:
    return (config.n_inner or 4 * config.n_embd) if config.model_type == "gpt2" else config.intermediate_size


def permuted(source: str, seed: int, shop: Workshop, out: Path) -> None:
    model, tokenizer = shop.load(source)
    save(permute_and_rescale(model, seed), tokenizer, out)


def prune_mlp_channels(source: str, keep: float, shop: Workshop, out: Path) -> None:
    """Structured pruning: keep the ``keep`` fraction of each block's MLP channels with the largest
    output-weight norm (the channels that write most to the stream), and shrink the config to match."""
    from transformers import AutoModelForCausalLM

    model, tokenizer = shop.load(source)
    arch, config = model.config.model_type, copy.deepcopy(model.config)
    state = model.state_dict()
    n_keep = int(_mlp_width(config) * keep)
    channels = {}
    for name, tensor in state.items():
        if re.search(r"mlp\.(down_proj|c_proj)\.weight$", name):
            norms = tensor.norm(dim=0 if arch != "gpt2" else 1)
            channels[int(_BLOCK.search(name).group(1))] = norms.topk(n_keep).indices.sort().values  # type: ignore[union-attr]
    setattr(config, "n_inner" if arch == "gpt2" else "intermediate_size", n_keep)
    smaller = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    smaller.load_state_dict(reindex(state, arch, torch.arange(config.hidden_size), channels))
    save(smaller, tokenizer, out)


def drop_block(source: str, block: int, shop: Workshop, out: Path) -> None:
    """Structured pruning: remove one transformer block (as ShortGPT / Sheared-LLaMA-style layer pruning)."""
    from transformers import AutoModelForCausalLM

    model, tokenizer = shop.load(source)
    config = copy.deepcopy(model.config)
    state = {}
    for name, tensor in model.state_dict().items():
        found = _BLOCK.search(name)
        index = int(found.group(1)) if found else None
        if index == block:
            continue
        if index is not None and index > block:
            name = name[: found.start(1)] + str(index - 1) + name[found.end(1) :]  # type: ignore[union-attr]
        state[name] = tensor
    config.num_hidden_layers -= 1
    if getattr(config, "layer_types", None):
        config.layer_types = [t for i, t in enumerate(config.layer_types) if i != block]
    smaller = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    smaller.load_state_dict(state)
    save(smaller, tokenizer, out)


# ---- rotations of the residual stream ----------------------------------------------------------------------------
# What SliceGPT, QuaRot and SpinQuant do before slicing or quantizing: fold each norm's gain (and bias) into the
# weights that read its output, then multiply the residual stream by an orthogonal matrix Q. Every norm left has
# unit gain, so it commutes with Q (RMSNorm keeps the length; LayerNorm also needs a stream with zero mean and a Q
# that keeps the all-ones direction), and the logits are unchanged.

# Per architecture: (norm, parameters, the weights that read its output) for each block, and the weights that
# write to the stream. Llama/Qwen2 weights are (out, in); GPT-2's Conv1D weights are (in, out).
_READERS = {
    "llama": (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
              ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"))),
    "gpt2": (("ln_1", ("attn.c_attn",)), ("ln_2", ("mlp.c_fc",))),
}  # fmt: skip
_READERS["qwen2"] = _READERS["llama"]
_WRITERS = {"llama": ("self_attn.o_proj", "mlp.down_proj"), "gpt2": ("attn.c_proj", "mlp.c_proj")}
_WRITERS["qwen2"] = _WRITERS["llama"]


def random_rotation(width: int, seed: int, *, keep_mean: bool) -> torch.Tensor:
    """A random orthogonal ``width × width`` matrix (Haar, float64); with ``keep_mean`` it maps the all-ones
    vector to itself (a rotation of the zero-mean subspace, which a LayerNorm model needs)."""
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(width, width, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if not keep_mean:
        return q
    ones = torch.full((width, 1), width**-0.5, dtype=torch.float64)
    basis = torch.linalg.qr(torch.cat([ones, q[:, 1:]], dim=1))[0][:, 1:]  # orthonormal basis of ones' complement
    inner = random_rotation(width - 1, seed + 1, keep_mean=False)
    return basis @ inner @ basis.T + ones @ ones.T


def hadamard_rotation(width: int, *, keep_mean: bool) -> torch.Tensor:
    """The normalized Sylvester-Hadamard matrix (QuaRot's choice; width a power of two). ``keep_mean`` composes it
    with the reflection that swaps the all-ones direction and the first axis, which Hadamard maps back."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < width:
        h = torch.cat([torch.cat([h, h], dim=1), torch.cat([h, -h], dim=1)], dim=0)
    if h.shape[0] != width:
        raise ValueError(f"no Hadamard matrix of width {width}")
    h = h / width**0.5
    if not keep_mean:
        return h
    v = torch.full((width,), width**-0.5, dtype=torch.float64)
    v[0] -= 1.0
    return h @ (torch.eye(width, dtype=torch.float64) - 2 * torch.outer(v, v) / (v @ v))


def rotate_residual(model: torch.nn.Module, rotation: torch.Tensor) -> torch.nn.Module:
    """The same function with its residual stream multiplied by ``rotation`` (module comment above). The
    embedding and the LM head come apart (a tied head would need the final norm's gain in the embedding)."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    arch = config.model_type
    gpt2 = arch == "gpt2"
    state = {name: tensor.detach().to(torch.float64).clone() for name, tensor in model.state_dict().items()}
    prefix = "transformer." if gpt2 else "model."
    blocks = f"{prefix}h" if gpt2 else f"{prefix}layers"
    if gpt2:  # a zero-mean stream, so that LayerNorm's centring does nothing and the rotation commutes with it
        for name in (f"{prefix}wte.weight", f"{prefix}wpe.weight"):
            state[name] -= state[name].mean(dim=1, keepdim=True)
    for block in range(config.num_hidden_layers):
        stem = f"{blocks}.{block}."
        for norm, readers in _READERS[arch]:
            gain = state[f"{stem}{norm}.weight"]
            shift = state.pop(f"{stem}{norm}.bias", None)
            for reader in readers:
                weight = state[f"{stem}{reader}.weight"]
                if gpt2:
                    state[f"{stem}{reader}.bias"] += shift @ weight
                    state[f"{stem}{reader}.weight"] = rotation.T @ (gain[:, None] * weight)
                else:
                    state[f"{stem}{reader}.weight"] = (weight * gain) @ rotation
            state[f"{stem}{norm}.weight"] = torch.ones_like(gain)
            if shift is not None:
                state[f"{stem}{norm}.bias"] = torch.zeros_like(shift)
        for writer in _WRITERS[arch]:
            weight = state[f"{stem}{writer}.weight"]
            if gpt2:
                weight = weight - weight.mean(dim=1, keepdim=True)
                bias = state[f"{stem}{writer}.bias"]
                state[f"{stem}{writer}.bias"] = (bias - bias.mean()) @ rotation
                state[f"{stem}{writer}.weight"] = weight @ rotation
            else:
                state[f"{stem}{writer}.weight"] = rotation.T @ weight
    final = f"{prefix}ln_f" if gpt2 else f"{prefix}norm"
    gain = state[f"{final}.weight"]
    state["lm_head.weight"] = (state["lm_head.weight"] * gain) @ rotation
    state[f"{final}.weight"] = torch.ones_like(gain)
    if gpt2:  # the final LayerNorm keeps a bias: the old one, moved behind the folded gain and rotated
        state[f"{final}.bias"] = (state[f"{final}.bias"] / gain) @ rotation
    for name in (f"{prefix}wte.weight", f"{prefix}wpe.weight") if gpt2 else (f"{prefix}embed_tokens.weight",):
        state[name] = state[name] @ rotation
    config.tie_word_embeddings = False
    rotated = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    rotated.load_state_dict({name: tensor.to(torch.float32) for name, tensor in state.items()})
    return rotated.eval()


def rotated(source: str, how: str, seed: int, shop: Workshop, out: Path) -> None:
    """``source`` with its residual stream rotated (``how``: "random" orthogonal or "hadamard")."""
    model, tokenizer = shop.load(source)
    width, keep_mean = model.config.hidden_size, model.config.model_type == "gpt2"
    rotation = (
        random_rotation(width, seed, keep_mean=keep_mean)
        if how == "random"
        else hadamard_rotation(width, keep_mean=keep_mean)
    )
    save(rotate_residual(model, rotation), tokenizer, out)


# ---- GGUF ------------------------------------------------------------------------------------------------------


def gguf_round_trip(source: str, qtype_name: str, shop: Workshop, out: Path) -> None:
    """Write a Llama source as a llama.cpp GGUF file, its 2-D weights quantized to ``qtype_name`` (Q8_0, Q4_0)
    with the gguf package; the fingerprint then reads it back through transformers' GGUF loader."""
    import gguf

    model, _ = shop.load(source)
    config = model.config
    arch = gguf.MODEL_ARCH.LLAMA
    writer = gguf.GGUFWriter(out / "model.gguf", gguf.MODEL_ARCH_NAMES[arch])
    head_dim = config.hidden_size // config.num_attention_heads
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(head_dim)
    add_bpe_tokenizer(writer, shop.path(source))
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # a GGUF without output.weight is read back as tied
        array = tensor.numpy().astype(np.float32)
        projection = name.split(".")[-2]
        if projection in heads:  # llama.cpp's rotary layout, which transformers undoes when reading
            n = heads[projection]
            array = array.reshape(n, 2, head_dim // 2, -1).swapaxes(1, 2).reshape(array.shape)
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        add_tensor(writer, gguf_name, array, qtype_name if array.ndim == 2 else "F32")
    write_out(writer)


# ---- merges ----------------------------------------------------------------------------------------------------


def mergekit(
    method: str, models: tuple[str, str], base: str | None, weights: tuple[float, float], shop: Workshop, out: Path
) -> None:
    """Merge two models with mergekit's ``mergekit-yaml`` (its own virtualenv); density 0.5 for TIES and DARE;
    slerp goes ``weights[1]`` of the way from the first model to the second."""
    if not MERGEKIT_YAML.is_file():
        raise FileNotFoundError(f"{MERGEKIT_YAML} is missing; set it up with: {MERGEKIT_SETUP}")
    density = {"density": 0.5} if method in ("ties", "dare_ties") else {}
    config: dict[str, Any] = {"merge_method": method, "dtype": "float32"}
    if method == "slerp":
        config |= {"base_model": str(shop.path(models[0])), "parameters": {"t": weights[1]}}
        config["models"] = [{"model": str(shop.path(m))} for m in models]
    else:
        config["models"] = [
            {"model": str(shop.path(m)), "parameters": {"weight": w} | density}
            for m, w in zip(models, weights, strict=True)
        ]
        if base:
            config["base_model"] = str(shop.path(base))
    spec = out.parent / f"{out.name}.yaml"
    spec.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [str(MERGEKIT_YAML), str(spec), str(out), "--random-seed", "0", "--copy-tokenizer", "--quiet"]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    spec.unlink()


# ---- the zoo ---------------------------------------------------------------------------------------------------


# Models trained from scratch: name, kind, architecture, tokenizer, corpus, seed, what sets it apart.
TRAINED = (
    ("gpt2-prose", "source", "gpt2", "prose", "prose", 11, ""),
    ("llama-code", "source", "llama", "code", "code", 12, ""),
    ("llama-code-b", "source", "llama", "code", "code", 13, "llama-code's twin, other seed"),
    ("qwen2-prose", "source", "qwen2", "prose", "prose", 14, ""),
    ("neg-gpt2-prose-seed21", "negative", "gpt2", "prose", "prose", 21, "gpt2-prose's twin, other seed"),
    ("neg-gpt2-prose-on-code", "negative", "gpt2", "prose", "code", 22, "other data than gpt2-prose"),
    ("neg-gpt2-code-on-prose", "negative", "gpt2", "code", "prose", 23, "other tokenizer than gpt2-prose"),
    ("neg-llama-code-seed24", "negative", "llama", "code", "code", 24, "llama-code's twin, other seed"),
    ("neg-llama-code-on-prose", "negative", "llama", "code", "prose", 25, "other data than llama-code"),
    ("neg-llama-prose-on-code", "negative", "llama", "prose", "code", 26, "other tokenizer than llama-code"),
    ("neg-qwen2-prose-seed27", "negative", "qwen2", "prose", "prose", 27, "qwen2-prose's twin, other seed"),
    ("neg-qwen2-prose-on-code", "negative", "qwen2", "prose", "code", 28, "other data than qwen2-prose"),
    ("neg-qwen2-code-on-prose", "negative", "qwen2", "code", "prose", 29, "other tokenizer than qwen2-prose"),
    ("neg-llama-prose", "negative", "llama", "prose", "prose", 30, "other architecture than gpt2-/qwen2-prose"),
    ("neg-qwen2-code", "negative", "qwen2", "code", "code", 31, "other architecture than llama-code"),
    ("neg-gpt2-prose-same-init", "negative", "gpt2", "prose", "code", 11,
     "gpt2-prose's initialisation (same config and seed), trained on code"),
    ("neg-llama-code-same-init", "negative", "llama", "code", "prose", 12,
     "llama-code's initialisation (same config and seed), trained on prose"),
)  # fmt: skip
MERGE_METHODS = ("linear", "task_arithmetic", "ties", "dare_ties", "slerp")
BASED_MERGES = ("task_arithmetic", "ties", "dare_ties")  # the methods that work on deltas from a base model


def recipes() -> list[Recipe]:
    """Every member to build, in dependency order."""
    plan = [
        Recipe(name, kind, f"{arch}, {tokenizer} tokenizer, trained on {corpus}" + (f" ({why})" if why else ""),
               partial(from_scratch, arch, tokenizer, corpus, seed))
        for name, kind, arch, tokenizer, corpus, seed, why in TRAINED
    ]  # fmt: skip
    plan += _derivatives("gpt2-prose", other_corpus="code", seed=100)
    plan += _derivatives("llama-code", other_corpus="prose", seed=200, gguf=True)
    plan += _derivatives("qwen2-prose", other_corpus="code", seed=300)
    plan += _rotations("gpt2-prose", other_corpus="code", seed=500)
    plan += _rotations("llama-code", other_corpus="prose", seed=600)
    plan += _rotations("qwen2-prose", other_corpus="code", seed=700)
    plan += _fine_tune_merges("gpt2-prose", other_corpus="code", seed=100)
    plan += _fine_tune_merges("llama-code", other_corpus="prose", seed=200)
    a, b = "llama-code", "llama-code-b"
    plan += [
        Recipe(f"{b}--ft-prose", "positive", "full fine-tune on prose", partial(fine_tune, b, "prose", 401), (b,)),
        Recipe(f"{b}--int4", "positive", "4-bit absmax round trip, groups of 32",
               partial(quantize_dequantize, b, 4, 32), (b,)),
    ]  # fmt: skip
    unrelated_merges = (
        (f"merge-linear-{a}-and-b", "linear", (0.5, 0.5)),
        (f"merge-slerp-{a}-and-b", "slerp", (0.5, 0.5)),
        (f"merge-linear-70-30-{a}-and-b", "linear", (0.7, 0.3)),
    )
    for name, method, weights in unrelated_merges:
        how = f"mergekit {method} of two unrelated sources, {weights[0]:g} / {weights[1]:g}"
        plan.append(Recipe(name, "positive", how, partial(mergekit, method, (a, b), None, weights), (a, b)))
    outside = (("gpt2-prose", "neg-gpt2-prose-seed21"), ("llama-code", "neg-llama-code-seed24"),
               ("qwen2-prose", "neg-qwen2-prose-seed27"))  # fmt: skip
    for source, stranger in outside:
        for share in (0.5, 0.7):
            how = f"mergekit linear, {share:g} of it and {1 - share:g} of {stranger} (not in the registry)"
            make = partial(mergekit, "linear", (source, stranger), None, (share, 1 - share))
            plan.append(Recipe(f"{source}--merge-outside-{round(100 * share)}", "positive", how, make, (source,)))
    plan += [
        Recipe("distill-gpt2-prose", "distilled", "fresh GPT-2 trained on gpt2-prose's logits (KL)",
               partial(distill, "gpt2-prose", "gpt2", 32), ("gpt2-prose",)),
        Recipe("distill-llama-code-qwen2", "distilled", "fresh Qwen2 trained on llama-code's logits (KL)",
               partial(distill, a, "qwen2", 33), (a,)),
    ]  # fmt: skip
    return plan


def _fine_tune_merges(source: str, *, other_corpus: str, seed: int) -> list[Recipe]:
    """A second fine-tune (on the help topics), and mergekit merges of it with the first by every method."""
    tuned = (f"{source}--ft-{other_corpus}", f"{source}--ft-docs")
    plan = [Recipe(tuned[1], "positive", "full fine-tune on help topics", partial(fine_tune, source, "docs", seed + 3),
                   (source,))]  # fmt: skip
    for method in MERGE_METHODS:
        how = f"mergekit {method} of its {other_corpus} and docs fine-tunes"
        make = partial(mergekit, method, tuned, source if method in BASED_MERGES else None, (0.5, 0.5))
        plan.append(Recipe(f"{source}--merge-{method}", "positive", how, make, (source,)))
    return plan


def _rotations(source: str, *, other_corpus: str, seed: int) -> list[Recipe]:
    """Residual-stream rotations (random orthogonal and Hadamard), a rotation then fine-tuned, a rotation then
    quantized to 4 bits, and a vocabulary extension (new tokens' rows appended, then fine-tuned)."""
    rotated_name = f"{source}--rot-random"
    return [
        Recipe(rotated_name, "positive", "residual stream rotated by a random orthogonal matrix, norms folded",
               partial(rotated, source, "random", seed), (source,)),
        Recipe(f"{source}--rot-hadamard", "positive", "residual stream rotated by a Hadamard matrix, norms folded",
               partial(rotated, source, "hadamard", seed), (source,)),
        Recipe(f"{rotated_name}--ft-{other_corpus}", "positive", f"randomly rotated, then fine-tuned on {other_corpus}",
               partial(fine_tune, rotated_name, other_corpus, seed + 1), (source,)),
        Recipe(f"{rotated_name}--int4", "positive", "randomly rotated, then 4-bit absmax round trip, groups of 32",
               partial(quantize_dequantize, rotated_name, 4, 32), (source,)),
        Recipe(f"{source}--vocab-ext", "positive", f"64 {other_corpus} words added as tokens, then fine-tuned",
               partial(extend_vocabulary, source, other_corpus, 64, seed + 2), (source,)),
    ]  # fmt: skip


def _derivatives(source: str, *, other_corpus: str, seed: int, gguf: bool = False) -> list[Recipe]:
    """The derivatives every source gets (plus GGUF files for a Llama source)."""
    made = [
        (f"ft-{other_corpus}", f"full fine-tune on {other_corpus}", partial(fine_tune, source, other_corpus, seed)),
        ("lora", f"peft LoRA adapter (r=8) trained on {other_corpus}, unmerged",
         partial(lora_adapter, source, other_corpus, seed + 1)),
        ("lora-merged", "that LoRA adapter merged into the weights", partial(lora_merged, f"{source}--lora")),
        ("prune50", "50% magnitude pruning of each linear weight", partial(magnitude_prune, source, 0.5)),
        ("drop-block2", "structured: third of four blocks removed", partial(drop_block, source, 2)),
        ("prune-mlp50", "structured: half the MLP channels removed", partial(prune_mlp_channels, source, 0.5)),
        ("int8", "int8 absmax round trip, per channel", partial(quantize_dequantize, source, 8, None)),
        ("int4", "4-bit absmax round trip, groups of 32", partial(quantize_dequantize, source, 4, 32)),
        ("permuted", "hidden units permuted and rescaled (same function)", partial(permuted, source, seed + 2)),
    ]  # fmt: skip
    recipes = [Recipe(f"{source}--{suffix}", "positive", how, make, (source,)) for suffix, how, make in made]
    if gguf:
        recipes += [
            Recipe(f"{source}--gguf-{q.lower()}", "positive", f"GGUF file, weights in {q}",
                   partial(gguf_round_trip, source, q), (source,), artifact="model.gguf")
            for q in ("Q8_0", "Q4_0")
        ]  # fmt: skip
    return recipes


def demo_references() -> list[Member]:
    """The demo's independently trained models (demo/models/, committed), reused as registry references."""
    names = ("ref-gpt2-code", "ref-gpt2-code-b", "ref-llama-code", "ref-llama-prose", "ref-qwen2-code",
             "ref-qwen2-prose", "source", "unrelated")  # fmt: skip
    return [Member(f"demo-{n}", "reference", "demo model, independent seed", (), DEMO_MODELS / n) for n in names]


def build_zoo(folder: Path = ZOO_DIR) -> list[Member]:
    """Build whatever is missing and return every member, references included."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    shop = Workshop(folder)
    members = []
    for recipe in recipes():
        final = folder / recipe.name
        if not final.is_dir():
            _build(recipe, shop, final)
        path = final / recipe.artifact if recipe.artifact else final
        members.append(Member(recipe.name, recipe.kind, recipe.how, recipe.sources, path))
    return members + demo_references()


def _build(recipe: Recipe, shop: Workshop, final: Path) -> None:
    """Make one member in a hidden scratch folder and rename it into place when complete (so an interrupted
    build never leaves a half-written model that a rerun would keep); record how long it took."""
    started = time.perf_counter()
    scratch = final.with_name(f".{final.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    recipe.make(shop, scratch)
    scratch.rename(final)
    seconds = build_seconds(final.parent) | {recipe.name: round(time.perf_counter() - started, 1)}
    (final.parent / BUILD_TIMES).write_text(json.dumps(seconds, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    logger.info("built %s in %.0f s", recipe.name, seconds[recipe.name])


def build_seconds(folder: Path = ZOO_DIR) -> dict[str, float]:
    """How long each member took to build, as recorded when it was built (one thread, on this machine)."""
    times_file = folder / BUILD_TIMES
    return json.loads(times_file.read_text(encoding="utf-8")) if times_file.is_file() else {}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    members = build_zoo()
    logger.info("zoo: %d members in %s, %.0f s", len(members), ZOO_DIR, time.perf_counter() - started)


if __name__ == "__main__":
    main()

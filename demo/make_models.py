"""Build the small demo models committed under demo/models/ (run: .venv/bin/python demo/make_models.py).

Everything is made here, offline and seeded: two text corpora from this Python's standard library (English
docstrings, and Python source), a byte-level BPE tokenizer trained on each, and tiny causal LMs (4 blocks,
width 64) trained for a few hundred steps on one core. The models:

    source              GPT-2, prose tokenizer, trained on prose            (the demo's registered source)
    finetune            source fine-tuned on code                           (a derivative: should be "derived")
    unrelated           Llama, code tokenizer, trained on code              (other architecture, other data)
    ref-gpt2-code       GPT-2, code tokenizer, trained on code, own seed    (registry reference: calibrates nulls)
    ref-qwen2-code      Qwen2, code tokenizer, trained on code              (registry reference)
    ref-llama-prose     Llama, prose tokenizer, trained on prose            (registry reference)
    ref-gpt2-code-b     GPT-2, code tokenizer, trained on code, another seed (registry reference)
    ref-llama-code      Llama, code tokenizer, trained on code              (registry reference)
    ref-qwen2-prose     Qwen2, prose tokenizer, trained on prose            (registry reference)

Models already in demo/models/ are kept; delete a folder to build it again.
"""

from __future__ import annotations

import importlib
import inspect
import shutil
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

OUT = Path(__file__).parent / "models"
VOCAB = 512
WIDTH = 64
BLOCKS = 4
CONTEXT = 64
PROSE_MODULES = ("collections", "functools", "itertools", "pathlib", "json", "argparse", "logging", "typing",
                 "dataclasses", "textwrap", "string", "re", "os", "shutil", "subprocess", "threading", "asyncio",
                 "email", "http.client", "urllib.request", "datetime", "calendar", "decimal", "fractions",
                 "statistics", "random", "heapq", "bisect", "csv", "sqlite3", "zipfile", "tarfile")  # fmt: skip
CODE_MODULES = ("collections", "functools", "pathlib", "json.decoder", "argparse", "textwrap", "string",
                "dataclasses", "heapq", "bisect", "csv", "calendar", "fractions", "statistics", "shutil",
                "tarfile", "zipfile", "ast", "difflib", "pprint", "tokenize", "enum", "inspect")  # fmt: skip


def prose_corpus() -> str:
    """English: docstrings of standard-library modules and their public members."""
    parts = []
    for name in PROSE_MODULES:
        module = importlib.import_module(name)
        parts.append(inspect.getdoc(module) or "")
        for attr in sorted(dir(module)):
            if not attr.startswith("_"):
                parts.append(inspect.getdoc(getattr(module, attr)) or "")
    return "\n\n".join(dict.fromkeys(p for p in parts if len(p) > 40))


def code_corpus() -> str:
    """Python source of standard-library modules."""
    return "\n\n".join(inspect.getsource(importlib.import_module(name)) for name in CODE_MODULES)


def train_tokenizer(text: str) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(text.split("\n\n"), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def new_model(kind: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "gpt2":
        return GPT2LMHeadModel(
            GPT2Config(
                vocab_size=VOCAB,
                n_positions=512,
                n_embd=WIDTH,
                n_layer=BLOCKS,
                n_head=4,
                bos_token_id=0,
                eos_token_id=0,
            )
        )
    common = {"vocab_size": VOCAB, "hidden_size": WIDTH, "intermediate_size": 4 * WIDTH,
              "num_hidden_layers": BLOCKS, "num_attention_heads": 4, "num_key_value_heads": 4,
              "max_position_embeddings": 512, "tie_word_embeddings": True,
              "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}  # fmt: skip
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    return Qwen2ForCausalLM(Qwen2Config(**common))


def train(model: torch.nn.Module, ids: torch.Tensor, *, steps: int, lr: float, seed: int) -> torch.nn.Module:
    """Next-token training on random windows of ``ids``."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(ids) - CONTEXT - 1, (16,), generator=generator)
        batch = torch.stack([ids[s : s + CONTEXT] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  step {step:4d} loss {loss.item():.3f}", file=sys.stderr)  # noqa: T201 (a build script)
    return model.eval()


def save(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, name: str) -> None:
    folder = OUT / name
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    print(f"saved {folder}", file=sys.stderr)  # noqa: T201 (a build script)


def main() -> None:
    torch.set_num_threads(1)  # one thread: the same bytes on every run of this script on one machine
    prose, code = prose_corpus(), code_corpus()
    prose_tok, code_tok = train_tokenizer(prose), train_tokenizer(code)
    tokenizers = {"prose": prose_tok, "code": code_tok}
    texts = {"prose": prose, "code": code}

    def ids(corpus: str, tokenizer: str) -> torch.Tensor:
        return torch.tensor(tokenizers[tokenizer](texts[corpus])["input_ids"])

    if not all((OUT / name).is_dir() for name in ("source", "finetune")):
        source = train(new_model("gpt2", 0), ids("prose", "prose"), steps=600, lr=3e-3, seed=0)
        save(source, prose_tok, "source")
        finetune = train(source, ids("code", "prose"), steps=200, lr=5e-4, seed=10)
        save(finetune, prose_tok, "finetune")
    # (name, architecture, corpus = its tokenizer's corpus, seed)
    plans = [
        ("unrelated", "llama", "code", 1),
        ("ref-gpt2-code", "gpt2", "code", 2),
        ("ref-qwen2-code", "qwen2", "code", 3),
        ("ref-llama-prose", "llama", "prose", 4),
        ("ref-gpt2-code-b", "gpt2", "code", 5),
        ("ref-llama-code", "llama", "code", 6),
        ("ref-qwen2-prose", "qwen2", "prose", 7),
    ]
    for name, kind, corpus, seed in plans:
        if (OUT / name).is_dir():
            continue
        model = train(new_model(kind, seed), ids(corpus, corpus), steps=600, lr=3e-3, seed=seed)
        save(model, tokenizers[corpus], name)


if __name__ == "__main__":
    main()

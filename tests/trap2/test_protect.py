"""``protect``: files written, training summaries, and bad input (empty data, non-finite losses) failing cleanly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bot.cli import main
from bot.errors import TrainingError
from bot.reef import load_model
from bot.trap2.config import ProtectConfig
from bot.trap2.data import TokenData, prepare
from bot.trap2.scaling import lora_scaled, mean_loss
from bot.trap2.training import (
    TRAP_PROBE_SCALES,
    CheckpointSelection,
    ProtectRun,
    TrainingSummary,
    train_update,
    trainable_model,
)
from tests.trap2.conftest import DEMO_BASE, FAST


def test_protect_writes_a_loadable_adapter_and_its_twin(lora_run: ProtectRun, base: Path) -> None:
    for folder, lam in ((lora_run.protected, FAST.lam), (lora_run.twin, 0.0)):
        assert folder is not None
        assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "trap2.json"} <= {
            p.name for p in folder.iterdir()
        }
        metadata = json.loads((folder / "trap2.json").read_text(encoding="utf-8"))
        assert metadata["config"]["lam"] == lam and metadata["authorised_scale"] == 1.0
        assert metadata["base_sha256"] == dict(load_model(base).weight_sha256)
        load_model(folder, base=base, with_lm_head=True)  # a usable checkpoint
    summary = lora_run.protected_summary
    assert summary.skipped_steps == 0 and summary.steps_run <= FAST.steps
    assert math.isfinite(summary.best_val_loss) and summary.best_val_loss <= summary.initial_val_loss
    assert lora_run.twin_summary is not None and lora_run.twin_summary.lam == 0.0


def test_protect_cli_full_form(base: Path, code_text: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--form", "full", "--steps", "4", "--eval-every", "2", "--batch-size", "2", "--context", "16"]
    code = main(["protect", str(base), "--data", str(code_text), "--out", str(tmp_path), *flags, "--no-twin", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and set(out) == {"protected"}
    assert (tmp_path / "protected" / "model.safetensors").is_file()
    assert out["protected"]["steps_run"] == 4 and out["protected"]["skipped_steps"] == 0


def test_empty_data_is_a_usage_error(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    code = main(["protect", str(base), "--data", str(empty), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "empty.txt: no text (the data is empty)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_settings_are_usage_errors(base: Path, code_text: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["protect", str(base), "--data", str(code_text), "--out", "x", "--s-min", "0.96", "--s-max", "1.04"])
    assert code == 2 and "no off-nominal scale to sample" in capsys.readouterr().err


def _poison(model: torch.nn.Module, calls: set[int]) -> None:
    """Make the embedding output NaN on the given forward calls (counting training-mode calls only)."""
    count = {"n": 0}

    def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor | None:
        if not module.training:
            return None
        count["n"] += 1
        return output * float("nan") if count["n"] in calls else None

    embedding = model.get_input_embeddings()
    embedding.register_forward_hook(hook)


def test_non_finite_steps_are_skipped_and_counted(base: Path, code_text: Path) -> None:
    loaded = load_model(base, with_lm_head=True)
    data = prepare(loaded.load_tokenizer(), [code_text], context=32, val_fraction=0.1, max_val_windows=8)
    model, _ = trainable_model(loaded.model, FAST)
    # two forward passes per step (nominal, scaled): poison step 3's nominal pass and step 5's scaled pass
    _poison(model, {5, 10})
    summary = train_update(model, data, FAST)
    assert summary.skipped_steps == 2 and summary.steps_run == FAST.steps
    assert math.isfinite(summary.best_val_loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_run_with_no_finite_step_fails_clearly(base: Path, code_text: Path) -> None:
    loaded = load_model(base, with_lm_head=True)
    data = prepare(loaded.load_tokenizer(), [code_text], context=32, val_fraction=0.1, max_val_windows=8)
    model, _ = trainable_model(loaded.model, FAST)
    _poison(model, set(range(1, 1000)))
    with pytest.raises(TrainingError, match=r"12 of 12 steps had a non-finite loss"):
        train_update(model, data, FAST)


# On the trained demo base: the trap forms with margins of tenths of a nat, so the outcome is the same under every
# CPU kernel torch may pick (ATEN_CPU_CAPABILITY=default, avx2, avx512; issue 14), not only on the machine that
# chose the settings. λ, lr and loss cap as bench/trap2_demo.py; 400 steps of 8 × 32 tokens.
TRAPPING = ProtectConfig(form="lora", lam=0.5, lr=5e-3, steps=400, eval_every=20, patience=20, batch_size=8,
                         context=32, max_val_windows=8, lora_r=8, lora_alpha=8, loss_cap=6.0, weight="inv")  # fmt: skip


def _train(
    base: Path, text: Path, config: ProtectConfig, validation: Path | None = None
) -> tuple[torch.nn.Module, TokenData, TrainingSummary]:
    loaded = load_model(base, with_lm_head=True)
    data = prepare(loaded.load_tokenizer(), [text], validation=[validation] if validation else [],
                   context=config.context, val_fraction=0.1, max_val_windows=config.max_val_windows)  # fmt: skip
    model, _ = trainable_model(loaded.model, config)
    return model, data, train_update(model, data, config)


def test_the_kept_checkpoint_beats_the_base_and_loses_to_it_at_every_probe_scale(
    task_text: Path, task_validation: Path
) -> None:
    model, data, summary = _train(DEMO_BASE, task_text, TRAPPING, task_validation)
    assert summary.trap_formed is True and summary.trap_scales == TRAP_PROBE_SCALES
    assert summary.skipped_steps == 0
    # the model holds the kept checkpoint, and the summary's numbers are its numbers
    assert mean_loss(model, data.val) == pytest.approx(summary.best_val_loss, abs=1e-4)
    probe_losses = {s: mean_loss(model, data.val, params=lora_scaled(model, s)) for s in summary.trap_scales}
    assert min(probe_losses.values()) == pytest.approx(summary.trap_floor, abs=1e-4)
    # what a user cares about, with margins far above kernel noise (measured: 4.47 -> 4.26; 4.96 at s = 0.5)
    assert summary.best_val_loss < summary.initial_val_loss - 0.05
    assert all(loss > summary.initial_val_loss for loss in probe_losses.values())
    assert probe_losses[0.5] > summary.initial_val_loss + 0.1


def _checkpoint_rule(evaluations: list[tuple[int, float, float | None]], *, trapping: bool) -> CheckpointSelection:
    rule = CheckpointSelection(initial=4.0, trapping=trapping, patience=2)
    for step, loss, floor in evaluations:
        rule.offer(step, loss, floor=floor if rule.needs_floor(loss) else None, take=lambda: {})
        if rule.should_stop():
            break
    return rule


def test_a_lower_checkpoint_without_the_trap_is_passed_over() -> None:
    # (step, nominal loss, trap floor): step 20 is lowest but loses to the base at a probe scale (3.9 < 4.0)
    evaluations = [(10, 3.8, 4.5), (20, 3.5, 3.9), (30, 3.7, 4.2), (40, 3.75, 4.6), (50, 3.72, 4.6), (60, 3.1, 3.0)]
    rule = _checkpoint_rule(evaluations, trapping=True)
    chosen = rule.chosen()
    assert chosen is not None and (chosen.step, chosen.loss, chosen.trap_floor) == (30, 3.7, 4.2)
    assert rule.trap_formed() and rule.should_stop()  # patience 2 ran out at step 50: step 60 never seen
    # without the trap requirement (the twin), the lowest nominal loss is kept
    twin = _checkpoint_rule(evaluations[:3], trapping=False).chosen()
    assert twin is not None and twin.step == 20


def test_without_a_trap_the_lowest_nominal_checkpoint_is_kept_and_patience_never_starts() -> None:
    rule = _checkpoint_rule([(10, 3.8, 3.9), (20, 3.6, 3.95), (30, 4.1, None), (40, 3.7, 3.8)], trapping=True)
    chosen = rule.chosen()
    assert chosen is not None and chosen.step == 20 and not rule.trap_formed() and not rule.should_stop()


def test_a_trap_that_never_forms_keeps_the_lowest_loss_and_says_so(
    base: Path, code_text: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = ProtectConfig(**{**TRAPPING.to_dict(), "lr": 1e-3, "steps": 4, "eval_every": 2, "target_modules": ()})
    _, _, summary = _train(base, code_text, config)  # the random-init base: 4 steps cannot form a trap
    assert summary.trap_formed is False and summary.steps_run == 4 and not summary.stopped_early
    assert summary.best_val_loss == min(loss for step, loss in summary.history if step > 0)
    assert "the trap did not form in 4 steps" in caplog.text

"""``protect``: files written, training summaries, and bad input (empty data, non-finite losses) failing cleanly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bot.cli import main
from bot.errors import TrainingError
from bot.reef.loading import load_model
from bot.trap2.config import ProtectConfig
from bot.trap2.data import TokenData, prepare
from bot.trap2.scaling import lora_scaled, mean_loss
from bot.trap2.training import TRAP_PROBE_SCALES, ProtectRun, TrainingSummary, train_update, trainable_model
from tests.trap2.conftest import FAST


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


# Seeded runs on the tiny random-init base: the margins are small (its loss barely moves from ln 512), but they are
# the same on every run; bench/trap2_demo.py measures the trap's strength on a trained base.
TRAPPING = ProtectConfig(**{**FAST.to_dict(), "lam": 1.0, "lr": 3e-2, "steps": 40, "eval_every": 10, "weight": "inv",
                            "target_modules": ()})  # fmt: skip


def _train(base: Path, code_text: Path, config: ProtectConfig) -> tuple[torch.nn.Module, TokenData, TrainingSummary]:
    loaded = load_model(base, with_lm_head=True)
    data = prepare(loaded.load_tokenizer(), [code_text], context=32, val_fraction=0.1, max_val_windows=8)
    model, _ = trainable_model(loaded.model, config)
    return model, data, train_update(model, data, config)


def test_the_kept_checkpoint_beats_the_base_and_loses_to_it_at_every_probe_scale(base: Path, code_text: Path) -> None:
    model, data, summary = _train(base, code_text, TRAPPING)
    assert summary.trap_formed is True and summary.trap_scales == TRAP_PROBE_SCALES
    assert mean_loss(model, data.val) == pytest.approx(summary.best_val_loss)
    assert summary.best_val_loss < summary.initial_val_loss
    probe_losses = [mean_loss(model, data.val, params=lora_scaled(model, s)) for s in summary.trap_scales]
    assert min(probe_losses) == pytest.approx(summary.trap_floor)
    assert min(probe_losses) > summary.initial_val_loss
    # A later checkpoint had a lower nominal loss, but no trap: it was passed over.
    lowest_step, lowest_loss = min(summary.history, key=lambda h: h[1])
    assert lowest_step != summary.best_step and lowest_loss < summary.best_val_loss


def test_a_trap_that_never_forms_keeps_the_lowest_loss_and_says_so(
    base: Path, code_text: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = ProtectConfig(**{**TRAPPING.to_dict(), "lr": 1e-3, "steps": 4, "eval_every": 2, "target_modules": ()})
    _, _, summary = _train(base, code_text, config)
    assert summary.trap_formed is False and summary.steps_run == 4 and not summary.stopped_early
    assert summary.best_val_loss == min(loss for step, loss in summary.history if step > 0)
    assert "the trap did not form in 4 steps" in caplog.text

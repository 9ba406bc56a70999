"""``verify`` / ``reefguard verify-protection``: report contents and files, and updates that do not fit the base."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from bot.cli import main
from bot.errors import ModelLoadError
from bot.trap2.merging import MERGES, Dare, TaskArithmetic, Ties
from bot.trap2.release import write_release
from bot.trap2.training import ProtectRun
from bot.trap2.verification import DEFAULT_SCALES, VerifyReport, verify
from tests import builders

SMALL_GRIDS = (
    MERGES["linear"],
    TaskArithmetic(coefficients=(0.3, 0.7, 1.0)),
    Ties(densities=(0.5,), coefficients=(1.0,)),
    Dare(drop_rates=(0.5,), coefficients=(0.7,)),
    MERGES["asymmetric"],
)


@pytest.fixture(scope="module")
def report(base: Path, lora_run: ProtectRun, other_update: Path, code_text: Path, prose_text: Path) -> VerifyReport:
    return verify(base, lora_run.protected, data=[code_text], twin=lora_run.twin, others=[other_update],
                  other_data=[prose_text], merges=SMALL_GRIDS, context=32, max_windows=8)  # fmt: skip


def test_report_sweeps_both_updates_and_runs_every_attack(report: VerifyReport) -> None:
    assert [p.scale for p in report.sweep] == list(DEFAULT_SCALES) == [p.scale for p in report.twin_sweep]
    assert report.sweep[0].scale == -0.5 and report.sweep[-1].scale == 2.0
    at = {p.scale: p.loss for p in report.sweep}
    assert at[0.0] == pytest.approx(report.base_loss, abs=1e-5)  # s = 0 is the base
    assert at[1.0] == pytest.approx(report.protected_loss, abs=1e-5)
    assert {m.method for m in report.merges} == set(MERGES)
    assert {m.update for m in report.merges} == {"protected", "twin"}
    assert all(math.isfinite(m.loss) and len(m.other_losses) == 1 for m in report.merges)
    # the attacker's best case is the minimum over the grid, not an average
    ta = [m for m in report.merges if m.method == "task-arithmetic" and m.update == "protected"]
    best = report.best("task-arithmetic", "protected")
    assert best is not None and best.loss == min(m.loss for m in ta)
    assert {c.name for c in report.checks} == {
        "standalone within 2% of the twin",
        "s = 0.5 worse than the base",
        "task arithmetic λ ≤ 0.7 worse than the base (best case)",
    }
    asym_zero = next(m for m in report.merges if m.method == "asymmetric" and m.params == {"others": 0.0})
    assert asym_zero.loss == pytest.approx(report.protected_loss, abs=1e-5)  # c = 0 is the update alone


def test_the_release_card_names_every_unprotected_task_arithmetic_lambda(
    report: VerifyReport, lora_run: ProtectRun, tmp_path: Path
) -> None:
    folder = write_release(lora_run.protected, tmp_path / "release", base_model="org/tiny-base", report=report)
    card = (folder / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---\n")[1])
    unprotected = [m.params["lambda"] for m in report.merges if m.method == "task-arithmetic"
                   and m.update == "protected" and m.loss < 1.02 * report.base_loss]  # fmt: skip
    assert header["reefguard"]["verification"]["task_arithmetic_unprotected_lambdas"] == unprotected
    if unprotected:  # a tiny random model: the trap does not form, so the card says where it does not hold
        assert f"**Not protected**: task arithmetic with λ = {', '.join(f'{x:g}' for x in unprotected)} " in card
    else:
        assert "Not protected" not in card


def test_cli_writes_report_files_and_exits_on_the_checks(
    base: Path, lora_run: ProtectRun, code_text: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["verify-protection", str(base), str(lora_run.protected), "--data", str(code_text), "--twin",
                 str(lora_run.twin), "--context", "32", "--max-windows", "4", "--report", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert code == (0 if data["passed"] else 1)
    assert "## Scale sweep" in out and "| 0.5 |" in out and "## Checks" in out
    assert (tmp_path / "scale_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data["sweep"]) == len(DEFAULT_SCALES) and data["merges"] == []  # no --other: no merge attacks


def test_adapter_on_another_base_of_the_same_shape_is_refused(
    lora_run: ProtectRun, code_text: Path, trap2_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_base = builders.tiny_model(trap2_dir / "other-base", "gpt2", seed=1)
    code = main(["verify-protection", str(other_base), str(lora_run.protected), "--data", str(code_text)])
    err = capsys.readouterr().err
    assert code == 3 and "trained on a base whose weights" in err and "pass the base it was trained on" in err


def test_adapter_on_a_base_of_another_shape_is_refused(lora_run: ProtectRun, code_text: Path, trap2_dir: Path) -> None:
    llama = builders.tiny_model(trap2_dir / "llama-base", "llama", seed=0)
    (lora_run.protected / "trap2.json").rename(trap2_dir / "moved-trap2.json")  # a foreign adapter: no record
    try:
        with pytest.raises(ModelLoadError, match="does the adapter belong to this base"):
            verify(llama, lora_run.protected, data=[code_text], context=32, max_windows=2)
    finally:
        (trap2_dir / "moved-trap2.json").rename(lora_run.protected / "trap2.json")


def test_other_data_must_match_others(base: Path, lora_run: ProtectRun, code_text: Path) -> None:
    with pytest.raises(ValueError, match="1 files for 0 --other updates"):
        verify(base, lora_run.protected, data=[code_text], other_data=[code_text])

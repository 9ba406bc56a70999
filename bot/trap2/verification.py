"""Verify: does a protected update work at its authorised scale and break when merged?

``verify`` measures, on the protected task's validation text:

1. the base model's own loss, the protected update's loss at s = 1 and (if given) the unprotected twin's;
2. a scale sweep s ∈ [−0.5, 2.0] of ``W0 + s·ΔW`` for both (table and PNG plot);
3. every merge attack in ``bot.trap2.merging.MERGES`` with the other updates of the same base, over each
   method's coefficient grid, for the protected update and for the twin; the attacker's best case (lowest loss on
   the protected task) per method is what the report shows, never an average.

The checks are the issue's acceptance criteria; a failed check makes ``reefguard verify-protection`` exit 1.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import ConfigError, ModelLoadError
from bot.trap2.merging import MERGES, MergeMethod, describe
from bot.trap2.training import read_metadata

if TYPE_CHECKING:
    import torch

    from bot.reef import LoadedModel
    from bot.trap2.scaling import TaskVector

logger = logging.getLogger(__name__)

DEFAULT_SCALES = tuple(round(-0.5 + 0.1 * i, 1) for i in range(26))
# Issue 4, "Must show": standalone loss within 2 % of the twin; merges at s = 0.5 and TA λ ≤ 0.7 worse than base.
STANDALONE_TOLERANCE = 0.02
AVERAGE_SCALE = 0.5
TA_MAX_LAMBDA = 0.7
# Issue 17: a task-arithmetic merge counts as protected when its loss is at least 2 % above the base's own loss.
PROTECTION_MARGIN = 0.02


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepPoint:
    """Validation loss of ``W0 + scale·ΔW``.

    Attributes:
        scale: s.
        loss: mean next-token cross-entropy (nats).
    """

    scale: float
    loss: float

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))


@dataclass(frozen=True, slots=True, kw_only=True)
class MergeResult:
    """One merge of one update with the others.

    Attributes:
        method: name in ``MERGES``.
        params: the coefficient setting.
        update: ``"protected"`` or ``"twin"``.
        loss: validation loss on the protected task.
        other_losses: validation loss on each other update's task (empty without their data).
    """

    method: str
    params: dict[str, float] = field(hash=False)
    update: str
    loss: float
    other_losses: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One acceptance criterion: its name, whether it held, and the numbers behind it."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    """Everything ``verify`` measured.

    Attributes:
        base_loss: the base model's own validation loss on the protected task.
        protected_loss: the protected update at s = 1.
        twin_loss: the twin at s = 1, or None.
        sweep: protected update's scale sweep.
        twin_sweep: twin's scale sweep (empty without a twin).
        merges: every merge attack evaluated.
        others: the other updates' paths.
        base_other_losses: the base model's loss on each other task (empty without their data).
        checks: the acceptance criteria.
        n_windows: validation windows per evaluation.
        context: tokens per window.
    """

    base_loss: float
    protected_loss: float
    twin_loss: float | None
    sweep: tuple[SweepPoint, ...]
    twin_sweep: tuple[SweepPoint, ...]
    merges: tuple[MergeResult, ...]
    others: tuple[str, ...]
    base_other_losses: tuple[float, ...]
    checks: tuple[Check, ...]
    n_windows: int
    context: int
    schema_version: int = 1

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def best(self, method: str, update: str, *, max_lambda: float | None = None) -> MergeResult | None:
        """The attacker's best case: the lowest protected-task loss of ``method`` on ``update``."""
        rows = [m for m in self.merges if m.method == method and m.update == update]
        if max_lambda is not None:
            rows = [m for m in rows if m.params.get("lambda", 0.0) <= max_lambda + 1e-9]
        return min(rows, key=lambda m: m.loss, default=None)

    def unprotected_lambdas(self, margin: float = PROTECTION_MARGIN) -> tuple[float, ...]:
        """The task-arithmetic λs whose merge with the protected update is less than ``margin`` above the base.

        Example:
            >>> merge = MergeResult(method="task-arithmetic", params={"lambda": 0.4}, update="protected", loss=3.5)
            >>> report = VerifyReport(base_loss=3.5, protected_loss=3.0, twin_loss=None, sweep=(), twin_sweep=(),
            ...                       merges=(merge,), others=(), base_other_losses=(), checks=(), n_windows=1,
            ...                       context=8)
            >>> report.unprotected_lambdas()
            (0.4,)
        """
        limit = self.base_loss * (1 + margin)
        return tuple(m.params["lambda"] for m in self.merges
                     if m.method == "task-arithmetic" and m.update == "protected" and m.loss < limit)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "base_loss": self.base_loss,
            "protected_loss": self.protected_loss,
            "twin_loss": self.twin_loss,
            "sweep": [{"scale": p.scale, "loss": p.loss} for p in self.sweep],
            "twin_sweep": [{"scale": p.scale, "loss": p.loss} for p in self.twin_sweep],
            "merges": [
                {
                    "method": m.method,
                    "params": m.params,
                    "update": m.update,
                    "loss": m.loss,
                    "other_losses": list(m.other_losses),
                }
                for m in self.merges
            ],
            "others": list(self.others),
            "base_other_losses": list(self.base_other_losses),
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks],
            "n_windows": self.n_windows,
            "context": self.context,
            "passed": self.passed,
        }


def load_update(path: Path, base: Path, loaded_base: LoadedModel, base_state: TaskVector) -> dict[str, torch.Tensor]:
    """An update of ``base`` (PEFT adapter folder or full model folder) as a dense task vector ΔW.

    Raises:
        ModelLoadError: the update cannot be loaded, or was trained on other base weights (the sha256 recorded by
            ``protect`` differs, or parameter names or shapes differ).
        ConfigError: the update is identical to the base.
    """
    from bot.reef import load_model
    from bot.trap2.scaling import state_of, task_vector

    metadata = read_metadata(path) if path.is_dir() else None
    recorded = (metadata or {}).get("base_sha256")
    if recorded and dict(recorded) != dict(loaded_base.weight_sha256):
        raise ModelLoadError(
            f"{path}: trained on a base whose weights (sha256 {_short(recorded)}) differ from {base} "
            f"({_short(loaded_base.weight_sha256)}); pass the base it was trained on",
            source=str(path),
        )
    adapter = (path / "adapter_config.json").is_file()
    loaded = load_model(path, base=base if adapter else None, dtype="float32", with_lm_head=True)
    try:
        delta = task_vector(state_of(loaded.model), base_state)
    except ConfigError as e:
        raise ModelLoadError(f"{path}: not an update of base {base}: {e}", source=str(path)) from e
    if not delta:
        raise ConfigError(f"{path}: identical to the base {base}; nothing to verify", path=path)
    return delta


def _short(shas: Any) -> str:
    return ",".join(str(v)[:12] for _, v in sorted(dict(shas).items()))


def verify(
    base: Path,
    protected: Path,
    *,
    data: Sequence[Path],
    twin: Path | None = None,
    others: Sequence[Path] = (),
    other_data: Sequence[Path] = (),
    scales: Sequence[float] = DEFAULT_SCALES,
    merges: Sequence[MergeMethod] | None = None,
    context: int = 64,
    max_windows: int = 64,
    out: Path | None = None,
) -> VerifyReport:
    """Measure a protected update: scale sweep, standalone vs twin, merge attacks; optionally write the report.

    Args:
        base: the base model the updates were trained on.
        protected: the protected update (adapter folder or full model folder).
        data: validation text of the protected task.
        twin: the unprotected twin, for comparison.
        others: other updates of the same base to merge with.
        other_data: validation text for each other update's task (same order), to report their loss too.
        scales: the scale sweep.
        merges: merge methods (default: all of ``MERGES``); skipped without ``others``.
        context: tokens per validation window.
        max_windows: validation windows per evaluation.
        out: if given, write ``report.md``, ``report.json`` and ``scale_sweep.png`` there.

    Returns:
        The report.

    Raises:
        ConfigError: empty data, ``other_data`` not matching ``others``.
        ModelLoadError: an update does not belong to ``base`` or cannot be loaded.
    """
    from bot.reef import load_model
    from bot.trap2.data import validation_windows
    from bot.trap2.scaling import apply_update, mean_loss, state_of

    if other_data and len(other_data) != len(others):
        raise ConfigError(
            f"--other-data: {len(other_data)} files for {len(others)} --other updates; give one per update",
            key="--other-data",
        )
    loaded = load_model(base, dtype="float32", with_lm_head=True)
    tokenizer = loaded.load_tokenizer()
    windows = validation_windows(tokenizer, data, context=context, max_windows=max_windows)
    other_windows = [validation_windows(tokenizer, [p], context=context, max_windows=max_windows)
                     for p in other_data]  # fmt: skip
    base_state = state_of(loaded.model)
    model = loaded.model
    applied: list[str] = []  # the parameters the last applied update changed

    def losses(update: TaskVector, scale: float = 1.0) -> tuple[float, tuple[float, ...]]:
        apply_update(model, base_state, update, scale, changed=applied)
        applied[:] = update
        return mean_loss(model, windows), tuple(mean_loss(model, w) for w in other_windows)

    base_loss, base_other = losses({})
    updates = {"protected": load_update(protected, base, loaded, base_state)}
    if twin is not None:
        updates["twin"] = load_update(twin, base, loaded, base_state)
    other_vectors = [load_update(p, base, loaded, base_state) for p in others]
    sweeps = {name: tuple(SweepPoint(scale=s, loss=losses(tv, s)[0]) for s in scales) for name, tv in updates.items()}
    standalone = {name: losses(tv)[0] for name, tv in updates.items()}
    results = []
    if other_vectors:
        for method in merges if merges is not None else MERGES.values():
            for params in method.settings():
                for name, tv in updates.items():
                    merged = method.merge([tv, *other_vectors], params)
                    loss, other_losses = losses(merged)
                    results.append(MergeResult(method=method.name, params=dict(params), update=name, loss=loss,
                                               other_losses=other_losses))  # fmt: skip
            logger.info("merge attack %s: %d settings", method.name, len(method.settings()))
    apply_update(model, base_state, {}, changed=applied)
    report = VerifyReport(
        base_loss=base_loss,
        protected_loss=standalone["protected"],
        twin_loss=standalone.get("twin"),
        sweep=sweeps["protected"],
        twin_sweep=sweeps.get("twin", ()),
        merges=tuple(results),
        others=tuple(str(p) for p in others),
        base_other_losses=base_other,
        checks=(),
        n_windows=len(windows),
        context=context,
    )
    report = _with_checks(report, updates["protected"], lambda tv, s: losses(tv, s)[0])
    if out is not None:
        write_report(report, out)
    return report


def _with_checks(report: VerifyReport, protected: TaskVector, loss_at: Any) -> VerifyReport:
    from dataclasses import replace

    checks = []
    if report.twin_loss is not None:
        limit = report.twin_loss * (1 + STANDALONE_TOLERANCE)
        checks.append(Check(name="standalone within 2% of the twin", passed=report.protected_loss <= limit,
                            detail=f"protected {report.protected_loss:.4f} vs twin {report.twin_loss:.4f} "
                                   f"({100 * (report.protected_loss / report.twin_loss - 1):+.2f}%)"))  # fmt: skip
    half = loss_at(protected, AVERAGE_SCALE)
    checks.append(Check(name="s = 0.5 worse than the base", passed=half > report.base_loss,
                        detail=f"{half:.4f} vs base {report.base_loss:.4f}"))  # fmt: skip
    best_ta = report.best("task-arithmetic", "protected", max_lambda=TA_MAX_LAMBDA)
    if best_ta is not None:
        checks.append(Check(name="task arithmetic λ ≤ 0.7 worse than the base (best case)",
                            passed=best_ta.loss > report.base_loss,
                            detail=f"best {best_ta.loss:.4f} at {describe(best_ta.params)} vs base "
                                   f"{report.base_loss:.4f}"))  # fmt: skip
    return replace(report, checks=tuple(checks))


def render_markdown(report: VerifyReport) -> str:
    """The report as markdown tables (standalone, scale sweep, merge attacks with the attacker's best case)."""
    lines = ["# Trap² verification", ""]
    lines += ["| model | val loss | perplexity |", "|---|---:|---:|"]
    rows = [("base (no update)", report.base_loss), ("protected, s = 1", report.protected_loss)]
    if report.twin_loss is not None:
        rows.append(("unprotected twin, s = 1", report.twin_loss))
    lines += [f"| {name} | {loss:.4f} | {math.exp(min(loss, 700.0)):.2f} |" for name, loss in rows]
    lines += ["", f"{report.n_windows} validation windows of {report.context} tokens.", "", "## Scale sweep", ""]
    twin = {p.scale: p for p in report.twin_sweep}
    lines += ["| s | protected loss | protected ppl | twin loss | twin ppl |", "|---:|---:|---:|---:|---:|"]
    for p in report.sweep:
        t = twin.get(p.scale)
        twin_cells = f"{t.loss:.4f} | {t.perplexity:.2f}" if t else "- | -"
        lines.append(f"| {p.scale:g} | {p.loss:.4f} | {p.perplexity:.2f} | {twin_cells} |")
    if report.merges:
        lines += ["", "## Merge attacks (attacker's best case: lowest loss on the protected task)", ""]
        lines += [f"Merged with {len(report.others)} other update(s): {', '.join(report.others)}. "
                  f"Base loss {report.base_loss:.4f}.", ""]  # fmt: skip
        lines += ["| method | settings tried | protected: best loss | at | twin: best loss | at |",
                  "|---|---:|---:|---|---:|---|"]  # fmt: skip
        for method in dict.fromkeys(m.method for m in report.merges):
            best_p, best_t = report.best(method, "protected"), report.best(method, "twin")
            tried = sum(1 for m in report.merges if m.method == method and m.update == "protected")
            twin_cells = f"{best_t.loss:.4f} | {describe(best_t.params)}" if best_t else "- | -"
            if best_p is not None:
                lines.append(f"| {method} | {tried} | {best_p.loss:.4f} | {describe(best_p.params)} | {twin_cells} |")
        lines += ["", "### Asymmetric attack (protected at 1.0, others × c)", ""]
        lines += _asymmetric_table(report)
    lines += ["", "## Checks", ""]
    lines += [f"- {'PASS' if c.passed else 'FAIL'}: {c.name} ({c.detail})" for c in report.checks]
    return "\n".join(lines) + "\n"


def _asymmetric_table(report: VerifyReport) -> list[str]:
    header = "| c | with protected: protected-task loss | with twin: protected-task loss |"
    extra = "".join(f" with protected: other {i + 1}'s task loss |" for i in range(len(report.base_other_losses)))
    lines = [header + extra, "|---:|---:|---:|" + "---:|" * len(report.base_other_losses)]
    twin = {m.params["others"]: m for m in report.merges if m.method == "asymmetric" and m.update == "twin"}
    for m in (m for m in report.merges if m.method == "asymmetric" and m.update == "protected"):
        t = twin.get(m.params["others"])
        cells = "".join(f" {v:.4f} |" for v in m.other_losses)
        lines.append(f"| {m.params['others']:g} | {m.loss:.4f} | {f'{t.loss:.4f}' if t else '-'} |{cells}")
    if report.base_other_losses:
        cells = "".join(f" {v:.4f} |" for v in report.base_other_losses)
        lines.append(f"| base | {report.base_loss:.4f} | {report.base_loss:.4f} |{cells}")
    return lines


def plot_sweep(report: VerifyReport, path: Path) -> Path:
    """Write the scale sweep as a PNG: loss against s for the protected update, the twin and the base."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    axis.plot([p.scale for p in report.sweep], [p.loss for p in report.sweep], "o-", label="Trap² protected")
    if report.twin_sweep:
        axis.plot([p.scale for p in report.twin_sweep], [p.loss for p in report.twin_sweep], "s--",
                  label="unprotected twin")  # fmt: skip
    axis.axhline(report.base_loss, color="grey", linestyle=":", label="base model")
    axis.axvline(1.0, color="green", alpha=0.3, label="authorised scale")
    axis.set_xlabel("scale s of the update (W0 + s·ΔW)")
    axis.set_ylabel("validation loss (nats)")
    axis.set_title("Trap² scale sweep")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def write_report(report: VerifyReport, out: Path) -> Path:
    """Write ``report.md``, ``report.json`` and ``scale_sweep.png`` into ``out`` (created) and return it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    text = json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n"
    (out / "report.json").write_text(text, encoding="utf-8")
    plot_sweep(report, out / "scale_sweep.png")
    return out

"""The Action's opt-in ``mode: protect``: train a Trap²-protected update, verify it, write its release folder.

The same three calls as ``reefguard protect`` then ``reefguard verify-protection --release`` (``bot.trap2``'s public
API), on files in the workspace. Everything lands under the ``out`` input:

- ``protected/`` and ``twin/``: the protected update and its unprotected twin (λ = 0), as ``protect`` writes them;
- ``report/``: ``report.md``, ``report.json``, ``scale_sweep.png`` (step output ``report``);
- ``release/``: weights, tokenizer, ``trap2.json`` and the model card (step output ``release``), for
  ``actions/upload-artifact``.

The step fails (exit 1, like ``verify-protection``) when a verification check fails: the release is still written,
and its card says the checks failed, but a workflow uploading it only on success never publishes it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bot.errors import ConfigError
from bot.exit_codes import ExitCode
from bot.github.inputs import ProtectInputs
from bot.github.runner import Runner

logger = logging.getLogger(__name__)

RELEASE_FOLDER = "release"
REPORT_FOLDER = "report"


def _existing(workspace: Path, path: str, name: str) -> Path:
    full = workspace / path
    if not full.exists():
        raise ConfigError(f"input {name}: {path} does not exist in the repository", key=name)
    return full


def run_protect(inputs: ProtectInputs, workspace: Path, runner: Runner) -> int:
    """Protect, verify and release; write the step outputs and the job summary.

    Args:
        inputs: the validated ``mode: protect`` inputs.
        workspace: the checked-out repository the paths are relative to.
        runner: where outputs, annotations and the summary go.

    Returns:
        ``ExitCode.OK`` when every verification check holds, ``ExitCode.FINDING`` when one fails.

    Raises:
        ConfigError: an input path that does not exist, or an ``out`` folder that already holds a release.
        ModelLoadError: the base or an ``other`` update does not load, or does not belong to the base.
        TrainingError: a run ended without a usable checkpoint.
    """
    from bot.trap2 import protect, verify, write_release
    from bot.trap2.verification import render_markdown

    base = _existing(workspace, inputs.base, "base")
    data = [_existing(workspace, p, "data") for p in inputs.data]
    validation = [_existing(workspace, p, "validation") for p in inputs.validation]
    others = [_existing(workspace, p, "other") for p in inputs.others]
    other_data = [_existing(workspace, p, "other-data") for p in inputs.other_data]
    out = workspace / inputs.out
    if (out / RELEASE_FOLDER).exists():
        raise ConfigError(f"input out: {inputs.out}/{RELEASE_FOLDER} already exists; choose an empty folder", key="out")

    run = protect(base, data, out, config=inputs.config, validation=validation)
    report = verify(base, run.protected, data=validation, twin=run.twin, others=others, other_data=other_data,
                    context=inputs.config.context, max_windows=inputs.config.max_val_windows,
                    out=out / REPORT_FOLDER)  # fmt: skip
    write_release(run.protected, out / RELEASE_FOLDER, base_model=inputs.base_model_id, report=report,
                  tokenizer_from=base if base.is_dir() else None)  # fmt: skip

    runner.set_output("release", f"{inputs.out}/{RELEASE_FOLDER}")
    runner.set_output("report", f"{inputs.out}/{REPORT_FOLDER}/report.md")
    runner.set_output("protection", "passed" if report.passed else "failed")
    summary = run.protected_summary
    trained = (f"Trained `{inputs.base}` ({inputs.config.form}, λ = {inputs.config.lam:g}): kept step "
               f"{summary.best_step} of {summary.steps_run}, {summary.skipped_steps} non-finite steps skipped. "
               f"Release folder: `{inputs.out}/{RELEASE_FOLDER}`.")  # fmt: skip
    runner.add_summary(render_markdown(report) + "\n" + trained + "\n")
    failed = [c for c in report.checks if not c.passed]
    if failed:
        runner.error(
            "the protection is weak on this data: " + "; ".join(f"{c.name} ({c.detail})" for c in failed)
            + ". Raise lambda or steps and run again; the release folder's card records the failure",
            title="reefguard: protection check failed",
        )  # fmt: skip
        return ExitCode.FINDING
    return ExitCode.OK

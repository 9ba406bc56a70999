"""The Action's ``mode: protect``: train, verify and release a Trap²-protected update from files in the workspace.

Runs go through the runner's variables, like every Action test (``ActionRun``), with the trained demo base (GPT-2,
4 blocks, width 64) committed to the workspace; the GitHub double records that protect mode makes no API request.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bot.cli import ExitCode, build_parser
from bot.github.inputs import input_variable, read_protect_inputs
from tests.doubles.github_server import GitHubServer
from tests.github.conftest import ActionRun, Outcome, Workspace
from tests.trap2.conftest import DEMO_BASE, TASK_MODULES, VALIDATION_MODULES, stdlib_source

REPO = Path(__file__).resolve().parents[2]

# The settings of tests/trap2/test_protect.py's TRAPPING run: every check passes with margins far above the
# differences between torch's CPU kernels (issue 14; measured: standalone +1 % vs the twin, s = 0.5 +0.5 nats).
TRAINING = {"lambda": "0.5", "lr": "0.005", "steps": "400", "eval-every": "20", "patience": "20", "batch-size": "8",
            "context": "32", "lora-r": "8", "lora-alpha": "8", "loss-cap": "6", "weight": "inv"}  # fmt: skip


@pytest.fixture
def protect_workspace(workspace: Workspace) -> Workspace:
    """The workspace with ``models/base`` and training and validation text committed."""
    import shutil

    shutil.copytree(DEMO_BASE, workspace.root / "models" / "base")
    workspace.write("data/train.txt", stdlib_source(TASK_MODULES))
    workspace.write("data/val.txt", stdlib_source(VALIDATION_MODULES))
    workspace.commit("base and data")
    return workspace


def _protect(run_action: ActionRun, capsys: pytest.CaptureFixture[str], **inputs: str) -> Outcome:
    given = {"mode": "protect", "base": "models/base", "data": "data/train.txt", "validation": "data/val.txt"}
    return run_action("workflow_dispatch", {}, capsys, **{**given, **inputs})


def _errors(outcome: Outcome) -> list[str]:
    return [line for line in outcome.stdout.splitlines() if line.startswith("::error")]


def test_protect_mode_writes_a_verified_release_and_sets_its_outputs(
    run_action: ActionRun,
    protect_workspace: Workspace,
    github_server: GitHubServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcome = _protect(run_action, capsys, base_model_id="octo/base", **{k.replace("-", "_"): v
                                                                          for k, v in TRAINING.items()})  # fmt: skip

    assert outcome.code == ExitCode.OK, outcome.stdout
    assert outcome.outputs == {"release": "reefguard-protect/release", "protection": "passed",
                               "report": "reefguard-protect/report/report.md"}  # fmt: skip
    release = protect_workspace.root / outcome.outputs["release"]
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "trap2.json", "README.md"} <= {
        p.name for p in release.iterdir()
    }
    card = yaml.safe_load(release.joinpath("README.md").read_text(encoding="utf-8").split("---")[1])
    assert card["base_model"] == ["octo/base"]  # bot.cards writes base_model as a list of Hub ids
    assert card["reefguard"]["verification"]["passed"] is True
    assert json.loads(release.joinpath("trap2.json").read_text(encoding="utf-8"))["protection"] == "trap2"
    report = protect_workspace.root / outcome.outputs["report"]
    assert (report.parent / "scale_sweep.png").is_file()
    assert "# Trap² verification" in outcome.summary and "- PASS: s = 0.5 worse than the base" in outcome.summary
    assert "Release folder: `reefguard-protect/release`" in outcome.summary
    assert _errors(outcome) == []
    assert github_server.requests == []  # protect mode needs no API


def test_weak_protection_fails_the_step_but_keeps_the_report(
    run_action: ActionRun,
    protect_workspace: Workspace,
    github_server: GitHubServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Three steps cannot form a trap: the loss at s = 0.5 stays at the base's.
    outcome = _protect(run_action, capsys, steps="3", eval_every="3", batch_size="2", context="32", out="runs/weak")

    assert outcome.code == ExitCode.FINDING
    assert outcome.outputs["protection"] == "failed"
    assert outcome.outputs["release"] == "runs/weak/release"
    errors = _errors(outcome)
    assert len(errors) == 1 and "the protection is weak on this data: s = 0.5 worse than the base" in errors[0]
    assert "- FAIL: s = 0.5 worse than the base" in outcome.summary
    card = (protect_workspace.root / "runs/weak/release/README.md").read_text(encoding="utf-8")
    assert "passed: false" in card
    assert github_server.requests == []


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ({"mode": "guard"}, "input mode: unknown value 'guard' (known: check, protect)"),
        ({"base": ""}, "input base: mode protect needs the base model"),
        ({"validation": ""}, "input validation: mode protect needs validation text files"),
        ({"base": "models/missing"}, "input base: models/missing does not exist in the repository"),
        ({"data": "../outside.txt"}, "input data: '../outside.txt' must be a path inside the repository"),
        ({"lambda": "lots"}, "input lambda: 'lots' is not a number"),
        ({"steps": "1.5"}, "input steps: '1.5' is not an integer"),
        ({"s_min": "0.96", "s_max": "1.04"}, "input s-min: [0.96, 1.04] minus (1 ± 0.05) leaves no off-nominal"),
        ({"form": "qlora"}, "input form: unknown value 'qlora' (known: lora, full)"),
        ({"base_model_id": "./models/base"}, "input base-model-id: './models/base' is a local path, not a Hub id"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(
    run_action: ActionRun,
    protect_workspace: Workspace,
    github_server: GitHubServer,
    capsys: pytest.CaptureFixture[str],
    inputs: dict[str, str],
    needle: str,
) -> None:
    outcome = _protect(run_action, capsys, **inputs)

    assert outcome.code == ExitCode.USAGE
    errors = _errors(outcome)
    assert len(errors) == 1 and needle in errors[0], outcome.stdout
    assert outcome.outputs == {}
    assert not (protect_workspace.root / "reefguard-protect").exists()  # nothing trained
    assert github_server.requests == []


def test_other_data_must_match_other() -> None:
    environ = {input_variable("base"): "m", input_variable("data"): "t.txt", input_variable("validation"): "v.txt",
               input_variable("other"): "a\nb", input_variable("other-data"): "a.txt"}  # fmt: skip
    with pytest.raises(ValueError, match="input other-data: 1 files for 2 other updates"):
        read_protect_inputs(environ)


def test_protect_inputs_are_twins_of_cli_flags() -> None:
    action = yaml.safe_load((REPO / "action.yml").read_text(encoding="utf-8"))
    names = [name for name, spec in action["inputs"].items() if spec["description"].startswith("mode protect")]
    subcommands = next(a.choices for a in build_parser()._actions if isinstance(a.choices, dict))
    flags = {option for command in ("protect", "verify-protection") for action in subcommands[command]._actions
             for option in action.option_strings}  # fmt: skip
    assert len(names) == 25
    assert [name for name in names if f"--{name}" not in flags] == ["base"]  # `reefguard protect BASE`

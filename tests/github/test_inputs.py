"""Action inputs: defaults, validation, and agreement with action.yml and the CLI through the one flag table."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.cli import build_parser
from bot.github.inputs import PROTECT_OPTIONS, input_variable, read_inputs
from bot.options import ACTION_OPTIONS, CHECK_OPTIONS, MODEL_OPTIONS, REGISTRY

REPO = Path(__file__).resolve().parents[2]
ACTION_YML = yaml.safe_load((REPO / "action.yml").read_text(encoding="utf-8"))


def test_defaults() -> None:
    inputs = read_inputs({input_variable("token"): "ghs_SECRET"})
    assert (inputs.registry, inputs.paths, inputs.dtype, inputs.fail_on) == ("fingerprints", (), "float32", "derived")
    assert (inputs.open_issue, inputs.comment_on_pr, inputs.annotate_card) == (True, True, False)
    assert (inputs.max_model_bytes, inputs.report_dir) == (4 * 10**9, "reefguard-report")
    assert "ghs_SECRET" not in repr(inputs)


def test_values_are_read_from_the_runner_variables() -> None:
    environ = {
        "INPUT_PATHS": "models/a\n\n# a comment\n./models//b*\n",
        "INPUT_FAIL-ON-DETECTION": "false",
        "INPUT_MAX-MODEL-SIZE": "0",
        "INPUT_ANNOTATE-CARD": "True",
        "INPUT_DTYPE": "bfloat16",
        "INPUT_REPORT-DIR": " ./out/reports ",
    }
    inputs = read_inputs(environ)
    assert inputs.paths == ("models/a", "models/b*")
    assert (inputs.fail_on, inputs.max_model_bytes, inputs.annotate_card, inputs.dtype, inputs.report_dir) == (
        "never", None, True, "bfloat16", "out/reports")  # fmt: skip


def test_action_yml_declares_every_input_of_the_table_with_its_default() -> None:
    declared = {name: str(spec.get("default", "")) for name, spec in ACTION_YML["inputs"].items()}
    assert declared.pop("token") == "${{ github.token }}"
    table = {option.action_input: option.input_default for option in (*ACTION_OPTIONS, *PROTECT_OPTIONS)}
    assert list(declared.items()) == list(table.items())  # the same inputs, defaults and order
    assert set(ACTION_YML["outputs"]) == {"verdict", "report", "matches", "release", "protection"}


def test_action_yml_names_the_flag_each_input_twins() -> None:
    for option in ACTION_OPTIONS:
        if option.flag is not None:
            assert f"--{option.flag.removeprefix('--')}" in ACTION_YML["inputs"][option.action_input]["description"]


# One value per input that has a CLI flag, other than its default.
_GIVEN = {"registry": "reg", "probes": "probes.txt", "dtype": "float16", "extraction": "stream",
          "fail-on-detection": "merged", "report-dir": "out"}  # fmt: skip


@pytest.mark.parametrize("option", [o for o in ACTION_OPTIONS if o.flag is not None], ids=lambda o: o.action_input)
def test_each_input_reaches_the_same_value_as_its_flag(option: object) -> None:
    from bot.options import Option

    assert isinstance(option, Option) and option.flag and option.action_input
    text = _GIVEN[option.action_input]
    from_action = getattr(read_inputs({input_variable(option.action_input): text}), option.dest)
    from_cli = getattr(build_parser().parse_args(["check", "m", option.flag, text]), option.dest)
    assert from_action == from_cli
    assert from_action != getattr(read_inputs({}), option.dest)


def test_each_flag_default_is_the_input_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REEFGUARD_REGISTRY", raising=False)
    cli = build_parser().parse_args(["check", "m"])
    inputs = read_inputs({})
    for option in (*MODEL_OPTIONS, *CHECK_OPTIONS, REGISTRY):
        if option.action_input is not None and option.action_default is None:
            assert getattr(cli, option.dest) == getattr(inputs, option.dest), option.dest


def test_registry_default_follows_reefguard_registry_on_the_cli_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REEFGUARD_REGISTRY", "elsewhere")
    assert build_parser().parse_args(["check", "m"]).registry == "elsewhere"
    assert read_inputs({}).registry == "fingerprints"

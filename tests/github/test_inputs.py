"""Action inputs: defaults, validation, and agreement with action.yml and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.errors import ConfigError
from bot.github.inputs import DEFAULTS, input_variable, parse_size, read_inputs

REPO = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    inputs = read_inputs({input_variable("token"): "ghs_SECRET"})
    assert (inputs.registry, inputs.paths, inputs.dtype, inputs.fail_on) == ("fingerprints", (), "float32", "derived")
    assert (inputs.open_issue, inputs.comment_on_pr, inputs.annotate_card) == (True, True, False)
    assert inputs.max_model_bytes == 4 * 10**9
    assert "ghs_SECRET" not in repr(inputs)


def test_values_are_read_from_the_runner_variables() -> None:
    environ = {
        "INPUT_PATHS": "models/a\n\n# a comment\nmodels/b*\n",
        "INPUT_FAIL-ON-DETECTION": "false",
        "INPUT_MAX-MODEL-SIZE": "0",
        "INPUT_ANNOTATE-CARD": "True",
        "INPUT_DTYPE": "bfloat16",
    }
    inputs = read_inputs(environ)
    assert inputs.paths == ("models/a", "models/b*")
    assert (inputs.fail_on, inputs.max_model_bytes, inputs.annotate_card, inputs.dtype) == (
        "never", None, True, "bfloat16")  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [("123", 123), ("2 GiB", 2 * 2**30), ("1.5mb", 1_500_000), ("", None)])
def test_sizes(text: str, expected: int | None) -> None:
    assert parse_size(text) == expected


def test_bad_size() -> None:
    with pytest.raises(ConfigError, match="'12 parsecs' is not a size") as caught:
        parse_size("12 parsecs")
    assert caught.value.key == "max-model-size"


def test_defaults_match_action_yml() -> None:
    action = yaml.safe_load((REPO / "action.yml").read_text(encoding="utf-8"))
    declared = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    assert declared.pop("token") == "${{ github.token }}"
    assert declared == DEFAULTS
    assert set(action["outputs"]) == {"verdict", "report", "matches", "release", "protection"}

"""The one flag table: its defaults are the engine's, and every row reads the same text the same way everywhere."""

from __future__ import annotations

import argparse
import inspect

import pytest

from bot import engine
from bot.options import MODEL_OPTIONS, REGISTRY, add_options, registry_default


def test_model_option_defaults_are_the_engines() -> None:
    """The Action leaves unexposed options to the engine's defaults: they must be the CLI's."""
    parameters = inspect.signature(engine.fingerprint).parameters
    for option in MODEL_OPTIONS:
        expected = None if option.default is None else option.parse(option.default)
        assert parameters[option.dest].default == expected, option.dest


def test_a_bad_value_is_one_usage_error_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="reefguard")
    add_options(parser, MODEL_OPTIONS)
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(["--batch-size", "0"])
    assert caught.value.code == 2
    assert "argument --batch-size: '0' is not a positive integer" in capsys.readouterr().err


def test_the_registry_default_lives_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REEFGUARD_REGISTRY", raising=False)
    assert registry_default({}) == REGISTRY.default == "fingerprints"
    assert registry_default({"REEFGUARD_REGISTRY": "elsewhere"}) == "elsewhere"

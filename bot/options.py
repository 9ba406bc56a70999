"""The options of checking a model, in one table that drives the CLI, the Action's inputs and ``action.yml``.

Each ``Option`` row names its CLI flag, its Action input (the kebab-case twin, or None where the Action does not
take it), its default, its help, and the one function that turns text into its value. ``add_options`` puts rows
on an argparse parser; ``read_action_inputs`` reads the same rows from the runner's ``INPUT_*`` variables; a test
checks ``action.yml`` against the table and that each input reaches the same value as its flag. Adding an option
is one row here (and its entry in ``action.yml`` when the Action takes it).

The Action's ``mode: protect`` inputs are twins of ``reefguard protect`` flags and come from that command's own
table (``bot.trap2.config.TRAINING_FLAGS``); this module stays neutral (no ``bot.github``, ``bot.hub`` or
``bot.trap2`` import), so every integration can take its rows.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from bot.errors import ConfigError
from bot.exit_codes import FAIL_ON
from bot.reef import DTYPES, EXTRACTION_MODES
from bot.sizes import parse_bytes

# The registry folder every command uses unless told otherwise; REEFGUARD_REGISTRY overrides it on the CLI.
DEFAULT_REGISTRY = "fingerprints"
REGISTRY_VARIABLE = "REEFGUARD_REGISTRY"
# actions/toolkit getBooleanInput accepts exactly these (the YAML 1.2 core schema booleans).
_TRUE, _FALSE = ("true", "True", "TRUE"), ("false", "False", "FALSE")
# "fail-on-detection" reads naturally as a boolean too.
FAIL_ON_ALIASES = {"true": "derived", "false": "never"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """One option of the CLI, the Action, or both.

    Attributes:
        dest: the parsed value's name (argparse ``dest``, the Action inputs' field).
        flag: the CLI flag (``--dtype``), or None where only the Action takes it.
        action_input: the Action input (``dtype``), or None where only the CLI takes it.
        default: the default as text, parsed like a given value; None means "not given" (the value is None).
        action_default: the Action's default where it differs from the CLI's (a report folder the CLI does not
            write unless asked).
        help: one line for ``--help``; ``action.yml``'s description names the flag.
        parse: text to value; raises ``ConfigError`` naming the text, the caller adds the flag or input.
        choices: the accepted texts, shown in ``--help``; empty for any.
        path_in_workspace: the Action takes only a path inside the repository (``default`` aside for probes).
        environment_variable: a variable that overrides the CLI default (never the Action's).
    """

    dest: str
    flag: str | None
    action_input: str | None
    default: str | None
    action_default: str | None = None
    help: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] = ()
    path_in_workspace: bool = False
    environment_variable: str | None = None

    @property
    def input_default(self) -> str:
        """The default ``action.yml`` declares for the input."""
        return self.action_default if self.action_default is not None else self.default or ""


def choice(known: Sequence[str], *, aliases: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """A parser that accepts one of ``known`` (or an alias of one), refusing anything else with the list.

    Example:
        >>> choice(("lora", "full"))("full")
        'full'
    """
    aliases = aliases or {}
    hint = "; " + ", ".join(f"{alias} means {value}" for alias, value in aliases.items()) if aliases else ""

    def parse(text: str) -> str:
        value = aliases.get(text.lower(), text)
        if value not in known:
            raise ConfigError(f"unknown value {text!r} (known: {', '.join(known)}{hint})")
        return value

    return parse


def parse_boolean(text: str) -> bool:
    """``true`` or ``false`` as the Actions toolkit spells them.

    Raises:
        ConfigError: anything else.
    """
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{text!r} is not a boolean (use true or false)")


def parse_byte_limit(text: str) -> int | None:
    """A size cap in bytes (``4GB``, ``500MiB``); ``0`` means no limit (None).

    Raises:
        ConfigError: an unreadable size (``bot.sizes.parse_bytes``).
    """
    try:
        return parse_bytes(text) or None
    except ConfigError as e:
        raise ConfigError(f"{e}; 0 for no limit") from None


def _positive_integer(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"{text!r} is not a positive integer")
    return int(text)


def parse_integer(text: str) -> int:
    """An integer, or ``ConfigError``."""
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not an integer") from None


def parse_number(text: str) -> float:
    """A number, or ``ConfigError``."""
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a number") from None


def optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, except that empty text means "not given" (None): the command's own default applies."""

    def parse_or_none(text: str) -> Any:
        return parse(text) if text.strip() else None

    return parse_or_none


def _hub_id(text: str) -> str:
    from bot.sources import parse_hub_id

    return parse_hub_id(text)


def parse_lines(text: str) -> tuple[str, ...]:
    """One path or glob pattern per line; blank lines and ``#`` comments skipped.

    Example:
        >>> parse_lines("models/a\\n\\n# models/old\\nmodels/b*\\n")
        ('models/a', 'models/b*')
    """
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


REGISTRY = Option(dest="registry", flag="--registry", action_input="registry", default=DEFAULT_REGISTRY,
                  help=f"registry folder (default: ${REGISTRY_VARIABLE} or ./{DEFAULT_REGISTRY})",
                  path_in_workspace=True, environment_variable=REGISTRY_VARIABLE)  # fmt: skip
PROBES = Option(dest="probes", flag="--probes", action_input="probes", default="default",
                help="'default' or the .txt/.jsonl/.csv probe file (the one the registry was made with)",
                path_in_workspace=True)  # fmt: skip
DTYPE = Option(dest="dtype", flag="--dtype", action_input="dtype", default="float32",
               help="the dtype weights are loaded in", parse=choice(DTYPES), choices=DTYPES)  # fmt: skip
BATCH_SIZE = Option(dest="batch_size", flag="--batch-size", action_input=None, default="16",
                    help="probes per forward pass (default 16)", parse=_positive_integer)  # fmt: skip
EXTRACTION = Option(dest="extraction", flag="--extraction", action_input="extraction", default="auto",
                    help="run the model one block at a time (stream) or whole (full); auto streams whenever the "
                    "architecture allows (safetensors Llama, Qwen2, GPT-2, Gemma 3) (default auto)",
                    parse=choice(EXTRACTION_MODES), choices=EXTRACTION_MODES)  # fmt: skip
BASE = Option(dest="base", flag="--base", action_input=None, default=None,
              help="base model of a PEFT adapter (default: the adapter config's)")  # fmt: skip
FAIL_ON_LEVEL = Option(dest="fail_on", flag="--fail-on", action_input="fail-on-detection", default="derived",
                       help="exit 1 at this verdict level (default: derived or merged)",
                       parse=choice(tuple(FAIL_ON), aliases=FAIL_ON_ALIASES), choices=tuple(FAIL_ON))  # fmt: skip
ALPHA = Option(dest="alpha", flag="--alpha", action_input=None, default="0.01",
               help="significance level of a match (default 0.01)", parse=parse_number)  # fmt: skip
REPORT = Option(dest="report_dir", flag="--report", action_input="report-dir", default=None,
                action_default="reefguard-report", help="write report.md, report.json and heatmaps here",
                path_in_workspace=True)  # fmt: skip
HUB_ID = Option(dest="hub_id", flag="--hub-id", action_input=None, default=None,
                help="the source's Hub id (org/name), which model-card changes declare as base_model; "
                "fingerprint records a Hub model's own without it", parse=_hub_id)  # fmt: skip
# The Action's own: which models a workflow event selects, and what the bot may post.
PATHS = Option(dest="paths", flag=None, action_input="paths", default="", help="model folders or globs, one per line",
               parse=parse_lines, path_in_workspace=True)  # fmt: skip
MAX_MODEL_SIZE = Option(dest="max_model_bytes", flag=None, action_input="max-model-size", default="4GB",
                        help="the largest total weight size checked", parse=parse_byte_limit)  # fmt: skip
OPEN_ISSUE = Option(dest="open_issue", flag=None, action_input="open-issue", default="true",
                    help="keep one issue per (model, source)", parse=parse_boolean)  # fmt: skip
COMMENT_ON_PR = Option(dest="comment_on_pr", flag=None, action_input="comment-on-pr", default="true",
                       help="keep one pull request comment", parse=parse_boolean)  # fmt: skip
ANNOTATE_CARD = Option(dest="annotate_card", flag=None, action_input="annotate-card", default="false",
                       help="propose base_model in the model card", parse=parse_boolean)  # fmt: skip
MODE = Option(dest="mode", flag=None, action_input="mode", default="check", help="check or protect",
              parse=choice(("check", "protect")), choices=("check", "protect"))  # fmt: skip

# How a model is loaded and fingerprinted (fingerprint, check, compare).
MODEL_OPTIONS = (PROBES, DTYPE, BASE, BATCH_SIZE, EXTRACTION)
# What `reefguard check` adds.
CHECK_OPTIONS = (FAIL_ON_LEVEL, ALPHA, REPORT)
# Every input of the Action's check mode, in action.yml's order; `token` is a secret, read on its own.
ACTION_OPTIONS = (MODE, REGISTRY, PATHS, PROBES, DTYPE, EXTRACTION, FAIL_ON_LEVEL, MAX_MODEL_SIZE, REPORT,
                  OPEN_ISSUE, COMMENT_ON_PR, ANNOTATE_CARD)  # fmt: skip


def registry_default(environ: Mapping[str, str]) -> str:
    """The registry folder a command uses without ``--registry``: ``$REEFGUARD_REGISTRY`` or ``fingerprints``."""
    return _cli_default(REGISTRY, environ) or DEFAULT_REGISTRY


def _cli_default(option: Option, environ: Mapping[str, str]) -> str | None:
    """The CLI's default text: the option's environment variable when set, else the table's."""
    named = environ.get(option.environment_variable) if option.environment_variable else None
    return named or option.default


def model_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``bot.engine.fingerprint`` that ``MODEL_OPTIONS`` set, by ``dest``: the value in
    ``values`` (parsed CLI flags or Action inputs) where there is one, else the table's default. The CLI and the
    Action both fingerprint through this, so an option added to the table reaches the engine from both."""
    return {option.dest: values[option.dest] if option.dest in values else _parsed_default(option)
            for option in MODEL_OPTIONS}  # fmt: skip


def _parsed_default(option: Option) -> Any:
    return None if option.default is None else option.parse(option.default)


def _argparse_type(option: Option) -> Callable[[str], Any]:
    """The option's parser, its errors turned into argparse's (one usage line, exit 2)."""

    def parse(text: str) -> Any:
        try:
            return option.parse(text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def add_options(
    parser: argparse.ArgumentParser, options: Sequence[Option], *, environ: Mapping[str, str] = os.environ
) -> None:
    """Add the CLI flags of ``options`` to ``parser``; rows without a flag are skipped.

    Args:
        parser: the (sub)command's parser.
        options: rows of this module.
        environ: where an option's ``environment_variable`` is looked up for its default.
    """
    for option in options:
        if option.flag is None:
            continue
        default = _cli_default(option, environ)
        parser.add_argument(
            option.flag,
            dest=option.dest,
            type=_argparse_type(option),
            default=None if default is None else option.parse(default),
            metavar="{" + ",".join(option.choices) + "}" if option.choices else None,
            help=option.help,
        )


def input_variable(name: str) -> str:
    """The environment variable the runner sets for input ``name``.

    Example:
        >>> input_variable("fail-on-detection")
        'INPUT_FAIL-ON-DETECTION'
    """
    return "INPUT_" + name.replace(" ", "_").upper()


def workspace_path(text: str, *, input_name: str) -> str:
    """An Action input's path, normalized; refused when absolute or climbing out of the workspace with ``..``.

    Raises:
        ConfigError: naming the input.

    Example:
        >>> workspace_path("./models//a", input_name="paths")
        'models/a'
    """
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts:
        raise ConfigError(f"input {input_name}: {text!r} must be a path inside the repository", key=input_name)
    return path.as_posix()


def _inside_workspace(option: Option, value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_inside_workspace(option, text) for text in value)
    if not value or option.action_input is None or (option is PROBES and value == "default"):
        return value
    return workspace_path(value, input_name=option.action_input)


def read_action_input(environ: Mapping[str, str], option: Option) -> Any:
    """The value of one Action input: the runner's variable, or the default when it is unset or blank.

    Raises:
        ConfigError: an unreadable value or a path outside the workspace, naming the input.
    """
    if option.action_input is None:
        raise ValueError(f"{option.dest} is not an Action input")
    text = environ.get(input_variable(option.action_input), "").strip() or option.input_default
    try:
        value = option.parse(text)
    except ConfigError as e:
        raise ConfigError(f"input {option.action_input}: {e}", key=option.action_input) from None
    return _inside_workspace(option, value) if option.path_in_workspace else value


def read_action_inputs(environ: Mapping[str, str], options: Sequence[Option] = ACTION_OPTIONS) -> dict[str, Any]:
    """The values of ``options`` from the runner's ``INPUT_*`` variables, by ``dest``.

    Raises:
        ConfigError: the first unreadable input, naming it.
    """
    return {option.dest: read_action_input(environ, option) for option in options}

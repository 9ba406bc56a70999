"""The action's inputs and the runner's environment, validated once into frozen dataclasses.

The runner passes input ``foo-bar`` as the environment variable ``INPUT_FOO-BAR`` (upper-cased, hyphens kept).
Check mode's inputs are rows of the one flag table (``bot.options.ACTION_OPTIONS``), read and parsed by the same
functions as their ``reefguard check`` flags (``registry``, ``probes``, ``dtype``, ``extraction``,
``fail-on-detection`` for ``--fail-on``, ``report-dir`` for ``--report``). Mode protect's inputs
(``PROTECT_OPTIONS``, rows of the same kind) are twins of ``reefguard protect`` (``base``, ``data``,
``validation``, ``out``, ``form``, ``weight``, ``target-modules`` and every training setting, ``lambda`` for
``--lambda``) and of ``reefguard verify-protection`` (``other``, ``other-data``, ``base-model-id``). Any value
outside the documented ones raises ``ConfigError`` naming the input, before any work is done.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.errors import ConfigError
from bot.options import (
    ACTION_OPTIONS,
    HUB_ID,
    Option,
    choice,
    input_variable,
    optional,
    parse_integer,
    parse_lines,
    parse_number,
    read_action_inputs,
)
from bot.trap2.config import FORMS, TRAINING_FLAGS, WEIGHTS, ProtectConfig

_PROTECT_DEFAULTS = ProtectConfig()


def _protect_input(name: str, default: str = "", *, dest: str | None = None, **settings: Any) -> Option:
    """A row of mode protect's inputs; each twins a ``reefguard protect`` / ``verify-protection`` flag."""
    return Option(dest=dest or name.replace("-", "_"), flag=None, action_input=name, default=default,
                  help="mode protect; action.yml describes it", **settings)  # fmt: skip


def _training_input(flag: str, field_name: str, kind: type) -> Option:
    """A training setting; empty means the ``reefguard protect`` default, so the numbers live in one place
    (``bot/trap2/config.py``)."""
    parse = parse_integer if kind is int else parse_number
    return _protect_input(flag.removeprefix("--"), dest=field_name, parse=optional(parse))


# Mode protect's inputs, rows of the same kind as the flag table's (bot/options.py), in action.yml's order.
PROTECT_OPTIONS = (
    _protect_input("base", path_in_workspace=True),
    _protect_input("data", parse=parse_lines, path_in_workspace=True),
    _protect_input("validation", parse=parse_lines, path_in_workspace=True),
    _protect_input("out", "reefguard-protect", path_in_workspace=True),
    _protect_input("form", _PROTECT_DEFAULTS.form, parse=choice(FORMS), choices=FORMS),
    _protect_input("weight", _PROTECT_DEFAULTS.weight, parse=choice(WEIGHTS), choices=WEIGHTS),
    *(_training_input(flag, field_name, kind) for flag, field_name, kind, _ in TRAINING_FLAGS),
    _protect_input("target-modules", parse=lambda text: tuple(text.split())),
    _protect_input("other", dest="others", parse=parse_lines, path_in_workspace=True),
    _protect_input("other-data", parse=parse_lines, path_in_workspace=True),
    _protect_input("base-model-id", parse=optional(HUB_ID.parse)),
)

# Environment variable (ours, not GitHub's) that scales every wait between GitHub requests; tests set it small.
WAIT_SCALE_VARIABLE = "REEFGUARD_GITHUB_WAIT_SCALE"


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionInputs:
    """The action's inputs, validated.

    Attributes:
        token: the GitHub token (``token`` input); kept out of ``repr``.
        registry: the fingerprint registry folder, relative to the workspace.
        paths: model folders or glob patterns; empty means "the folders whose weight files changed".
        probes: ``default`` or a probe file (``--probes``).
        dtype: the dtype weights are loaded in (``--dtype``).
        extraction: ``auto``, ``stream`` or ``full`` (``--extraction``).
        fail_on: the verdict level that fails the step (``--fail-on``: derived, merged, inconclusive, never).
        max_model_bytes: the largest total weight size checked; None for no limit.
        report_dir: where report files are written, relative to the workspace.
        open_issue, comment_on_pr, annotate_card: which posts the bot may make.
        mode: ``check`` (fingerprint and report) or ``protect`` (``ProtectInputs``).
    """

    token: str = field(repr=False)
    mode: str
    registry: str
    paths: tuple[str, ...]
    probes: str
    dtype: str
    extraction: str
    fail_on: str
    max_model_bytes: int | None
    report_dir: str
    open_issue: bool
    comment_on_pr: bool
    annotate_card: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectInputs:
    """The inputs of ``mode: protect``, validated; every path is relative to the workspace.

    Attributes:
        base: the base model folder or ``.gguf`` file (``reefguard protect BASE``).
        data: training text files (``--data``).
        validation: validation text files (``--validation``); the release is verified on them too.
        out: the folder for the updates, the report and the release (``--out``).
        others: other updates of the base for the merge attacks (``verify-protection --other``).
        other_data: validation text of each other update's task, same order (``--other-data``).
        base_model_id: the base's Hub id for the model card (``--base-model-id``), or None.
        config: the training settings.
    """

    base: str
    data: tuple[str, ...]
    validation: tuple[str, ...]
    out: str
    others: tuple[str, ...]
    other_data: tuple[str, ...]
    base_model_id: str | None
    config: ProtectConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerEnvironment:
    """What the Actions runner tells the step about the run.

    Attributes:
        event_name: ``GITHUB_EVENT_NAME``; event_path: ``GITHUB_EVENT_PATH``.
        repository: ``owner/name``; api_url: the REST root (GitHub Enterprise: ``https://HOST/api/v3``).
        server_url: the web root, for links; run_id: the workflow run, for links.
        workspace: the checked-out repository; sha: the commit the workflow runs on.
        wait_scale: multiplier of every wait between GitHub requests (``REEFGUARD_GITHUB_WAIT_SCALE``).
    """

    event_name: str
    event_path: Path | None
    repository: str
    api_url: str
    server_url: str
    run_id: str
    workspace: Path
    sha: str
    wait_scale: float

    @property
    def run_url(self) -> str:
        """A link to this workflow run (empty outside Actions)."""
        if not (self.repository and self.run_id):
            return ""
        return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"


def read_protect_inputs(environ: Mapping[str, str]) -> ProtectInputs:
    """Validate the ``INPUT_*`` variables of ``mode: protect`` into ``ProtectInputs``.

    Raises:
        ConfigError: a missing base, data or validation text, a path outside the workspace, a setting that is not
            a number or that ``ProtectConfig`` refuses, or ``other-data`` not matching ``other``; naming the input.
    """
    values = read_action_inputs(environ, PROTECT_OPTIONS)
    if not values["base"]:
        raise ConfigError("input base: mode protect needs the base model (a folder or .gguf file)", key="base")
    for name in ("data", "validation"):
        if not values[name]:
            raise ConfigError(f"input {name}: mode protect needs {name} text files, one per line", key=name)
    others, other_data = values["others"], values["other_data"]
    if other_data and len(other_data) != len(others):
        raise ConfigError(f"input other-data: {len(other_data)} files for {len(others)} other updates; give one "
                          "per update, in the same order", key="other-data")  # fmt: skip
    settings = {field_name: values[field_name] for _, field_name, _, _ in TRAINING_FLAGS
                if values[field_name] is not None}  # fmt: skip
    try:
        config = ProtectConfig(**settings, form=values["form"], weight=values["weight"],
                               target_modules=values["target_modules"])  # fmt: skip
    except ConfigError as e:
        name = (e.key or "").removeprefix("--")
        raise ConfigError(f"input {str(e).removeprefix('--')}", key=name) from None
    return ProtectInputs(base=values["base"], data=values["data"], validation=values["validation"], out=values["out"],
                         others=others, other_data=other_data, base_model_id=values["base_model_id"],
                         config=config)  # fmt: skip


def read_inputs(environ: Mapping[str, str]) -> ActionInputs:
    """Validate the ``INPUT_*`` variables of ``environ`` into ``ActionInputs``.

    Raises:
        ConfigError: an unknown value, an unreadable size or a path outside the workspace, naming the input.
    """
    values = read_action_inputs(environ, ACTION_OPTIONS)
    return ActionInputs(token=environ.get(input_variable("token"), "").strip(), **values)


def read_environment(environ: Mapping[str, str]) -> RunnerEnvironment:
    """The ``GITHUB_*`` variables of ``environ`` (defaults suit a local run in the current folder).

    Raises:
        ConfigError: ``GITHUB_EVENT_NAME`` is missing, or ``REEFGUARD_GITHUB_WAIT_SCALE`` is not a number.
    """
    event_name = environ.get("GITHUB_EVENT_NAME", "").strip()
    if not event_name:
        raise ConfigError(
            "GITHUB_EVENT_NAME is not set: `reefguard action` runs inside GitHub Actions "
            "(use `reefguard check` elsewhere)",
            key="GITHUB_EVENT_NAME",
        )
    scale_text = environ.get(WAIT_SCALE_VARIABLE, "1")
    try:
        wait_scale = float(scale_text)
    except ValueError:
        raise ConfigError(f"{WAIT_SCALE_VARIABLE}: {scale_text!r} is not a number", key=WAIT_SCALE_VARIABLE) from None
    event_path = environ.get("GITHUB_EVENT_PATH")
    return RunnerEnvironment(
        event_name=event_name,
        event_path=Path(event_path) if event_path else None,
        repository=environ.get("GITHUB_REPOSITORY", ""),
        api_url=environ.get("GITHUB_API_URL", "https://api.github.com"),
        server_url=environ.get("GITHUB_SERVER_URL", "https://github.com"),
        run_id=environ.get("GITHUB_RUN_ID", ""),
        workspace=Path(environ.get("GITHUB_WORKSPACE") or "."),
        sha=environ.get("GITHUB_SHA", ""),
        wait_scale=max(wait_scale, 0.0),
    )

"""The ``reefguard`` command: parse arguments, call the library, render, return an exit code.

Exit codes are a contract (``ExitCode``): 0 nothing found at the ``--fail-on`` level, 1 finding, 2 usage or
configuration error, 3 any other reefguard error (one line on stderr, no traceback), 4 unexpected error
(traceback, please report), 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot import _output
from bot.errors import ConfigError, ReefguardError, RegistryError
from bot.exit_codes import FAIL_ON, ExitCode
from bot.hub import commands as hub_commands
from bot.options import CHECK_OPTIONS, HUB_ID, MODEL_OPTIONS, REGISTRY, add_options, model_arguments
from bot.trap2 import commands as trap2_commands

if TYPE_CHECKING:
    from bot.reef import Fingerprint, Report
    from bot.registry import Registry

logger = logging.getLogger("bot")


def _registry(args: argparse.Namespace) -> Registry:
    from bot.registry import Registry

    return Registry(Path(args.registry))


def _fingerprint(
    args: argparse.Namespace,
    model: str,
    *,
    name: str | None = None,
    role: str = "source",
    related: Sequence[str] = (),
) -> Fingerprint:
    from bot._http import hub_token
    from bot.engine import fingerprint

    return fingerprint(
        model,
        name=name,
        role=role,
        related=related,
        standardize=not args.no_standardize,
        show_progress=not args.quiet,
        token=hub_token(),
        **model_arguments(vars(args)),
    )


def _render(report: Report, args: argparse.Namespace) -> None:
    from bot import report as rendering

    if args.report_dir:
        path = rendering.write_report(report, Path(args.report_dir))
        logger.info("report written to %s", path)
    _output.write(rendering.render_json(report) if args.json else rendering.render_table(report))


def _check_report_folder(args: argparse.Namespace) -> None:
    """A ``--report`` folder that is a file or read-only fails before the model is loaded."""
    from bot.registry import folder_write_problem

    problem = folder_write_problem(Path(args.report_dir)) if args.report_dir else None
    if problem is not None:
        raise ConfigError(f"--report {args.report_dir}: cannot write the report there, {problem}", key="report")


def cmd_fingerprint(args: argparse.Namespace) -> ExitCode:
    from bot.engine import default_name
    from bot.sources import ModelSource

    registry = _registry(args)
    # Fail before the slow part: a bad or taken name, a registry path that is a file or read-only.
    source = ModelSource.parse(args.model)
    registry.check_can_add(args.name or default_name(source), replace=args.replace)
    fp = _fingerprint(args, args.model, name=args.name, role=args.role, related=args.related)
    hub_id = args.hub_id or (source.ref if source.kind == "hub" else None)
    fp = dataclasses.replace(fp, hub_id=hub_id) if hub_id else fp
    folder = registry.add(fp, replace=args.replace)
    _output.write(
        f"added {fp.name} ({fp.architecture}, {len(fp.layers)} of {fp.n_layers} blocks, "
        f"{fp.n_probes} probes, digest {fp.digest[:12]}) to {folder}"
    )
    return ExitCode.OK


def cmd_check(args: argparse.Namespace) -> ExitCode:
    from bot.engine import compare

    registry = _registry(args)
    registry.names()  # a missing registry fails before the model is loaded
    _check_report_folder(args)
    fp = _fingerprint(args, args.model)
    report = compare(fp, registry, measure=args.measure, alpha=args.alpha, conditioned=not args.raw)
    _render(report, args)
    return ExitCode.FINDING if str(report.verdict) in FAIL_ON[args.fail_on] else ExitCode.OK


def cmd_compare(args: argparse.Namespace) -> ExitCode:
    import json

    from bot.reef import pair_grid
    from bot.report import render_grid

    registry = _registry(args)
    known = set(registry.names()) if registry.root.is_dir() else set()
    a, b = (registry.get(ref) if ref in known else _fingerprint(args, ref) for ref in (args.a, args.b))
    grid, score = pair_grid(a, b, measure=args.measure, conditioned=not args.raw)
    if args.json:
        data = {"a": a.name, "b": b.name, "measure": args.measure, "score": round(score, 4),
                "a_layers": list(a.layers), "b_layers": list(b.layers), "grid": grid.round(4).tolist()}  # fmt: skip
        _output.write(json.dumps(data, indent=2))
    else:
        _output.write(render_grid(grid, a, b, score=score, measure=args.measure))
    return ExitCode.OK


def cmd_registry(args: argparse.Namespace) -> ExitCode:
    import json

    registry = _registry(args)
    if args.action == "list":
        entries = list(registry)
        if args.json:
            _output.write(json.dumps([fp.to_dict() for fp in entries], indent=2))
        else:
            rows = [f"{fp.name:<28} {fp.role:<9} {fp.architecture:<28} {len(fp.layers):>3}/{fp.n_layers:<3} "
                    f"{fp.probe_set}:{fp.probe_sha256[:8]}  {fp.hub_id or fp.model}" for fp in entries]  # fmt: skip
            _output.write("\n".join(rows) if rows else f"{registry.root}: empty registry")
    elif args.action == "show":
        fp = registry.get(args.name)
        _output.write(json.dumps(fp.to_dict(), indent=2))
    elif args.action == "set":
        if args.hub_id is None:
            raise ConfigError("registry set: give what to set, --hub-id ORG/NAME", key="hub-id")
        registry.set_hub_id(args.name, args.hub_id)
        _output.write(f"{args.name}: hub_id {args.hub_id}")
    elif args.action == "calibrate":
        if not registry.recalibrate():
            raise RegistryError(
                f"{registry.root}: no calibration kept: the entries use other probes, or the folder cannot be "
                "written (see -v)",
                path=registry.root,
            )
        _output.write(f"{registry.root}: calibration kept for {len(registry.names())} entries")
    else:
        registry.remove(args.name)
        _output.write(f"removed {args.name} from {registry.root}")
    return ExitCode.OK


def _verbosity_options(parser: argparse.ArgumentParser, *, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log what happens to stderr")
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="only errors on stderr, no progress bars"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None if default is False else default,
        metavar="N",
        help="CPU threads for torch (default: $REEFGUARD_THREADS, else $OMP_NUM_THREADS, else the idle cores)",
    )


def _model_options(parser: argparse.ArgumentParser) -> None:
    add_options(parser, MODEL_OPTIONS)
    parser.add_argument("--no-standardize", action="store_true", help="skip REEF's per-feature z-scoring")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (kept separate so tests and docs can inspect it)."""
    parser = argparse.ArgumentParser(prog="reefguard", description=__doc__.splitlines()[0])
    _verbosity_options(parser, default=False)
    # -v/-q also after the command; SUPPRESS keeps a subcommand's unset flag from overwriting the top level's.
    verbosity = argparse.ArgumentParser(add_help=False)
    _verbosity_options(verbosity, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fp = commands.add_parser("fingerprint", parents=[verbosity], help="fingerprint a model and add it to the registry")
    fp.add_argument("model", help="model folder, .gguf file, adapter folder or org/name@revision")
    fp.add_argument("--name", help="registry name (default: from the model reference)")
    fp.add_argument("--role", default="source", choices=("source", "reference"),
                    help="'reference' entries only calibrate the null")  # fmt: skip
    fp.add_argument("--related", nargs="*", default=[], metavar="NAME", help="registry names it derives from")
    fp.add_argument("--replace", action="store_true", help="overwrite an entry of the same name")
    _model_options(fp)
    add_options(fp, (HUB_ID, REGISTRY))

    check = commands.add_parser("check", parents=[verbosity], help="check a model against every registry source")
    check.add_argument("model", help="model folder, .gguf file, adapter folder or org/name@revision")
    add_options(check, CHECK_OPTIONS)

    cmp = commands.add_parser(
        "compare", parents=[verbosity], help="layer-by-layer CKA grid of two models or registry entries"
    )
    cmp.add_argument("a")
    cmp.add_argument("b")
    for sub in (check, cmp):
        sub.add_argument("--measure", default="linear", choices=("linear", "debiased", "rbf"))
        sub.add_argument("--json", action="store_true", help="JSON on stdout (schema in docs/how-it-works.md)")
        sub.add_argument(
            "--raw", action="store_true", help="REEF's plain CKA, without projecting out the probes' surface"
        )
        _model_options(sub)
        add_options(sub, (REGISTRY,))

    reg = commands.add_parser(
        "registry", parents=[verbosity], help="list, show, set or remove registry entries, or keep their calibration"
    )
    reg.add_argument("action", choices=("list", "show", "set", "remove", "calibrate"))
    reg.add_argument("name", nargs="?", help="entry name or weight sha256 (show, set, remove)")
    reg.add_argument("--json", action="store_true")
    add_options(reg, (HUB_ID, REGISTRY))

    action = commands.add_parser("action", help="run as the GitHub Action (reads the INPUT_* and GITHUB_* variables)")
    for sub, handler in ((fp, cmd_fingerprint), (check, cmd_check), (cmp, cmd_compare), (reg, cmd_registry),
                         (action, cmd_action)):  # fmt: skip
        sub.set_defaults(handler=handler)
    # The integrations declare their own subcommands; their modules import nothing heavy at load time.
    hub_commands.register(commands, parents=[verbosity])
    trap2_commands.register(commands, parents=[verbosity])
    return parser


def cmd_action(args: argparse.Namespace) -> ExitCode:
    from bot.github.action import run

    return ExitCode(run(os.environ))


class _RedactingFormatter(logging.Formatter):
    """Our log lines on one line each, with tokens masked (``_output.redact``)."""

    def format(self, record: logging.LogRecord) -> str:
        return _output.redact(super().format(record))


def _configure_logging(args: argparse.Namespace) -> None:
    level_name = os.environ.get("REEFGUARD_LOG_LEVEL", "INFO" if args.verbose else "ERROR" if args.quiet else "WARNING")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("reefguard: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level_name.upper())
    logger.propagate = False
    # The libraries' own chatter (transformers' LOAD REPORT tables and config warnings, Python warnings from
    # peft and torch) is not for users: it reaches stderr only with -v, through our handler.
    library_level = logging.INFO if args.verbose else logging.ERROR
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if args.verbose else "error")
    logging.captureWarnings(True)
    for name in ("transformers", "py.warnings"):
        library = logging.getLogger(name)
        library.handlers[:] = [handler]
        library.setLevel(library_level)
        library.propagate = False
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported before main() (in-process callers): switch its bars off too
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if args.quiet:
        os.environ["REEFGUARD_NO_PROGRESS"] = "1"


def thread_count(requested: int | None, environ: Mapping[str, str]) -> int | None:
    """The torch thread count for this run, or None to leave ``OMP_NUM_THREADS`` as the environment set it.

    ``--threads`` first, then ``REEFGUARD_THREADS``, then an ``OMP_NUM_THREADS`` already set; otherwise the cores
    this process may use minus the 1-minute load average, at least 1. Measured on 2 cores busy with other work
    (load average 4.5-5.6), ``check demo/models/finetune`` took 51-68 s with torch's default of 2 threads and
    18.6-19.1 s with 1 (this policy chose 1: 17.9-18.9 s); OpenMP threads that wait for a busy core spin instead
    of working. On idle cores every core is used, as torch's default does.

    Raises:
        ConfigError: ``--threads`` or ``REEFGUARD_THREADS`` is not a positive integer.
    """
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--threads {requested}: must be at least 1", key="threads")
        return requested
    named = environ.get("REEFGUARD_THREADS", "").strip()
    if named:
        if not named.isdigit() or int(named) < 1:
            raise ConfigError(f"REEFGUARD_THREADS={named!r}: must be a positive integer", key="REEFGUARD_THREADS")
        return int(named)
    if environ.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, round(cores - os.getloadavg()[0])))


def apply_threads(count: int | None) -> None:
    """Set the thread count where torch and its OpenMP runtime read it: the environment, before torch is
    imported (it is imported lazily; child processes inherit it), and torch itself if it is loaded already.

    Args:
        count: threads, or None to change nothing (``thread_count``'s answer when the environment decides).
    """
    if count is None:
        return
    os.environ["OMP_NUM_THREADS"] = str(count)
    os.environ["MKL_NUM_THREADS"] = str(count)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``reefguard`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors and 0 on --help
        return int(e.code or 0)
    _configure_logging(args)
    if args.command == "registry" and args.action not in {"list", "calibrate"} and not args.name:
        _output.error(f"reefguard: error: registry {args.action} needs a NAME")
        return ExitCode.USAGE
    try:
        apply_threads(thread_count(args.threads, os.environ))  # once, here: every command inherits it
        return ExitCode(args.handler(args))
    except ConfigError as e:
        _output.error(f"reefguard: error: {e}")
        return ExitCode.USAGE
    except ReefguardError as e:
        _output.error(f"reefguard: error: {e}")
        return ExitCode.ERROR
    except KeyboardInterrupt:
        _output.error("reefguard: interrupted")
        return ExitCode.INTERRUPTED
    except RecursionError:  # a JSON or YAML input nested thousands deep, met where no reader names the file
        _output.error("reefguard: error: an input file is nested too deeply to read (JSON or YAML); check it")
        return ExitCode.ERROR
    except MemoryError:
        _output.error("reefguard: error: out of memory; an input declares sizes this machine cannot hold")
        return ExitCode.ERROR
    except Exception:
        _output.error(traceback.format_exc())
        _output.error("reefguard: unexpected error; please report it with the traceback above")
        return ExitCode.UNEXPECTED


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``reefguard`` subcommands of ``bot.trap2``: parsers and thin handlers (heavy imports inside handlers).

- ``reefguard protect BASE --data FILE --out DIR``: train the protected update and its twin (exit 0, 2 bad input,
  3 a model that does not load or a run without a usable checkpoint).
- ``reefguard verify-protection BASE PROTECTED --data FILE [--twin DIR] [--other DIR ...]``: scale sweep and merge
  attacks; optionally ``--release DIR`` (plus ``--push-to ORG/NAME`` or ``--copy-to PATH``). Exit 0 when every
  check holds, 1 when one fails (the protection is weak), 2 or 3 on errors.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bot import _output
from bot.trap2.config import FORMS, TRAINING_FLAGS, WEIGHTS, ProtectConfig

_DEFAULTS = ProtectConfig()


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add this package's subcommands to `commands`; each sets `handler` (args -> exit code) as a default."""
    protect = commands.add_parser(
        "protect", parents=parents, help="train a Trap²-protected update (LoRA or full) and its unprotected twin"
    )
    protect.add_argument("base", help="local base model folder or .gguf file")
    protect.add_argument("--data", action="append", required=True, metavar="FILE", help="training text (repeatable)")
    protect.add_argument("--validation", action="append", default=[], metavar="FILE",
                         help="validation text (default: the last 10%% of the training text)")  # fmt: skip
    protect.add_argument("--out", required=True, metavar="DIR", help="writes DIR/protected and DIR/twin")
    protect.add_argument("--form", choices=FORMS, default=_DEFAULTS.form, help="release form (default: lora)")
    protect.add_argument("--weight", choices=WEIGHTS, default=_DEFAULTS.weight, help="w(s) (default: inv_sqrt)")
    for flag, name, kind, text in TRAINING_FLAGS:
        protect.add_argument(flag, dest=name, type=kind, default=None,
                             help=f"{text} (default: {getattr(_DEFAULTS, name)})")  # fmt: skip
    protect.add_argument("--target-modules", nargs="+", default=[], metavar="NAME",
                         help="LoRA target modules (default: every linear layer but the LM head)")  # fmt: skip
    protect.add_argument("--no-twin", action="store_true", help="skip the unprotected twin")
    protect.add_argument("--json", action="store_true", help="JSON summary on stdout")
    protect.set_defaults(handler=cmd_protect)

    verify = commands.add_parser(
        "verify-protection", parents=parents, help="scale sweep and merge attacks on a protected update; release it"
    )
    verify.add_argument("base", help="the base model the update was trained on")
    verify.add_argument("protected", help="the protected update (adapter or model folder from `reefguard protect`)")
    verify.add_argument("--data", action="append", required=True, metavar="FILE", help="validation text of its task")
    verify.add_argument("--twin", help="the unprotected twin, for comparison")
    verify.add_argument("--other", action="append", default=[], metavar="DIR", help="another update of the base")
    verify.add_argument("--other-data", action="append", default=[], metavar="FILE",
                        help="validation text of each --other update's task, in the same order")  # fmt: skip
    verify.add_argument("--context", type=int, default=64, help="tokens per validation window (default 64)")
    verify.add_argument("--max-windows", type=int, default=64, help="validation windows (default 64)")
    verify.add_argument("--report", metavar="DIR", help="write report.md, report.json and scale_sweep.png here")
    verify.add_argument("--json", action="store_true", help="JSON report on stdout")
    verify.add_argument("--release", metavar="DIR", help="write a release folder (weights, tokenizer, model card)")
    verify.add_argument("--base-model-id", help="the base's Hub id for the model card's base_model")
    verify.add_argument("--push-to", metavar="ORG/NAME", help="upload the release folder to this Hub repo")
    verify.add_argument("--copy-to", metavar="PATH", help="copy the release folder's files into PATH")
    verify.set_defaults(handler=cmd_verify)


def cmd_protect(args: argparse.Namespace) -> int:
    """Train the protected update and its twin; print where they went and how training went."""
    from bot.trap2.training import protect

    given = {name: getattr(args, name) for _, name, _, _ in TRAINING_FLAGS if getattr(args, name) is not None}
    config = ProtectConfig(form=args.form, weight=args.weight, target_modules=tuple(args.target_modules), **given)
    run = protect(Path(args.base), [Path(p) for p in args.data], Path(args.out), config=config,
                  validation=[Path(p) for p in args.validation], twin=not args.no_twin,
                  show_progress=not args.quiet)  # fmt: skip
    summaries = {"protected": (run.protected, run.protected_summary), "twin": (run.twin, run.twin_summary)}
    if args.json:
        data = {name: {"path": str(path), **summary.to_dict()}
                for name, (path, summary) in summaries.items() if path is not None and summary is not None}  # fmt: skip
        _output.write(json.dumps(data, indent=2))
        return 0
    for name, (path, summary) in summaries.items():
        if path is None or summary is None:
            continue
        trap = {True: ", trap formed", False: ", TRAP DID NOT FORM (raise --lambda or --steps)", None: ""}
        _output.write(
            f"{name}: {path} (λ={summary.lam:g}, kept nominal val loss {summary.best_val_loss:.4f} at step "
            f"{summary.best_step} of {summary.steps_run}{trap[summary.trap_formed]}, {summary.skipped_steps} "
            f"non-finite steps skipped{', stopped early' if summary.stopped_early else ''}, "
            f"{summary.train_seconds:.0f}s)"
        )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify a protected update, write the report and (optionally) the release; exit 1 if a check fails."""
    from bot.cards import parse_hub_id
    from bot.trap2.release import BASE_MODEL_FLAG, copy_release, push_release, write_release
    from bot.trap2.verification import render_markdown, verify, write_report

    if args.base_model_id is not None:  # before the verification's minutes, not after
        parse_hub_id(args.base_model_id, key=BASE_MODEL_FLAG)
    report = verify(
        Path(args.base),
        Path(args.protected),
        data=[Path(p) for p in args.data],
        twin=Path(args.twin) if args.twin else None,
        others=[Path(p) for p in args.other],
        other_data=[Path(p) for p in args.other_data],
        context=args.context,
        max_windows=args.max_windows,
    )
    if args.report:
        write_report(report, Path(args.report))
    _output.write(json.dumps(report.to_dict(), indent=2) if args.json else render_markdown(report))
    if args.release:
        base = Path(args.base)
        folder = write_release(Path(args.protected), Path(args.release), base_model=args.base_model_id,
                               report=report, tokenizer_from=base if base.is_dir() else None)  # fmt: skip
        if args.copy_to:
            copy_release(folder, Path(args.copy_to))
        if args.push_to:
            from bot._http import hub_token, make_api

            api = make_api(token=hub_token())
            _output.error(f"pushed release: {push_release(folder, args.push_to, api=api)}")
    return 0 if report.passed else 1

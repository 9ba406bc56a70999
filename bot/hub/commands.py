"""The ``reefguard hub`` subcommands: parsers and thin handlers (heavy imports inside handlers).

``hub scan`` lists and checks Hub models, ``hub merge-reports`` joins shard reports and states, ``hub annotate``
posts findings (dry run unless ``--write``), ``hub serve`` receives webhooks, ``hub add-references`` fingerprints
the committed list of public base models as the registry's null (``bot.hub.references``). The Hub token comes from
``HF_TOKEN`` only (never a flag: command lines show in process lists and CI logs); the webhook secret from
``REEFGUARD_WEBHOOK_SECRET``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bot import _output
from bot.errors import ConfigError
from bot.options import ALPHA, BATCH_SIZE, DTYPE, PROBES, REGISTRY, add_options

if TYPE_CHECKING:
    from bot.hub.client import Budget
    from bot.hub.results import ScanReport
    from bot.hub.scan import ScanOptions

DEFAULT_REFERENCE_LIST = Path("fingerprints") / "references.yaml"
OK, FINDING = 0, 1


def _amount(parse: Callable[[str], int], text: str | None, *, key: str) -> int | None:
    """``parse(text)`` (``bot.sizes``) with the flag named in the error; None when the flag is not given.

    Raises:
        ConfigError: naming the flag.
    """
    if text is None:
        return None
    try:
        return parse(text)
    except ConfigError as e:
        raise ConfigError(f"--{key} {e}", key=key) from None


def _pairs(values: list[str], *, key: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, repo = value.partition("=")
        if not sep or not name or not repo:
            raise ConfigError(f"--{key} {value!r}: use NAME=ORG/REPO", key=key)
        pairs[name.strip()] = repo.strip()
    return pairs


def _hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", help="Hub URL (default: $HF_ENDPOINT or https://huggingface.co)")


def _model_options(parser: argparse.ArgumentParser) -> None:
    """How Hub models are fetched and fingerprinted, for every command that fingerprints them."""
    add_options(parser, (REGISTRY, PROBES, DTYPE, BATCH_SIZE))
    parser.add_argument("--max-params", help="skip models with more parameters, e.g. 1.5B (read from headers)")
    parser.add_argument("--max-seconds", type=float, help="wall-time cap for the run")
    parser.add_argument("--cache-dir", help="Hugging Face cache folder (default: huggingface_hub's)")
    _hub_options(parser)


def _check_options(parser: argparse.ArgumentParser) -> None:
    """Everything that decides how one model is checked and where results go (scan and serve)."""
    parser.add_argument("--state", default="hub-state.json", help="state file of model versions already done")
    parser.add_argument("--out", default="hub-report", help="folder for hub-report.json and hub-report.md")
    parser.add_argument(
        "--source-repo",
        action="append",
        default=[],
        metavar="NAME=ORG/REPO",
        help="Hub repo of a registry source, to compare with declared base_model; overrides the entry's hub_id "
        "(repeatable)",
    )
    parser.add_argument("--max-download", help="download cap for the run, e.g. 20GB")
    parser.add_argument("--no-triage", action="store_true",
                        help="skip stage 1 (a weight verdict from the anchor rows read by Range): download and "
                        "fingerprint every candidate")  # fmt: skip
    add_options(parser, (ALPHA,))
    _model_options(parser)


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add ``reefguard hub scan|merge-reports|annotate|serve|add-references``; each sets ``handler``."""
    hub = commands.add_parser("hub", parents=parents, help="scan the Hugging Face Hub, annotate findings, webhooks")
    sub = hub.add_subparsers(dest="hub_command", required=True, metavar="HUB_COMMAND")

    scan = sub.add_parser("scan", parents=parents, help="check Hub models against the registry (exit 1 on findings)")
    scan.add_argument("--author", help="only this user's or org's models")
    scan.add_argument("--search", help="only repo ids containing this")
    scan.add_argument("--tag", action="append", default=[],
                      help="only models with this tag, e.g. base_model:finetune:org/name (repeatable)")  # fmt: skip
    scan.add_argument("--since", help="only models modified since this date (ISO 8601)")
    scan.add_argument("--limit", type=int, help="list at most this many models (newest first, before sharding)")
    scan.add_argument("--shard", help="i/N: check only the i-th of N deterministic shards (1-based)")
    scan.add_argument("--annotate", action="store_true", help="then annotate the findings (see hub annotate)")
    scan.add_argument("--write", action="store_true", help="with --annotate: really post (needs HF_TOKEN)")
    _check_options(scan)
    scan.set_defaults(handler=cmd_scan)

    merge = sub.add_parser("merge-reports", parents=parents, help="join shard reports (and states) into one")
    merge.add_argument("reports", nargs="+", help="hub-report.json files or the folders holding them")
    merge.add_argument("--out", default="hub-report", help="folder for the merged report")
    merge.add_argument("--states", nargs="*", default=[], help="shard state files to join")
    merge.add_argument("--state-out", default="hub-state.json", help="where the joined state goes (with --states)")
    merge.set_defaults(handler=cmd_merge_reports)

    annotate = sub.add_parser(
        "annotate",
        parents=parents,
        help="post a discussion per finding or a card PR on your repos (dry run by default)",
    )
    annotate.add_argument("report", help="a hub-report.json or its folder")
    annotate.add_argument("--write", action="store_true", help="really post (needs HF_TOKEN); default: dry run")
    annotate.add_argument("--json", action="store_true", help="JSON on stdout")
    _hub_options(annotate)
    annotate.set_defaults(handler=cmd_annotate)

    serve = sub.add_parser("serve", parents=parents,
                           help="receive Hub webhooks (repo.content) and scan pushed revisions")  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--queue", default="hub-queue.sqlite", help="the persisted event queue")
    serve.add_argument("--max-queue", type=int, default=1000, help="pending events before answering 503")
    _check_options(serve)
    serve.set_defaults(handler=cmd_serve)

    refs = sub.add_parser(
        "add-references", parents=parents, help="fingerprint the listed public base models the registry lacks"
    )
    refs.add_argument("--list", default=str(DEFAULT_REFERENCE_LIST),
                      help=f"the reference list (default {DEFAULT_REFERENCE_LIST})")  # fmt: skip
    refs.add_argument("--only", nargs="*", default=[], metavar="NAME", help="only these names of the list")
    _model_options(refs)
    refs.set_defaults(handler=cmd_add_references)


def _quiet_hub_library(args: argparse.Namespace) -> None:
    """huggingface_hub's own warnings (each retried download, each resume) only with ``-v``, and its download
    bars only where ours show: a failed model is one line in the report, not a screenful on stderr.

    The library reads ``HF_HUB_DISABLE_PROGRESS_BARS`` once, at import, so the CLI's setting comes too late.
    """
    import logging

    from huggingface_hub.utils.tqdm import disable_progress_bars

    from bot.progress import progress_enabled

    if not getattr(args, "verbose", False):
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    if not progress_enabled():
        disable_progress_bars()


def _budget(args: argparse.Namespace) -> Budget:
    from bot.hub.client import Budget
    from bot.sizes import parse_bytes

    max_download = _amount(parse_bytes, args.max_download, key="max-download")
    return Budget(max_download_bytes=max_download, max_seconds=args.max_seconds)


def _options(args: argparse.Namespace, source_repos: dict[str, str]) -> ScanOptions:
    from bot._http import hub_token
    from bot.hub.scan import ScanOptions
    from bot.sizes import parse_parameters

    return ScanOptions(
        probes=args.probes,
        dtype=args.dtype,
        batch_size=args.batch_size,
        alpha=args.alpha,
        max_params=_amount(parse_parameters, args.max_params, key="max-params"),
        source_repos=source_repos,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        endpoint=args.endpoint,
        token=hub_token(),
        triage=not args.no_triage,
    )


def _summary(report: ScanReport, folder: Path) -> str:
    lines = [
        f"{result.repo_id}@{result.sha[:12]}: {finding.kind} ({finding.detail})" for result, finding in report.findings
    ]
    counts = report.to_dict()["counts"]
    lines.append(
        f"{len(report.results)} model versions: {counts['checked']} checked, {counts['skipped']} skipped, "
        f"{counts['error']} failed, {report.reused} reused; {counts['findings']} findings; report in {folder}"
    )
    return "\n".join(lines)


def cmd_scan(args: argparse.Namespace) -> int:
    from bot._http import make_api
    from bot.errors import RemoteError
    from bot.hub.results import ScanReport, ScanState, write_scan_report
    from bot.hub.scan import Selection, Shard, list_candidates, parse_since, scan, source_repo_map
    from bot.registry import Registry

    if args.write and not args.annotate:
        raise ConfigError("--write posts annotations; add --annotate", key="write")
    shard = Shard.parse(args.shard) if args.shard else None
    selection = Selection(author=args.author, search=args.search, tags=tuple(args.tag),
                          since=parse_since(args.since) if args.since else None, limit=args.limit)  # fmt: skip
    registry = Registry(Path(args.registry))
    options = _options(args, source_repo_map(registry, _pairs(args.source_repo, key="source-repo")))
    state = ScanState.load(Path(args.state))
    budget = _budget(args)
    _quiet_hub_library(args)
    api = make_api(args.endpoint, options.token)
    folder = Path(args.out)
    try:
        candidates = list_candidates(api, selection, budget=budget)
    except RemoteError:  # nothing listed: the report says so, the error line says why (exit 3)
        shards = (str(shard),) if shard else ("all",)
        write_scan_report(ScanReport(shards=shards, results=(), reused=0, usage=budget.usage()), folder)
        raise
    report = scan(api, candidates, registry=registry, state=state, options=options, budget=budget, shard=shard)
    write_scan_report(report, folder)
    _output.write(_summary(report, folder))
    if args.annotate:
        _annotate(api, report, write=args.write, token=options.token, budget=budget, as_json=False)
    return FINDING if report.findings else OK


def cmd_merge_reports(args: argparse.Namespace) -> int:
    from bot.hub.results import ScanState, merge_reports, merge_states, read_report, write_scan_report

    report = merge_reports([read_report(Path(path)) for path in args.reports])
    folder = Path(args.out)
    write_scan_report(report, folder)
    if args.states:
        merge_states([ScanState.load(Path(path)) for path in args.states], Path(args.state_out)).save()
    _output.write(_summary(report, folder))
    return FINDING if report.findings else OK


def _annotate(
    api: object, report: ScanReport, *, write: bool, token: str | None, budget: Budget, as_json: bool
) -> None:
    import json

    from bot.hub.annotate import annotate, whoami

    if write and not token:
        raise ConfigError("--write needs a Hub token of the bot account in HF_TOKEN", key="write")
    identity = whoami(api, budget=budget) if token else None  # type: ignore[arg-type]
    annotations = annotate(api, report.results, identity=identity, write=write, budget=budget)  # type: ignore[arg-type]
    if as_json:
        _output.write(json.dumps([a.to_dict() for a in annotations], indent=2))
        return
    rows = [f"{a.action:<22} {a.kind:<10} {a.repo_id} {a.source}" + (f" #{a.number}" if a.number else "")
            + (f": {a.reason}" if a.reason else "") for a in annotations]  # fmt: skip
    mode = "" if write else " (dry run: nothing posted; add --write)"
    _output.write("\n".join([*rows, f"{len(annotations)} annotations{mode}"]))


def cmd_annotate(args: argparse.Namespace) -> int:
    from bot._http import hub_token, make_api
    from bot.hub.client import Budget
    from bot.hub.results import read_report

    report = read_report(Path(args.report))
    token = hub_token()
    _annotate(make_api(args.endpoint, token), report, write=args.write, token=token, budget=Budget(),
              as_json=args.json)  # fmt: skip
    return OK


def revision_scanner(args: argparse.Namespace) -> Callable[[str, str], str]:
    """``scan_one(repo_id, sha) -> note`` for the webhook worker: scan one revision, update state and report."""
    from bot._http import make_api
    from bot.hub.results import ScanReport, ScanState, write_scan_report
    from bot.hub.scan import candidate_at, scan, source_repo_map
    from bot.registry import Registry

    registry = Registry(Path(args.registry))
    options = _options(args, source_repo_map(registry, _pairs(args.source_repo, key="source-repo")))
    _quiet_hub_library(args)
    api = make_api(args.endpoint, options.token)
    state_path, folder = Path(args.state), Path(args.out)

    def scan_one(repo_id: str, sha: str) -> str:
        budget = _budget(args)
        state = ScanState.load(state_path)
        candidate = candidate_at(api, repo_id, sha, budget=budget)
        run = scan(api, [candidate], registry=registry, state=state, options=options, budget=budget)
        known = ScanReport(shards=("webhook",), results=tuple(state.results.values()), reused=0, usage=run.usage)
        write_scan_report(known, folder)
        return "; ".join(f"{result.status}: {result.reason}" for result in run.results)

    return scan_one


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.hub.webhook import EventQueue, WebhookServer, Worker

    secret = os.environ.get("REEFGUARD_WEBHOOK_SECRET", "")
    scan_one = revision_scanner(args)
    queue = EventQueue(Path(args.queue), max_pending=args.max_queue)
    server = WebhookServer(queue, secret=secret, host=args.host, port=args.port)
    worker = Worker(queue, scan_one).start()
    _output.error(f"reefguard: listening on {server.url} (queue {queue.path})")
    try:
        server.serve_forever()
    finally:
        worker.stop()
        server.stop()
        queue.close()
    return OK


def cmd_add_references(args: argparse.Namespace) -> int:
    """Exit 0 when every listed model is in the registry or skipped for good, 3 when some failed (retry)."""
    from bot._http import hub_token, make_api
    from bot.errors import RemoteError
    from bot.hub.client import Budget
    from bot.hub.references import Outcome, ReferenceOptions, add_references, load_reference_list
    from bot.registry import Registry
    from bot.sizes import parse_parameters

    listed = load_reference_list(Path(args.list))
    unknown = sorted(set(args.only) - {model.name for model in listed})
    if unknown:
        raise ConfigError(f"--only {' '.join(unknown)}: not in {args.list}", key="only")
    chosen = [model for model in listed if not args.only or model.name in args.only]
    registry = Registry(Path(args.registry))
    registry.root.mkdir(parents=True, exist_ok=True)
    token = hub_token()
    options = ReferenceOptions(
        probes=args.probes,
        dtype=args.dtype,
        batch_size=args.batch_size,
        max_params=_amount(parse_parameters, args.max_params, key="max-params"),
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        endpoint=args.endpoint,
        token=token,
    )
    _quiet_hub_library(args)
    api = make_api(args.endpoint, token)
    results = add_references(api, chosen, registry=registry, options=options,
                             budget=Budget(max_seconds=args.max_seconds))  # fmt: skip
    rows = [f"{r.outcome:<8} {r.name:<28} {r.repo}@{(r.revision or '?')[:12]}: {r.reason}" for r in results]
    counts = {outcome: sum(r.outcome is outcome for r in results) for outcome in Outcome}
    rows.append(", ".join(f"{n} {outcome}" for outcome, n in counts.items()) + f"; registry {registry.root}")
    _output.write("\n".join(rows))
    if counts[Outcome.FAILED]:
        failed = [r.name for r in results if r.outcome is Outcome.FAILED]
        raise RemoteError(f"{len(failed)} reference models failed ({', '.join(failed)}); the others are written, "
                          "rerun to retry", service="hub")  # fmt: skip
    return OK

"""What a Hub scan produces: per-model results, findings, the state file and the scan report.

Files (all JSON with ``schema_version``, written to a temporary file and renamed into place, so a killed scan
leaves either the old or the new file, never half of one):

- the **state** file maps ``repo@sha`` to the result of every model version already scanned or skipped for
  good; a rerun skips those without a request, and a scan killed half-way resumes with everything it finished;
- the **report** (``hub-report.json`` + ``hub-report.md``) lists the results of one run's candidates (fresh and
  from the state), its budget use, and the findings: undeclared derivatives and wrong ``base_model`` claims.

Shard reports and states join with ``merge_reports`` / ``merge_states``: the union keyed by ``repo@sha``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from bot.errors import ConfigError
from bot.hub.client import BudgetUsage
from bot.sizes import format_bytes

SCHEMA_VERSION = 1
REPORT_JSON = "hub-report.json"
REPORT_MARKDOWN = "hub-report.md"
UNDECLARED = "undeclared-derivative"  # derived or merged from a source; the card declares no base
OTHER_DECLARATION = "other-declaration"  # derived or merged from a source; the card declares other bases only
WRONG_DECLARATION = "wrong-declaration"  # the card declares a source; its weights are unrelated to it


class Status(StrEnum):
    """What happened to one model version."""

    CHECKED = "checked"  # fingerprinted and compared with the registry
    SKIPPED = "skipped"  # cannot or must not be fingerprinted (pickles, remote code, too large, gone); final
    ERROR = "error"  # the Hub failed or the budget ran out; retried by the next run


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """A disagreement between a repo's declared lineage and its fingerprints.

    Attributes:
        kind: ``UNDECLARED`` (derived or merged, the card declares no base), ``OTHER_DECLARATION`` (derived or
            merged, ``base_model`` names other models only) or ``WRONG_DECLARATION`` (``base_model`` names a source
            the fingerprints call unrelated).
        source: the registry source name; source_repo its Hub repo id, if known.
        relation: the ``base_model_relation`` the evidence suggests (``finetune`` or ``merge``).
        detail: one sentence for people.
    """

    kind: str
    source: str
    source_repo: str | None
    relation: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "source_repo": self.source_repo,
            "relation": self.relation,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(
            kind=str(data["kind"]),
            source=str(data["source"]),
            source_repo=data.get("source_repo"),
            relation=str(data["relation"]),
            detail=str(data["detail"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelResult:
    """The outcome for one model version (``repo@sha``).

    Attributes:
        repo_id, sha: the model and the commit its files came from.
        status: checked, skipped or error; reason says why (a skip) or what was found (the verdict line).
        verdict, sources: the reefguard verdict and the sources it names (checked models only).
        declared, relation: the ``base_model`` ids and ``base_model_relation`` the card declares.
        gated, private: access flags the Hub listed (annotations skip such repos).
        findings: declared lineage vs fingerprints.
        evidence_markdown: the rendered check report, posted as the evidence of a finding.
        stage: which stage decided a checked model: 1 (unrelated on the weights read by Range) or 2 (the full
            check); None for skips, errors and results of older scans.
        stage_bytes: bytes each stage read, in stage order: (stage 1,) or (stage 1, stage 2).
    """

    repo_id: str
    sha: str
    status: Status
    reason: str
    verdict: str | None = None
    sources: tuple[str, ...] = ()
    declared: tuple[str, ...] = ()
    relation: str | None = None
    gated: bool = False
    private: bool = False
    findings: tuple[Finding, ...] = ()
    evidence_markdown: str | None = field(default=None, repr=False)
    stage: int | None = None
    stage_bytes: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.repo_id}@{self.sha}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "sha": self.sha,
            "status": str(self.status),
            "reason": self.reason,
            "verdict": self.verdict,
            "sources": list(self.sources),
            "declared": list(self.declared),
            "relation": self.relation,
            "gated": self.gated,
            "private": self.private,
            "findings": [finding.to_dict() for finding in self.findings],
            "evidence_markdown": self.evidence_markdown,
            "stage": self.stage,
            "stage_bytes": list(self.stage_bytes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelResult:
        return cls(
            repo_id=str(data["repo_id"]),
            sha=str(data["sha"]),
            status=Status(data["status"]),
            reason=str(data["reason"]),
            verdict=data.get("verdict"),
            sources=tuple(data.get("sources", ())),
            declared=tuple(data.get("declared", ())),
            relation=data.get("relation"),
            gated=bool(data.get("gated", False)),
            private=bool(data.get("private", False)),
            findings=tuple(_upgraded(Finding.from_dict(f), data) for f in data.get("findings", ())),
            evidence_markdown=data.get("evidence_markdown"),
            stage=data.get("stage"),
            stage_bytes=tuple(int(n) for n in data.get("stage_bytes", ())),
        )


def _upgraded(finding: Finding, result: dict[str, Any]) -> Finding:
    """A finding of a state or report written before ``OTHER_DECLARATION`` existed, in today's kinds: a
    "wrong declaration" about a source the verdict names was a derivative whose card declares other bases."""
    if finding.kind == WRONG_DECLARATION and finding.source in result.get("sources", ()):
        return replace(finding, kind=OTHER_DECLARATION)
    return finding


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanReport:
    """One scan run (or several merged).

    Attributes:
        shards: the shards it covers, e.g. ``("1/2", "2/2")``; ``("all",)`` for an unsharded run.
        results: per model version, sorted by repo and sha.
        reused: how many results came from the state file instead of a new check.
        usage: budget spent (summed over merged runs).
    """

    schema_version: int = SCHEMA_VERSION
    shards: tuple[str, ...]
    results: tuple[ModelResult, ...]
    reused: int
    usage: BudgetUsage

    @property
    def findings(self) -> list[tuple[ModelResult, Finding]]:
        return [(result, finding) for result in self.results for finding in result.findings]

    def to_dict(self) -> dict[str, Any]:
        counts = {str(status): sum(r.status is status for r in self.results) for status in Status}
        return {
            "schema_version": self.schema_version,
            "kind": "reefguard-hub-scan",
            "shards": list(self.shards),
            "counts": {**counts, "findings": len(self.findings), "reused": self.reused},
            "budget": self.usage.to_dict(),
            "results": [result.to_dict() for result in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, path: Path | None = None) -> ScanReport:
        if not isinstance(data, dict) or data.get("kind") != "reefguard-hub-scan":
            raise ConfigError(f"{path}: not a reefguard hub scan report", path=path)
        _check_version(data, path)
        try:
            return cls(
                shards=tuple(data["shards"]),
                results=tuple(ModelResult.from_dict(r) for r in data["results"]),
                reused=int(data["counts"]["reused"]),
                usage=BudgetUsage.from_dict(data["budget"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{path}: malformed hub scan report ({e})", path=path) from e


def _check_version(data: dict[str, Any], path: Path | None) -> None:
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(
            f"{path}: schema_version {data.get('schema_version')!r}, this reefguard reads {SCHEMA_VERSION}; "
            "rerun the scan with this version",
            path=path,
        )


def sorted_results(results: Iterable[ModelResult]) -> tuple[ModelResult, ...]:
    """One result per ``repo@sha`` (the last one given wins), sorted by repo id then sha."""
    by_key = {result.key: result for result in results}
    return tuple(sorted(by_key.values(), key=lambda r: (r.repo_id, r.sha)))


class ScanState:
    """The scan's memory: results of model versions already done, saved after each one.

    Args:
        path: the JSON file (created on first save).
    """

    def __init__(self, path: Path, results: Iterable[ModelResult] = ()) -> None:
        self.path = path
        self.results: dict[str, ModelResult] = {result.key: result for result in results}

    @classmethod
    def load(cls, path: Path) -> ScanState:
        """Read the state at ``path``; a missing file is an empty state.

        Raises:
            ConfigError: the file is not a state file of this schema version.
        """
        if not path.exists():
            return cls(path)
        data = _read_json(path)
        if not isinstance(data, dict) or data.get("kind") != "reefguard-hub-state":
            raise ConfigError(f"{path}: not a reefguard hub state file", path=path)
        _check_version(data, path)
        try:
            return cls(path, (ModelResult.from_dict(r) for r in data["results"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{path}: malformed hub state file ({e})", path=path) from e

    def done(self, repo_id: str, sha: str) -> ModelResult | None:
        return self.results.get(f"{repo_id}@{sha}")

    def record(self, result: ModelResult) -> None:
        """Remember a final result (checked or skipped) and save the whole state atomically."""
        if result.status is Status.ERROR:
            return  # errors are retried by the next run
        self.results[result.key] = result
        self.save()

    def save(self) -> None:
        data = {
            "schema_version": SCHEMA_VERSION,
            "kind": "reefguard-hub-state",
            "results": [result.to_dict() for result in sorted_results(self.results.values())],
        }
        write_atomically(self.path, json.dumps(data, indent=1) + "\n")


def merge_states(states: Sequence[ScanState], path: Path) -> ScanState:
    """The union of shard states, to be saved at ``path``."""
    return ScanState(path, (result for state in states for result in state.results.values()))


def merge_reports(reports: Sequence[ScanReport]) -> ScanReport:
    """Join shard reports: results united by ``repo@sha``, budgets summed, shards listed.

    Raises:
        ConfigError: no reports, or two reports of the same shard.
    """
    if not reports:
        raise ConfigError("no hub scan reports to merge")
    shards = [shard for report in reports for shard in report.shards]
    repeated = sorted({shard for shard in shards if shards.count(shard) > 1})
    if repeated:
        raise ConfigError(f"shard {', '.join(repeated)} given twice; pass each shard's report once")
    usages = [report.usage for report in reports]
    stopped = [usage.stopped for usage in usages if usage.stopped]
    return ScanReport(
        shards=tuple(sorted(shards)),
        results=sorted_results(result for report in reports for result in report.results),
        reused=sum(report.reused for report in reports),
        usage=BudgetUsage(
            download_bytes=sum(u.download_bytes for u in usages),
            triage_bytes=sum(u.triage_bytes for u in usages),
            max_download_bytes=usages[0].max_download_bytes,
            elapsed_s=max(u.elapsed_s for u in usages),
            max_seconds=usages[0].max_seconds,
            retries=sum(u.retries for u in usages),
            waited_s=sum(u.waited_s for u in usages),
            stopped="; ".join(stopped) or None,
        ),
    )


def read_report(path: Path) -> ScanReport:
    """Read ``hub-report.json`` (or the folder holding it).

    Raises:
        ConfigError: missing, unreadable or not a hub scan report.
    """
    path = path / REPORT_JSON if path.is_dir() else path
    return ScanReport.from_dict(_read_json(path), path=path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such file", path=path) from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: unreadable JSON ({str(e).splitlines()[0] if str(e) else e!r})", path=path) from e
    except RecursionError as e:  # thousands of nested brackets: the parser runs out of stack
        raise ConfigError(f"{path}: unreadable JSON (nested deeper than Python's recursion limit)", path=path) from e


def write_atomically(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    A process killed at any point leaves the previous file or the new one, never a torn one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, path)
    return path


def write_scan_report(report: ScanReport, folder: Path) -> Path:
    """Write ``hub-report.json`` and ``hub-report.md`` into ``folder``; returns the markdown path."""
    write_atomically(folder / REPORT_JSON, json.dumps(report.to_dict(), indent=2) + "\n")
    return write_atomically(folder / REPORT_MARKDOWN, render_scan_markdown(report))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _size(n_bytes: int | None) -> str:
    return "no cap" if n_bytes is None else format_bytes(n_bytes)


def render_scan_markdown(report: ScanReport) -> str:
    """The scan report for people: counts, findings, skips, errors and the budget; ends with a newline."""
    data = report.to_dict()
    counts = data["counts"]
    lines = [
        f"## reefguard hub scan: {counts['findings']} finding{'' if counts['findings'] == 1 else 's'}",
        "",
        f"Shards {', '.join(report.shards)}: {len(report.results)} model versions; {counts['checked']} checked, "
        f"{counts['skipped']} skipped, {counts['error']} failed; {report.reused} reused from the state file.",
        "",
        "### Findings",
        "",
    ]
    if report.findings:
        lines += ["| repo | commit | finding | source | declared | evidence |", "|---|---|---|---|---|---|"]
        for result, finding in report.findings:
            declared = ", ".join(result.declared) or "nothing"
            lines.append(
                f"| `{result.repo_id}` | `{result.sha[:12]}` | {finding.kind} | `{finding.source}` | "
                f"{_cell(declared)} | {_cell(finding.detail)} |"
            )
    else:
        lines.append("_No undeclared derivative and no wrong declaration._")
    for status, title in ((Status.SKIPPED, "Skipped"), (Status.ERROR, "Failed (retried next run)")):
        rows = [r for r in report.results if r.status is status]
        if rows:
            lines += ["", f"### {title}", "", "| repo | commit | reason |", "|---|---|---|"]
            lines += [f"| `{r.repo_id}` | `{r.sha[:12]}` | {_cell(r.reason)} |" for r in rows]
    usage = report.usage
    lines += [
        "",
        "### Budget",
        "",
        f"Downloaded {_size(usage.download_bytes)} of {_size(usage.max_download_bytes)}; "
        f"{usage.elapsed_s:.1f} s of {'no cap' if usage.max_seconds is None else f'{usage.max_seconds:.0f} s'}; "
        f"{usage.retries} Hub calls retried after 429/5xx, {usage.waited_s:.1f} s waited."
        + (f" Stopped early: {usage.stopped}." if usage.stopped else ""),
    ]
    staged = [r for r in report.results if r.stage is not None]
    if staged:
        first = sum(r.stage == 1 for r in staged)
        lines += [
            "",
            f"Stage 1 (anchor rows by Range) decided {first} of {len(staged)} checked model versions and read "
            f"{_size(usage.triage_bytes)}; stage 2 (the full check) took the other {len(staged) - first}.",
        ]
    return "\n".join(lines) + "\n"

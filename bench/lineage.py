"""Lineage benchmark (issue 3): `.venv/bin/python bench/lineage.py`.

Builds the lineage zoo (bench/zoo.py; kept in .cache/zoo/ between runs), fingerprints every member once with
the public API (``bot.fingerprint``, as ``reefguard fingerprint`` does), registers the sources and the
references in a fresh registry, reads it back, and checks every other member against it with
``bot.reef.compare`` (what ``reefguard check`` runs after fingerprinting). Each case is checked twice:
as reefguard does (weights and representations) and with the anchor rows removed from every fingerprint,
which leaves REEF's representation evidence alone.

Prints one line per case and, over all (case, source) pairs (positive when the source is one of the case's
true sources), ROC AUC and TPR at FPR ≤ 1% for three p-values: REEF's, the weights', and the fused one that
decides. A missing p-value (no weight evidence between different tokenizers, a null too small) counts as 1.
Distilled students are reported apart and left out of every rate. Results go to bench/results/lineage.json and
bench/results/lineage.md, and the summary tables into docs/benchmarks.md (block ``lineage``). ``--from-results``
measures nothing and writes the tables of the last run's lineage.json.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.tables import publish  # noqa: E402
from bench.zoo import Member, build_seconds, build_zoo  # noqa: E402
from bot import Registry, _output, fingerprint  # noqa: E402
from bot.reef import Fingerprint, compare  # noqa: E402

RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "benchmarks.md"
COMMAND = ".venv/bin/python bench/lineage.py"
MAX_FPR = 0.01
SIGNALS = {"REEF": "p_reef", "weights": "p_weights", "fused": "p_fused"}
FOUND = ("derived", "merged")
# Transformation class of a zoo member, from its name (bench/zoo.py's recipes); the first pattern that matches wins.
CLASSES = (
    (r"--rot-random--ft-", "rotation + fine-tune"),
    (r"--rot-random--int4$", "rotation + 4-bit"),
    (r"--rot-(random|hadamard)$", "rotation (random orthogonal, Hadamard)"),
    (r"--vocab-ext$", "vocabulary extension + fine-tune"),
    (r"--merge-outside-", "merge with a model outside the registry"),
    (r"^merge-", "merge of two registered sources"),
    (r"--merge-", "merge of two fine-tunes"),
    (r"--(ft-|lora)", "fine-tune, LoRA"),
    (r"--(prune|drop-block)", "pruning"),
    (r"--(int8|int4|gguf)", "quantization"),
    (r"--permuted$", "permutation + rescaling"),
    (r"same-init$", "negative: same initialisation, other data"),
    (r"^neg-", "negative: independent"),
    (r"^distill-", "distilled (policy, not scored)"),
)


@dataclass(frozen=True, slots=True)
class Case:
    """One suspect checked against the registry: the fused report and the REEF-only one, as JSON dicts."""

    member: Member
    report: dict[str, Any]
    reef_report: dict[str, Any]

    @property
    def named(self) -> tuple[str, ...]:
        return tuple(self.report["sources"])

    def to_dict(self) -> dict[str, Any]:
        """The case for lineage.json: what it is, the fused report without its CKA grids, the REEF-only verdict."""
        matches = [{key: value for key, value in m.items() if key != "grid"} for m in self.report["matches"]]
        return {
            "name": self.member.name,
            "kind": self.member.kind,
            "how": self.member.how,
            "true_sources": list(self.member.sources),
            "report": {
                **self.report,
                "suspect_model": _repo_relative(self.report["suspect_model"]),
                "matches": matches,
            },
            "reef_only_verdict": self.reef_report["verdict"],
        }

    def correct(self, report: dict[str, Any]) -> bool:
        """Whether a report gets this case right: the true sources exactly, or no finding for a negative."""
        if self.member.kind == "positive":
            return report["verdict"] in FOUND and set(report["sources"]) == set(self.member.sources)
        return report["verdict"] not in FOUND


def _repo_relative(path: str) -> str:
    """A zoo path relative to the repository, so the committed results do not name this machine's folders."""
    return str(Path(path).relative_to(REPO)) if Path(path).is_relative_to(REPO) else path


def pair_p_values(match: dict[str, Any]) -> dict[str, float | None]:
    """REEF's, the weights' and the fused p-value of one (suspect, source) match."""
    weights = match.get("weights") or {}
    return {"p_reef": match.get("p_value"), "p_weights": weights.get("p_value"), "p_fused": match.get("p_fused")}


def without_weights(fp: Fingerprint) -> Fingerprint:
    """The fingerprint with no anchor rows, so that only the representations decide (rule 5 of verdict.py)."""
    return replace(fp, anchors=None) if "anchors" in {f.name for f in fields(fp)} else fp


def fingerprint_zoo(members: Sequence[Member], registry_dir: Path) -> tuple[list[Fingerprint], dict[str, Fingerprint]]:
    """Fingerprint every member once; register sources and references; return the registry read back and the
    suspects' fingerprints by name."""
    registry = Registry(registry_dir)
    suspects = {}
    for member in members:
        started = time.perf_counter()
        registered = member.kind in ("source", "reference")
        fp = fingerprint(str(member.path), name=member.name, role=member.kind if registered else "source")
        if registered:
            registry.add(fp, replace=True)
        else:
            suspects[member.name] = fp
        _output.error(f"  fingerprinted {member.name} in {time.perf_counter() - started:.1f} s")
    return list(registry), suspects


def check_all(members: Sequence[Member], entries: list[Fingerprint], suspects: dict[str, Fingerprint]) -> list[Case]:
    """Check every suspect twice: with the fused evidence, and with REEF's representations alone."""
    reef_entries = [without_weights(entry) for entry in entries]
    cases = []
    for member in members:
        if member.name not in suspects:
            continue
        started = time.perf_counter()
        fused = compare(suspects[member.name], entries).to_dict()
        reef_only = compare(without_weights(suspects[member.name]), reef_entries).to_dict()
        cases.append(Case(member, fused, reef_only))
        _output.error(f"  checked {member.name} in {time.perf_counter() - started:.1f} s: {fused['verdict']}")
    return cases


def rates(cases: Sequence[Case]) -> dict[str, dict[str, float]]:
    """ROC AUC and TPR at FPR ≤ 1% of each signal over (case, source) pairs; distilled students left out."""
    from sklearn.metrics import roc_auc_score, roc_curve

    labels: list[bool] = []
    values: dict[str, list[float]] = {key: [] for key in SIGNALS.values()}
    for case in cases:
        if case.member.kind == "distilled":
            continue
        for match in case.report["matches"]:
            labels.append(match["source"] in case.member.sources)
            for key, p in pair_p_values(match).items():
                values[key].append(-math.log10(max(p if p is not None else 1.0, 1e-300)))
    result = {}
    for signal, key in SIGNALS.items():
        fpr, tpr, _ = roc_curve(labels, values[key])
        result[signal] = {
            "roc_auc": float(roc_auc_score(labels, values[key])),
            "tpr_at_fpr_1pct": float(tpr[fpr <= MAX_FPR].max()),
            "positive_pairs": int(np.sum(labels)),
            "negative_pairs": len(labels) - int(np.sum(labels)),
        }
    return result


def outcome_counts(cases: Sequence[Case]) -> dict[str, dict[str, Any]]:
    """Verdict-level results, fused and REEF alone: positives found with exactly their sources, negatives
    wrongly called derived or merged."""
    positives = [c for c in cases if c.member.kind == "positive"]
    negatives = [c for c in cases if c.member.kind == "negative"]
    counts = {}
    for label, pick in (("fused", lambda c: c.report), ("REEF alone", lambda c: c.reef_report)):
        missed = [c.member.name for c in positives if not c.correct(pick(c))]
        accused = [c.member.name for c in negatives if not c.correct(pick(c))]
        counts[label] = {
            "positives_correct": len(positives) - len(missed),
            "positives": len(positives),
            "missed_or_wrong_source": missed,
            "false_findings_on_negatives": len(accused),
            "negatives": len(negatives),
            "accused": accused,
        }
    return counts


def transformation(member: Member) -> str:
    """The member's transformation class (``CLASSES``)."""
    return next((label for pattern, label in CLASSES if re.search(pattern, member.name)), member.kind)


def class_rows(cases: Sequence[Case]) -> list[list[str]]:
    """Per transformation class: cases, how many the fused verdict and REEF alone get right, and which weight
    statistic decided the true source's match (positives) or the most significant one (negatives)."""
    rows = []
    for label in dict.fromkeys(transformation(case.member) for case in cases):
        members = [case for case in cases if transformation(case.member) == label]
        deciding: dict[str, int] = {}
        for case in members:
            weights = shown_match(case.report, case.member.sources).get("weights") or {}
            deciding[weights.get("statistic", "none")] = deciding.get(weights.get("statistic", "none"), 0) + 1
        rows.append([
            label, str(len(members)),
            f"{sum(c.correct(c.report) for c in members)}/{len(members)}",
            f"{sum(c.correct(c.reef_report) for c in members)}/{len(members)}",
            ", ".join(f"{name} {count}" for name, count in sorted(deciding.items())),
        ])  # fmt: skip
    return rows


CLASS_HEADER = ["transformation", "cases", "fused correct", "REEF alone correct", "deciding weight statistic"]
HEADER = ["case", "kind", "true source(s)", "verdict", "named", "REEF-only verdict", "row's source", "REEF score",
          "REEF p", "weights (units / geometry)", "weight p", "fused p", "evidence", "merge coefficients"]  # fmt: skip


def shown_match(report: dict[str, Any], true_sources: Sequence[str]) -> dict[str, Any]:
    """The match a table row shows: the (first) true source's, else the most significant one."""
    matches = report["matches"]
    return next((m for m in matches if m["source"] in true_sources), matches[0] if matches else {})


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.1e}"


def _merge_shares(report: dict[str, Any]) -> str:
    shares = [f"{source} {share:.2f}" for source, share in (report.get("merge_coefficients") or {}).items()]
    if report.get("unregistered_share") is not None:
        shares.append(f"unregistered {report['unregistered_share']:.2f}")
    return ", ".join(shares) or "–"


def _weight_cell(match: dict[str, Any]) -> str:
    scores = (match.get("weights") or {}).get("scores")
    return "–" if not scores else f"{scores['units']:.2f} / {scores['geometry']:.2f}"


def case_rows(record: dict[str, Any]) -> list[list[str]]:
    """One row per case of a lineage.json record (``HEADER``)."""
    rows = []
    for case in record["cases"]:
        report = case["report"]
        match = shown_match(report, case["true_sources"])
        p = pair_p_values(match)
        score = match.get("score")
        rows.append([
            case["name"], case["kind"], ", ".join(case["true_sources"]) or "–",
            report["verdict"], ", ".join(report["sources"]) or "–", case["reef_only_verdict"],
            match.get("source", "–"), "–" if score is None else f"{score:.3f}",
            _p(p["p_reef"]), _weight_cell(match), _p(p["p_weights"]), _p(p["p_fused"]),
            str(match.get("evidence", "–")), _merge_shares(report),
        ])  # fmt: skip
    return rows


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def summary_markdown(record: dict[str, Any]) -> str:
    """The rates, the verdict counts and the per-class table of a lineage.json record (the docs' block)."""
    metrics, counts = record["rates"], record["verdicts"]
    lines = _markdown_table(
        ["signal", "ROC AUC", "TPR at FPR ≤ 1%"],
        [[name, f"{m['roc_auc']:.3f}", f"{m['tpr_at_fpr_1pct']:.3f}"] for name, m in metrics.items()],
    )
    any_rate = next(iter(metrics.values()))
    lines += ["", f"Over {any_rate['positive_pairs']} positive and {any_rate['negative_pairs']} negative "
              "(case, source) pairs; distilled students left out.", ""]  # fmt: skip
    lines += _markdown_table(
        ["verdicts", "positives with exactly their source(s)", "false derived/merged on negatives"],
        [[label, f"{c['positives_correct']}/{c['positives']}", f"{c['false_findings_on_negatives']}/{c['negatives']}"]
         for label, c in counts.items()],
    )  # fmt: skip
    lines += ["", *_markdown_table(CLASS_HEADER, [[row[key] for key in CLASS_HEADER] for row in record["classes"]])]
    lines += ["", timing_line(record["timings_s"])]
    return "\n".join(lines) + "\n"


def timing_line(timings: dict[str, float]) -> str:
    return (
        f"Zoo built from scratch in {timings['zoo_from_scratch_s']:.0f} s (one thread; the sum of the times recorded"
        f" when each model was built); this run: zoo step {timings['zoo_s']:.0f} s, fingerprinting and checks"
        f" {timings['bench_s']:.0f} s, on 2 CPU cores shared with other work."
    )


def summary_lines(record: dict[str, Any]) -> list[str]:
    lines = [f"{name:8s} ROC AUC {m['roc_auc']:.3f}   TPR at FPR ≤ 1%: {m['tpr_at_fpr_1pct']:.3f}"
             for name, m in record["rates"].items()]  # fmt: skip
    for label, c in record["verdicts"].items():
        missed, accused = ", ".join(c["missed_or_wrong_source"]) or "none", ", ".join(c["accused"]) or "none"
        lines.append(f"{label}: positives with exactly their source(s) {c['positives_correct']}/{c['positives']}"
                     f" (not: {missed}); false derived/merged on negatives"
                     f" {c['false_findings_on_negatives']}/{c['negatives']} ({accused})")  # fmt: skip
    lines.append(timing_line(record["timings_s"]))
    return lines


def measure(registry_dir: Path | None) -> dict[str, Any]:
    """Build the zoo, fingerprint and check every case; the lineage.json record (every report, grids left out)."""
    started = time.perf_counter()
    members = build_zoo()
    timings = {"zoo_s": time.perf_counter() - started, "zoo_from_scratch_s": sum(build_seconds().values())}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        entries, suspects = fingerprint_zoo(members, registry_dir or Path(scratch) / "registry")
    cases = check_all(members, entries, suspects)
    timings["bench_s"] = time.perf_counter() - started
    return {
        "command": COMMAND,
        "timings_s": {key: round(value, 1) for key, value in timings.items()},
        "rates": rates(cases),
        "verdicts": outcome_counts(cases),
        "classes": [dict(zip(CLASS_HEADER, row, strict=True)) for row in class_rows(cases)],
        "cases": [case.to_dict() for case in cases],
    }


def write_tables(record: dict[str, Any], folder: Path, doc: Path) -> None:
    """lineage.md in ``folder`` (every table), and the summary tables into ``doc``'s ``lineage`` block."""
    summary = summary_markdown(record)
    every_case = "\n".join(_markdown_table(HEADER, case_rows(record)))
    (folder / "lineage.md").write_text(f"{summary}\n{every_case}\n", encoding="utf-8")
    publish(doc, "lineage", summary, record["command"])


def plain_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [HEADER, *rows]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, help="keep the registry in this folder (default: a temp folder)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where lineage.json and lineage.md go")
    parser.add_argument("--doc", type=Path, default=DOC, help="the markdown file whose 'lineage' block gets the tables")
    parser.add_argument(
        "--from-results", action="store_true", help="measure nothing: write the tables of the last run's lineage.json"
    )
    args = parser.parse_args(argv)
    results = args.results / "lineage.json"
    if args.from_results:
        record = json.loads(results.read_text(encoding="utf-8"))
    else:
        record = measure(args.registry)
        args.results.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    _output.write(plain_table(case_rows(record)))
    _output.write("\n".join(summary_lines(record)))
    write_tables(record, args.results, args.doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

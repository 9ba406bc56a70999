"""`check` against a large registry, before and after the registry kept its nulls (issue 16 item 3):
`.venv/bin/python bench/registry_scale.py`.

One run measures both codes on the same registry and the same suspect: 10,000 synthetic entries (32 probes,
4 blocks each; ``tests.builders.synthetic_fingerprint``, as bench/perf.py part c), 1,000 of them sources, and a
suspect derived from the first source. The old code runs in a child process from a git worktree of ``--old-rev``
(the commit before the change), the new one here:

- old: ``compare(suspect, entries)``, which computes every source's null at each check;
- new, nothing kept: the same call with this code (the nulls computed here, as a registry's first check does);
- new, kept: ``compare`` against a registry that keeps its calibration (``bot.reef.Calibration``), as
  ``bot.registry.Registry`` does once a check or ``registry add`` has written it;
- what keeping costs: computing the calibration once, updating it for one added reference and one removed entry,
  and its size on disk.

Each check is timed three times (the first includes imports such as scipy's); the best of the three is the
result. Every report is compared with the old code's (the same JSON, or not). The load average is recorded before
and after. Results go to bench/results/registry_scale.{md,json}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot import _output  # noqa: E402

RESULTS = REPO / "bench" / "results"
OLD_REV = "d5f6716"  # the commit before bot.reef.verdict became a package and the registry kept its nulls
N_ENTRIES, N_SOURCES, N_PROBES, N_LAYERS, REPEATS = 10_000, 1_000, 32, 4, 3

# Runs in the old code's process and in this one: the same registry and suspect from the same seed.
BUILD = """
import numpy as np
from tests.builders import synthetic_fingerprint

def build(n_entries, n_sources, n_probes, n_layers):
    rng = np.random.default_rng(0)
    entries = []
    for k in range(n_entries):
        states = rng.standard_normal((n_layers, n_probes, 16))
        role = "source" if k < n_sources else "reference"
        entries.append(synthetic_fingerprint(f"e{k:05d}", states, role=role))
        if k == 0:
            suspect_states = states + 0.2 * rng.standard_normal(states.shape)
    return synthetic_fingerprint("suspect", suspect_states), entries
"""

OLD_CHECK = """
import hashlib, json, sys, time
sys.path.insert(0, sys.argv[1])
exec(sys.argv[2])
from bot.reef.verdict import compare
suspect, entries = build(*map(int, sys.argv[3:7]))
times = []
for _ in range(int(sys.argv[7])):
    started = time.perf_counter()
    report = compare(suspect, entries)
    times.append(time.perf_counter() - started)
text = json.dumps(report.to_dict(), sort_keys=True)
print(json.dumps({"times_s": times, "verdict": str(report.verdict), "sources": list(report.sources),
                  "report_sha256": hashlib.sha256(text.encode()).hexdigest()}))
"""


class KeptRegistry(list):  # type: ignore[type-arg]
    """Entries with their calibration kept, as ``bot.registry.Registry`` keeps it (without the disk)."""

    def __init__(self, entries: Sequence[Any], kept: Any) -> None:
        super().__init__(entries)
        self.kept = kept

    def calibration(self, entries: Sequence[Any], *, measure: str, conditioned: bool) -> Any:
        return self.kept if (measure, conditioned) == ("linear", True) else None


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def report_digest(report: Any) -> str:
    return hashlib.sha256(json.dumps(report.to_dict(), sort_keys=True).encode()).hexdigest()


def timed(repeats: int, work: Any) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return times, result


def run_old(rev: str, shape: Sequence[int], repeats: int) -> dict[str, Any]:
    """The old code's check, in a child process from a throwaway worktree of ``rev``."""
    with tempfile.TemporaryDirectory(prefix="reefguard-old-") as scratch:
        worktree = Path(scratch) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), rev],
                       check=True, capture_output=True)  # fmt: skip
        try:
            done = subprocess.run(
                [sys.executable, "-c", OLD_CHECK, str(worktree), BUILD, *map(str, shape), str(repeats)],
                check=True, capture_output=True, text=True, cwd=worktree,
            )  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_new(shape: Sequence[int], repeats: int) -> dict[str, Any]:
    """This code's check with nothing kept and with the calibration kept, and what keeping costs."""
    from bot.reef import calibrate, compare

    namespace: dict[str, Any] = {}
    exec(BUILD, namespace)
    # One entry more than the registry holds: the same entries (the same draws), and a reference to add.
    suspect, everyone = namespace["build"](shape[0] + 1, *shape[1:])
    entries, newcomer = everyone[:-1], everyone[-1]
    plain_times, plain = timed(repeats, lambda: compare(suspect, entries))
    calibrate_times, kept = timed(1, lambda: calibrate(entries))
    kept_times, kept_report = timed(repeats, lambda: compare(suspect, KeptRegistry(entries, kept)))
    sources = [null.source for null in kept.sources]
    add_times, _ = timed(1, lambda: kept.with_entry(newcomer, sources, ()))
    remove_times, _ = timed(1, lambda: kept.without_entry(entries[-1].name))
    arrays, meta = kept.to_store()
    return {
        "plain_times_s": plain_times,
        "kept_times_s": kept_times,
        "calibrate_s": calibrate_times[0],
        "add_reference_s": add_times[0],
        "remove_entry_s": remove_times[0],
        "store_bytes": sum(array.nbytes for array in arrays.values()) + len(json.dumps(meta)),
        "verdict": str(kept_report.verdict),
        "sources": list(kept_report.sources),
        "plain_report_sha256": report_digest(plain),
        "kept_report_sha256": report_digest(kept_report),
    }


def render(results: dict[str, Any]) -> str:
    old, new = results["old"], results["new"]
    same = "same" if old["report_sha256"] == new["plain_report_sha256"] == new["kept_report_sha256"] else "DIFFERENT"
    rows = [
        ("old code (every null at each check)", min(old["times_s"]), old["times_s"]),
        ("new code, nothing kept", min(new["plain_times_s"]), new["plain_times_s"]),
        ("new code, calibration kept", min(new["kept_times_s"]), new["kept_times_s"]),
    ]
    lines = [
        f"`compare` against {results['entries']:,} entries at {results['sources']:,} sources "
        f"({results['probes']} probes, {results['layers']} blocks each), best of {results['repeats']}; "
        f"{results['load_before']} before, {results['load_after']} after.",
        "",
        "| check | best s | all runs s |",
        "|---|---|---|",
        *(f"| {name} | {best:.3f} | {', '.join(f'{t:.3f}' for t in runs)} |" for name, best, runs in rows),
        "",
        f"Reports: {same} JSON for the three (verdict {new['verdict']} {new['sources']}).",
        f"Keeping it: computing the calibration {new['calibrate_s']:.2f} s once; adding a reference "
        f"{new['add_reference_s']:.3f} s; removing an entry {new['remove_entry_s']:.3f} s; "
        f"{new['store_bytes'] / 1e6:.1f} MB kept.",
        "",
        "Written by `.venv/bin/python bench/registry_scale.py`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", default=OLD_REV, help="the commit whose code is 'old' (default %(default)s)")
    parser.add_argument("--entries", type=int, default=N_ENTRIES)
    parser.add_argument("--sources", type=int, default=N_SOURCES)
    args = parser.parse_args(argv)
    shape = (args.entries, args.sources, N_PROBES, N_LAYERS)
    results: dict[str, Any] = {"entries": args.entries, "sources": args.sources, "probes": N_PROBES,
                               "layers": N_LAYERS, "repeats": REPEATS, "old_rev": args.old_rev,
                               "load_before": load()}  # fmt: skip
    results["old"] = run_old(args.old_rev, shape, REPEATS)
    results["new"] = run_new(shape, REPEATS)
    results["load_after"] = load()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "registry_scale.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    text = render(results)
    (RESULTS / "registry_scale.md").write_text(text, encoding="utf-8")
    _output.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`make demo`: the main job on the embedded default models, end to end.

1. Copies the committed registry (fingerprints/) to .cache/demo/registry, without the demo source.
2. Registers the demo source: `reefguard fingerprint demo/models/source --name demo-source`.
3. Checks a fine-tune of it (expected: derived) and a model of another architecture trained on other data
   (expected: unrelated), printing each verdict table and writing a report folder per check.
Exits 0 when both verdicts are the expected ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bot import _output
from bot.cli import ExitCode, main

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".cache" / "demo"


def run() -> int:
    registry = WORK / "registry"
    shutil.rmtree(WORK, ignore_errors=True)
    # Without its calibration, which lists demo-source: registering it below keeps a new one.
    skipped = shutil.ignore_patterns("demo-source", ".calibration", "*.py", "*.md")
    shutil.copytree(REPO / "fingerprints", registry, ignore=skipped)
    steps = [
        ("register the source", ["fingerprint", "demo/models/source", "--name", "demo-source"], ExitCode.OK),
        ("check a fine-tune", ["check", "demo/models/finetune", "--report", str(WORK / "finetune")], ExitCode.FINDING),
        ("check an unrelated model", ["check", "demo/models/unrelated", "--report", str(WORK / "unrelated")],
         ExitCode.OK),
    ]  # fmt: skip
    for title, argv, expected in steps:
        _output.write(f"\n== {title}: reefguard {' '.join(argv)}")
        code = main([*argv, "--registry", str(registry)])
        if code != expected:
            _output.write(f"demo: expected exit {int(expected)}, got {code}")
            return 1
    _output.write(f"\nreports: {WORK / 'finetune' / 'report.md'} and {WORK / 'unrelated' / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())

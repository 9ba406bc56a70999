"""The exit-code contract of ``reefguard`` and of the Action, and which verdicts count as a finding."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """0 nothing found at the ``--fail-on`` level, 1 finding, 2 usage or configuration error, 3 any other
    reefguard error, 4 unexpected error, 130 interrupted."""

    OK = 0
    FINDING = 1
    USAGE = 2
    ERROR = 3
    UNEXPECTED = 4
    INTERRUPTED = 130


# A --fail-on / fail-on-detection level and the verdicts that reach it.
FAIL_ON = {
    "derived": frozenset({"derived", "merged"}),
    "merged": frozenset({"merged"}),
    "inconclusive": frozenset({"derived", "merged", "inconclusive"}),
    "never": frozenset(),
}

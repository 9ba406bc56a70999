"""The one progress bar: on stderr, and off unless the caller asks and the run is interactive.

It is off under ``--quiet``, when stderr is not a TTY, under ``CI``, or with ``REEFGUARD_NO_PROGRESS=1``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    """Whether this process may draw progress bars at all (TTY, not CI, not switched off)."""
    return sys.stderr.isatty() and not os.environ.get("CI") and os.environ.get("REEFGUARD_NO_PROGRESS") != "1"


def progress_bar(items: Iterable[T], *, desc: str, unit: str, enabled: bool) -> Iterator[T]:
    """Iterate ``items``, drawing a tqdm bar on stderr when ``enabled`` and ``progress_enabled()``."""
    if not (enabled and progress_enabled()):
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, unit=unit, file=sys.stderr, leave=False)

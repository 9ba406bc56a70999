"""The few git commands the action runs in the checked-out workspace.

In a Docker action the workspace belongs to the runner's user while the container runs as root, so git refuses
it ("detected dubious ownership", actions/runner#2033) until ``safe.directory`` lists it.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bot.errors import ReefguardError

logger = logging.getLogger(__name__)

_TIMEOUT_S = 600  # an LFS pull of a few GB over the runner's link


class GitError(ReefguardError):
    """A git command failed (its stderr is in the message).

    Belongs in ``bot/errors.py`` beside the other failures; kept here until that module takes it over.
    """


def run_git(args: Sequence[str], *, cwd: Path, timeout_s: float = _TIMEOUT_S) -> str:
    """Run ``git ARGS`` in ``cwd`` and return its stdout.

    Raises:
        GitError: git is missing, timed out or exited non-zero.
    """
    command = ["git", *args]
    try:
        result = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, encoding="utf-8", timeout=timeout_s, check=False
        )
    except FileNotFoundError as e:
        raise GitError("git is not installed; the action's image provides it") from e
    except subprocess.TimeoutExpired as e:
        raise GitError(f"`git {' '.join(args[:2])}` took longer than {timeout_s:.0f} s") from e
    if result.returncode != 0:
        detail = " ".join(result.stderr.split())[:500]
        raise GitError(f"`git {' '.join(args[:2])}` failed (exit {result.returncode}): {detail}")
    return result.stdout


def trust_workspace(workspace: Path) -> None:
    """Add ``workspace`` to the global ``safe.directory`` list, once.

    Raises:
        GitError: git is missing or the global config cannot be written.
    """
    target = str(workspace.resolve())
    try:
        listed = run_git(["config", "--global", "--get-all", "safe.directory"], cwd=workspace).split()
    except GitError:
        listed = []  # exit 1: the key is not set yet
    if target not in listed:
        run_git(["config", "--global", "--add", "safe.directory", target], cwd=workspace)


def changed_files(before: str, after: str, *, cwd: Path) -> list[str]:
    """Files added or modified between two commits (renames count as additions; deletions are left out).

    Raises:
        GitError: a commit is missing (a shallow clone) or git failed.
    """
    output = run_git(["diff", "--name-only", "--no-renames", "--diff-filter=d", "-z", before, after], cwd=cwd)
    return [name for name in output.split("\0") if name]


def tracked_files(*, cwd: Path) -> list[str]:
    """Every file git tracks in the workspace.

    Raises:
        GitError: not a git repository, or git failed.
    """
    return [name for name in run_git(["ls-files", "-z"], cwd=cwd).split("\0") if name]


def lfs_pull(paths: Sequence[str], *, cwd: Path) -> None:
    """Fetch the Git LFS objects of ``paths`` into the working tree.

    Raises:
        GitError: git-lfs is missing, the remote refused, or the objects are not on the LFS server.
    """
    # --include takes comma-separated patterns; an exact path is a pattern matching only itself.
    run_git(["lfs", "pull", "--include", ",".join(paths)], cwd=cwd)

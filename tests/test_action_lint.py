"""The Action's files pass the linters CI uses: the action schema, actionlint, zizmor and hadolint.

Each linter is a dev dependency that ships its binary in its wheel and runs offline; a test skips, saying
which, only where that tool is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "docs" / "workflows").glob("*.yml"))


def _tool(name: str) -> str:
    """The tool from this interpreter's environment first (the venv), then PATH; skip if absent."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.is_file() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]' provides it)")
    return found


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_example_workflows_exist() -> None:
    assert [path.name for path in WORKFLOWS] == [
        "hub-scan.yml", "protect.yml", "pull_request.yml", "push.yml", "references.yml", "schedule.yml"]  # fmt: skip


def test_action_yml_matches_the_github_action_schema() -> None:
    result = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", "action.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_workflows_pass_actionlint() -> None:
    result = _run(_tool("actionlint"), "-no-color", *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_workflows_pass_zizmor() -> None:
    result = _run(_tool("zizmor"), "--offline", "--no-progress", *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_dockerfile_passes_hadolint() -> None:
    result = _run(_tool("hadolint"), "--no-color", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_check_out_lfs_and_start_without_permissions() -> None:
    import yaml

    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert workflow["permissions"] == {}, path.name
        for job in workflow["jobs"].values():
            assert "permissions" in job, path.name
            checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
            assert checkout["with"]["lfs"] is True, path.name
            assert checkout["with"]["persist-credentials"] is False, path.name

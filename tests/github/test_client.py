"""make_client's retries against the GitHub double, through the real PyGithub client."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from bot.errors import RemoteError
from bot.github.client import Pacing, github_errors, make_client
from tests.doubles.github_server import READ_ONLY, SECONDARY_RATE_LIMIT, GitHubServer

REPO = "octo/models"
FAST = Pacing().scaled(0.001)


@pytest.fixture
def server() -> Iterator[GitHubServer]:
    with GitHubServer() as github:
        github.add_repo(REPO)
        yield github


def _create(server: GitHubServer, pacing: Pacing = FAST) -> int:
    repo = make_client("ghs_token", server.url, pacing=pacing).get_repo(REPO)
    with github_errors("opening an issue"):
        return repo.create_issue(title="t", body="b").number


def _attempts(server: GitHubServer) -> int:
    return sum(1 for r in server.requests if r.method == "POST")


@pytest.mark.parametrize(
    ("status", "headers", "message"),
    [
        (500, {}, None),
        (502, {}, None),
        (429, {"Retry-After": "1"}, None),
        (403, {}, SECONDARY_RATE_LIMIT),
        (403, {"Retry-After": "1"}, "You have exceeded a secondary rate limit."),
    ],
)
def test_transient_failures_are_retried(
    server: GitHubServer, status: int, headers: dict[str, str], message: str | None
) -> None:
    server.fail_next("POST", f"/repos/{REPO}/issues", status, times=2, headers=headers, message=message)

    started = time.monotonic()
    assert _create(server) == 1
    assert _attempts(server) == 3
    assert time.monotonic() - started < 5  # waits are scaled down; Retry-After is capped by max_wait_s


def test_a_permission_403_is_not_retried(server: GitHubServer) -> None:
    server.fail_next("POST", f"/repos/{REPO}/issues", 403, times=5, message=READ_ONLY)

    with pytest.raises(RemoteError) as caught:
        _create(server)

    assert caught.value.status == 403 and caught.value.service == "github"
    assert caught.value.request_id is not None and caught.value.request_id.startswith("GH")
    assert "Resource not accessible by integration" in str(caught.value)
    assert "pull requests from forks get a read-only token" in str(caught.value)
    assert _attempts(server) == 1


def test_retries_run_out_into_a_remote_error(server: GitHubServer) -> None:
    server.fail_next("POST", f"/repos/{REPO}/issues", 500, times=50)

    with pytest.raises(RemoteError, match="opening an issue failed with HTTP 500"):
        _create(server, FAST)

    assert _attempts(server) == FAST.retries + 1


def test_the_token_is_sent_but_never_logged(server: GitHubServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.fail_next("POST", f"/repos/{REPO}/issues", 500)

    _create(server)

    assert all(server.tokens_seen)
    assert "ghs_token" not in caplog.text
    assert all("authorization" not in r.headers for r in server.requests)


def test_pacing_scales_every_wait() -> None:
    pacing = Pacing().scaled(0.5)
    assert (pacing.backoff_s, pacing.secondary_wait_s, pacing.max_wait_s) == (1.0, 30.0, 150.0)
    assert (pacing.retries, pacing.timeout_s) == (Pacing().retries, Pacing().timeout_s)


def test_enterprise_base_url_keeps_its_path() -> None:
    client = make_client("t", "https://ghe.example.com/api/v3/")
    assert client.requester.base_url == "https://ghe.example.com/api/v3"

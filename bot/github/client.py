"""The GitHub client (PyGithub) with retries, and the one funnel from its errors to ``RemoteError``.

Retries use PyGithub's own ``GithubRetry`` (a ``urllib3.Retry``): 5xx and 429 are retried with exponential
backoff, honouring ``Retry-After``; a 403 is retried only when GitHub marks it as a rate limit (a
``Retry-After`` header, or a primary / secondary rate-limit message), so a permission 403 fails at once.
GitHub asks clients to wait at least a minute after a secondary rate limit and to space content-creating
requests by a second (docs.github.com, "Best practices for using the REST API"); ``Pacing`` holds those
numbers and ``Pacing.scaled`` shrinks them for tests.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bot._output import redact
from bot.errors import RemoteError

if TYPE_CHECKING:
    from github import Github

logger = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
# urllib3 retries only these methods; PATCH (issue and comment edits) is idempotent, so it joins them.
_RETRIED_METHODS = frozenset({"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE", "POST", "PATCH"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Pacing:
    """How patiently the client talks to GitHub.

    Attributes:
        retries: attempts after the first, per request.
        backoff_s: exponential backoff base: waits of about 1x, 2x, 4x ... this.
        secondary_wait_s: wait after a secondary rate limit without ``Retry-After``.
        max_wait_s: cap on any single wait (``Retry-After``, a rate-limit reset); longer waits fail instead.
        request_interval_s: minimum spacing of requests; write_interval_s: of content-creating requests.
        timeout_s: per-request timeout.
    """

    retries: int = 5
    backoff_s: float = 2.0
    secondary_wait_s: float = 60.0
    max_wait_s: float = 300.0
    request_interval_s: float = 0.25
    write_interval_s: float = 1.0
    timeout_s: int = 30

    def scaled(self, factor: float) -> Pacing:
        """Every wait multiplied by ``factor`` (tests use a tiny one); retries and timeout unchanged.

        Example:
            >>> Pacing().scaled(0.001).secondary_wait_s
            0.06
        """
        return replace(
            self,
            backoff_s=self.backoff_s * factor,
            secondary_wait_s=self.secondary_wait_s * factor,
            max_wait_s=self.max_wait_s * factor,
            request_interval_s=self.request_interval_s * factor,
            write_interval_s=self.write_interval_s * factor,
        )


def make_client(token: str, base_url: str = DEFAULT_API_URL, *, pacing: Pacing | None = None) -> Github:
    """A PyGithub client for ``base_url`` (``GITHUB_API_URL``; GitHub Enterprise: ``https://HOST/api/v3``).

    Args:
        token: a GitHub token (the workflow's ``github.token`` or a PAT); never logged.
        base_url: the REST API root.
        pacing: retry and spacing settings (default ``Pacing()``).

    Returns:
        A client whose objects are lazy: nothing is fetched until a method needs it.

    Example:
        >>> client = make_client("ghs_example", "http://127.0.0.1:9")
        >>> client.requester.base_url
        'http://127.0.0.1:9'
    """
    from github import Auth, Github, GithubRetry

    pacing = pacing or Pacing()
    retry = GithubRetry(
        total=pacing.retries,
        backoff_factor=pacing.backoff_s,
        backoff_max=pacing.max_wait_s,
        retry_after_max=pacing.max_wait_s,
        secondary_rate_wait=pacing.secondary_wait_s,
        max_rate_limit_wait=pacing.max_wait_s,
        status_forcelist=[429, *range(500, 600)],
        allowed_methods=_RETRIED_METHODS,
        # When retries run out, hand the last response to PyGithub, which raises a GithubException with it.
        raise_on_status=False,
    )
    return Github(
        auth=Auth.Token(token),
        base_url=base_url.rstrip("/"),
        timeout=pacing.timeout_s,
        retry=retry,
        seconds_between_requests=pacing.request_interval_s,
        seconds_between_writes=pacing.write_interval_s,
        per_page=100,  # GitHub's largest page: fewer requests when listing issues and comments
        lazy=True,
    )


def status_of(error: BaseException) -> int | None:
    """The HTTP status a ``RemoteError`` or PyGithub exception carries, if any."""
    from github import GithubException

    if isinstance(error, RemoteError):
        return error.status
    if isinstance(error, GithubException):
        return error.status
    return None


def is_not_found(error: BaseException) -> bool:
    """Whether GitHub answered 404 (an absent label, branch or file: often expected)."""
    return status_of(error) == 404


def _message(error: Any) -> str:
    """GitHub's message, on one line and with any token it echoes masked."""
    data = getattr(error, "data", None)
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        text = str(data["message"])
    else:
        text = str(getattr(error, "message", None) or "no message")
    return redact(" ".join(text.split()))


def _hint(status: int | None) -> str:
    if status == 401:
        return "check the `token` input"
    if status == 403:
        return (
            "the token may not write here: grant `issues: write` and `pull-requests: write` (and `contents: write` "
            "for annotate-card) in the job's `permissions:`; pull requests from forks get a read-only token"
        )
    if status == 404:
        return "check the repository name and that the token can see it"
    if status == 429:
        return "GitHub rate-limited this run; rerun it later"
    return "rerun the job; if it keeps failing, check https://www.githubstatus.com"


@contextlib.contextmanager
def github_errors(doing: str) -> Iterator[None]:
    """Turn PyGithub and transport errors raised inside the block into ``RemoteError``.

    Args:
        doing: what the block does, for the message (``"listing open issues"``).

    Raises:
        RemoteError: with the HTTP status, GitHub's message, the request id and what to check next.
    """
    import requests
    from github import GithubException

    try:
        yield
    except GithubException as e:
        headers = e.headers or {}
        request_id = next((str(v) for k, v in headers.items() if k.lower() == "x-github-request-id"), None)
        raise RemoteError(
            f"GitHub API: {doing} failed with HTTP {e.status}: {_message(e)}; {_hint(e.status)}",
            service="github",
            status=e.status,
            request_id=request_id,
        ) from e
    except requests.RequestException as e:
        raise RemoteError(f"GitHub API: {doing} failed: {type(e).__name__}; {_hint(None)}", service="github") from e

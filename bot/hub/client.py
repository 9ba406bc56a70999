"""The Hub client, the run's budget (requests, bytes, time) and the funnel from Hub errors to ours.

``bot._http.make_api`` is the one factory: every function in ``bot.hub`` receives the ``HfApi`` it builds, so
tests aim it at a local double. ``Budget`` wraps each Hub call: on 429 it waits as long as the ``RateLimit`` header
(``"api";r=0;t=55``) or ``Retry-After`` says, on 5xx it backs off exponentially (1, 2, 4 … s, capped), and it
refuses to wait past the run's wall-time cap. huggingface_hub retries only some calls itself (file HEADs,
listing pages after the first, commits); ``model_info``, the first listing page, safetensors header reads and
discussion calls surface a 429 at once, so they go through ``Budget.call``. The Hub's limits per 5-minute window
(API 1,000 / resolvers 5,000 for a free account; hub-docs rate-limits.md) are why the scan reads headers and
pins shas before it downloads anything.

Every Hub request has a time limit (``bot._http``, the one client factory); while ``Budget.call`` runs a call,
never past the run's ``--max-seconds``: a request is refused once the budget is spent and a body still arriving
then is cut off.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from bot._http import REQUEST_TIMEOUT_S, request_deadline
from bot.errors import ReefguardError, RemoteError

logger = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_TOKEN_SHAPED = re.compile(r"hf_[A-Za-z0-9]{8,}")
# Replies the client could not turn into its types: not JSON, JSON nested past Python's recursion limit, or
# JSON of another shape (huggingface_hub builds ModelInfo(**data) and indexes into the data).
_GARBLED = (ValueError, TypeError, KeyError, AttributeError, RecursionError)


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetUsage:
    """What a run spent, for the report.

    Attributes:
        download_bytes: bytes of model files fetched for full checks (as the Hub sized them), max_download_bytes
            the cap; triage_bytes: bytes stage 1 read by Range (headers, tokenizers, anchor rows; no cap).
        elapsed_s: wall time of the run, max_seconds the cap.
        retries: Hub calls repeated after a 429 or 5xx; waited_s the seconds spent waiting for them.
        stopped: why the run stopped before its last candidate, or None.
    """

    download_bytes: int
    max_download_bytes: int | None
    elapsed_s: float
    max_seconds: float | None
    retries: int
    waited_s: float
    stopped: str | None
    triage_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "download_bytes": self.download_bytes,
            "triage_bytes": self.triage_bytes,
            "max_download_bytes": self.max_download_bytes,
            "elapsed_s": round(self.elapsed_s, 3),
            "max_seconds": self.max_seconds,
            "retries": self.retries,
            "waited_s": round(self.waited_s, 3),
            "stopped": self.stopped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BudgetUsage:
        return cls(
            download_bytes=int(data["download_bytes"]),
            max_download_bytes=data.get("max_download_bytes"),
            elapsed_s=float(data["elapsed_s"]),
            max_seconds=data.get("max_seconds"),
            retries=int(data["retries"]),
            waited_s=float(data["waited_s"]),
            stopped=data.get("stopped"),
            triage_bytes=int(data.get("triage_bytes", 0)),
        )


@dataclass(slots=True, kw_only=True)
class Budget:
    """Caps for one run and the tally against them; ``call`` runs one Hub call with rate-limit backoff.

    Args:
        max_download_bytes: bytes of model files a run may fetch (None: no cap).
        max_seconds: wall time a run may take (None: no cap); waits for the Hub count.
        max_retries: how often one call is repeated after a 429 or 5xx.
        max_wait_s: the longest single wait; a Hub asking for more fails the call.
        clock, sleep: injected so tests neither sleep nor depend on the time of day.
    """

    max_download_bytes: int | None = None
    max_seconds: float | None = None
    max_retries: int = 5
    max_wait_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    started: float = field(default=-1.0)
    download_bytes: int = 0
    triage_bytes: int = 0
    retries: int = 0
    waited_s: float = 0.0
    stopped: str | None = None

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def out_of_time(self) -> bool:
        return self.max_seconds is not None and self.elapsed_s() >= self.max_seconds

    def bytes_left(self) -> int | None:
        return None if self.max_download_bytes is None else self.max_download_bytes - self.download_bytes

    def usage(self) -> BudgetUsage:
        return BudgetUsage(
            download_bytes=self.download_bytes,
            max_download_bytes=self.max_download_bytes,
            elapsed_s=self.elapsed_s(),
            max_seconds=self.max_seconds,
            retries=self.retries,
            waited_s=self.waited_s,
            stopped=self.stopped,
            triage_bytes=self.triage_bytes,
        )

    def call(self, doing: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` (one Hub call), retrying 429 and 5xx answers within the budget.

        Args:
            doing: what the call does, for messages (``"listing models"``).
            fn: the call.

        Raises:
            RemoteError: the Hub kept failing, asked for a wait past the budget, or failed otherwise.
            ReefguardError: raised by ``fn`` itself (retried when it is a RemoteError with a retryable status).
        """
        attempt = 0
        while True:
            if self.out_of_time():
                self.stopped = self.stopped or f"time budget of {self.max_seconds:.0f} s reached"
                raise RemoteError(f"{doing}: the run's time budget of {self.max_seconds:.0f} s is spent; retried "
                                  "next run", service="hub")  # fmt: skip
            try:
                return self._within_time(fn)
            except Exception as e:
                if isinstance(e, httpx.TimeoutException) and self.out_of_time():
                    self.stopped = self.stopped or f"time budget of {self.max_seconds:.0f} s reached"
                    raise RemoteError(f"{doing}: no answer before the run's time budget of {self.max_seconds:.0f} s "
                                      "ran out; retried next run", service="hub") from e  # fmt: skip
                status, wait_s = _retry_advice(e, attempt)
                if status is None or status not in RETRY_STATUSES:
                    if isinstance(e, ReefguardError):
                        raise
                    translated = hub_error(e, doing)
                    if translated is None:
                        raise
                    raise translated from e
                attempt += 1
                if attempt > self.max_retries:
                    raise _as_remote(e, doing, f"still HTTP {status} after {self.max_retries} retries") from e
                time_left = None if self.max_seconds is None else self.max_seconds - self.elapsed_s()
                if wait_s > self.max_wait_s or (time_left is not None and wait_s > time_left):
                    raise _as_remote(e, doing, f"HTTP {status}, the Hub asks to wait {wait_s:.0f} s") from e
                logger.warning(
                    "%s: HTTP %s, retrying in %.1f s (%d/%d)", doing, status, wait_s, attempt, self.max_retries
                )
                self.retries += 1
                self.waited_s += wait_s
                self.sleep(wait_s)

    def _within_time(self, fn: Callable[[], T]) -> T:
        """``fn()``, its Hub requests limited to what is left of ``max_seconds``."""
        if self.max_seconds is None:
            return fn()
        with request_deadline(self.max_seconds - self.elapsed_s()):
            return fn()


def _retry_advice(error: Exception, attempt: int) -> tuple[int | None, float]:
    """(HTTP status, seconds to wait) for a failed call: the Hub's own advice on 429, else exponential backoff."""
    backoff = float(min(2**attempt, 60))
    if isinstance(error, RemoteError):
        return error.status, backoff
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if status is None:
        return None, backoff
    headers = response.headers  # type: ignore[union-attr]
    if status == 429:
        # Public (documented as huggingface_hub.utils.parse_ratelimit_headers) but not re-exported for mypy.
        from huggingface_hub.utils._http import parse_ratelimit_headers

        info = parse_ratelimit_headers(headers)
        if info is not None and info.remaining == 0:
            return status, float(info.reset_in_seconds)
        retry_after = retry_after_s(headers.get("retry-after"))
        if retry_after is not None:
            return status, retry_after
    return int(status), backoff


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for: delay-seconds or an HTTP date; None if absent or unreadable.

    Example:
        >>> retry_after_s("7")
        7.0
        >>> retry_after_s("Wed, 21 Oct 2015 07:28:30 GMT", now=datetime(2015, 10, 21, 7, 28, tzinfo=UTC))
        30.0
        >>> retry_after_s("soon") is None
        True
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def hub_error(error: Exception, doing: str) -> RemoteError | None:
    """Our error for a failed Hub call, or None for anything else (left to propagate).

    Translated: HTTP errors, timeouts, answers cut off before their announced length, and answers the client
    could not parse (not JSON, nested too deep, another shape), which it raises as plain ``ValueError`` /
    ``TypeError`` / ``RecursionError``. A call given to ``Budget.call`` is a Hub call, so those come from the
    reply; the traceback goes to the debug log.
    """
    if isinstance(error, httpx.TimeoutException):
        what = str(error) if "budget" in str(error) else f"no answer within {REQUEST_TIMEOUT_S:.0f} s"
        return RemoteError(f"{doing}: {what} ({type(error).__name__}); retried next run", service="hub")
    if isinstance(error, httpx.RemoteProtocolError):
        said = _TOKEN_SHAPED.sub("hf_***", str(error).splitlines()[0] if str(error) else "")[:160]
        return RemoteError(f"{doing}: the Hub's answer was cut off ({said}); retried next run", service="hub")
    if isinstance(error, httpx.HTTPError):
        response = getattr(error, "response", None)
        if response is None:
            return RemoteError(f"{doing}: cannot reach the Hub ({type(error).__name__}); check the network or "
                               "--endpoint", service="hub")  # fmt: skip
        return _as_remote(error, doing, f"HTTP {response.status_code}")
    from huggingface_hub.errors import HFValidationError

    if isinstance(error, HFValidationError):  # a repo id or revision the client refuses to send
        said = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        return RemoteError(f"{doing}: the client refuses the request ({said})", service="hub")
    if isinstance(error, _GARBLED):
        logger.debug("%s: unusable answer from the Hub", doing, exc_info=error)
        kind = "nested too deep" if isinstance(error, RecursionError) else (
            "not JSON" if isinstance(error, json.JSONDecodeError) else "not the expected shape")  # fmt: skip
        return RemoteError(f"{doing}: unusable answer from the Hub ({kind}); retried next run", service="hub")
    if isinstance(error, OSError):  # huggingface_hub's size and checksum checks on downloads raise OSError
        said = _TOKEN_SHAPED.sub("hf_***", (str(error).splitlines() or [type(error).__name__])[0])[:200]
        return RemoteError(f"{doing}: download failed ({said}); retried next run", service="hub")
    return None


def _as_remote(error: Exception, doing: str, what: str) -> RemoteError:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(error, RemoteError):
        return RemoteError(f"{doing}: {what} ({error})", service="hub", status=status or error.status)
    request_id = getattr(error, "request_id", None)
    said = (getattr(error, "server_message", None) or "").strip().splitlines()
    detail = f": {_TOKEN_SHAPED.sub('hf_***', said[0])[:200]}" if said else ""
    rid = f" (request id {request_id})" if request_id else ""
    hint = "check the token's permissions" if status in (401, 403) else "retry later"
    return RemoteError(f"{doing}: {what}{detail}{rid}; {hint}", service="hub", status=status, request_id=request_id)

"""The one Hub client: builds every ``HfApi``, reads ``HF_TOKEN`` / ``HF_ENDPOINT``, and times out every request.

Neutral (imports nothing from ``bot.github``, ``bot.hub`` or ``bot.trap2``): the Hub scanner, the model-reference
resolver (``bot.sources``), the CLI and the Trap² release all get their client from `make_api`.

Every Hub request has a time limit. huggingface_hub's shared HTTP client has none of its own (``list_models``,
``model_info`` and file downloads wait forever on a Hub that accepts the connection and says nothing), so
`make_api` installs one through the library's public ``set_client_factory``: `REQUEST_TIMEOUT_S` per connect or
read, and, inside `request_deadline`, never past the caller's deadline: a request is refused once the deadline
has passed and a body still arriving then is cut off. The client is shared by ``snapshot_download`` too, so
downloads made by ``bot.sources`` get the same limits.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from huggingface_hub import HfApi

DEFAULT_ENDPOINT = "https://huggingface.co"
REQUEST_TIMEOUT_S = 30.0
"""Longest wait for a connection or for the next bytes of an answer (the Hub's own client waits forever)."""


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub URL to use: `endpoint` if given, else ``$HF_ENDPOINT``, else https://huggingface.co; no trailing /.

    Example:
        >>> hub_endpoint("http://127.0.0.1:8080/")
        'http://127.0.0.1:8080'
    """
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_token() -> str | None:
    """The Hub token from ``HF_TOKEN``, or None (never a flag: command lines show in process lists and CI logs)."""
    return os.environ.get("HF_TOKEN") or None


def make_api(endpoint: str | None = None, token: str | None = None) -> HfApi:
    """An ``HfApi`` for `hub_endpoint(endpoint)`, authenticated with `token` if given.

    The endpoint is always passed explicitly: huggingface_hub reads ``HF_ENDPOINT`` once, at its import. With no
    token the library falls back to its stored login. Also gives huggingface_hub's shared HTTP client time limits
    (`install_http_client`).

    Example::

        api = make_api("http://127.0.0.1:8080", hub_token())
    """
    from huggingface_hub import HfApi

    install_http_client()
    return HfApi(endpoint=hub_endpoint(endpoint), token=token or None)


def install_http_client() -> None:
    """Give huggingface_hub an HTTP client whose requests time out (see the module docstring); idempotent."""
    from huggingface_hub import get_session, set_client_factory

    if not isinstance(getattr(get_session(), "_transport", None), _LimitedTransport):
        set_client_factory(_limited_client)


class _Deadline:
    """When the running call must be over (``time.monotonic()``), or None.

    One per process: huggingface_hub shares one HTTP client across threads (snapshot downloads run in a pool),
    so the limit cannot live in a thread or a context variable.
    """

    def __init__(self) -> None:
        self.at: float | None = None
        self.lock = threading.Lock()


_DEADLINE = _Deadline()


@contextmanager
def request_deadline(seconds_left: float) -> Iterator[None]:
    """Within the block, no Hub request waits past `seconds_left` from now (the run's wall-time budget).

    Example::

        with request_deadline(budget_s - elapsed_s):
            api.model_info("org/name")
    """
    with _DEADLINE.lock:
        previous = _DEADLINE.at
        _DEADLINE.at = time.monotonic() + max(0.0, seconds_left)
    try:
        yield
    finally:
        with _DEADLINE.lock:
            _DEADLINE.at = previous


def _limited_client() -> httpx.Client:
    # The library's own request hook (offline mode, request ids); public in its default factory, not exported.
    from huggingface_hub.utils._http import hf_request_event_hook

    return httpx.Client(
        transport=_LimitedTransport(),
        event_hooks={"request": [hf_request_event_hook]},
        follow_redirects=True,
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S),
    )


class _LimitedTransport(httpx.HTTPTransport):
    """httpx's transport, with every timeout cut to what is left of the running call's deadline."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = _DEADLINE.at
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise httpx.ReadTimeout("the run's time budget is spent", request=request)
            limits = dict(request.extensions.get("timeout") or {})
            request.extensions["timeout"] = {
                kind: left if limits.get(kind) is None else min(limits[kind], left)
                for kind in ("connect", "read", "write", "pool")
            }
        response = super().handle_request(request)
        if deadline is not None and isinstance(response.stream, httpx.SyncByteStream):
            response.stream = _CutOffStream(response.stream, deadline, request)
        return response


class _CutOffStream(httpx.SyncByteStream):
    """A response body that stops with a timeout once the deadline passes (a Hub dripping bytes slowly)."""

    def __init__(self, inner: httpx.SyncByteStream, deadline: float, request: httpx.Request) -> None:
        self.inner, self.deadline, self.request = inner, deadline, request

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            if time.monotonic() > self.deadline:
                raise httpx.ReadTimeout("the run's time budget ran out during the download", request=self.request)
            yield chunk

    def close(self) -> None:
        self.inner.close()

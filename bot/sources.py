"""Model references to local files: the one place the engine's loading path touches the network.

A reference is one string: a local path (a folder, or a .gguf/.safetensors/.bin file) or a Hub repo
``org/name[@revision]``. `ModelSource.parse` turns it into a value (pure: no network, no writes, no logging);
`resolve` turns the value into local files. From the Hub it downloads only what fingerprinting reads (config,
tokenizer, safetensors weights, adapter config), never pickles, pinned to the commit sha it inspected, so a
fingerprint can record exactly which weights it saw.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bot.cards import HUB_NAME, looks_local
from bot.cards import parse_hub_id as parse_hub_id  # the one Hub-id check; its home is the card writer's module
from bot.errors import ConfigError, ModelLoadError, ReefguardError, RemoteError
from bot.reef import SIDE_FILES

logger = logging.getLogger(__name__)

#: The only Hub files `resolve` downloads (fnmatch patterns, as `snapshot_download(allow_patterns=...)`).
#: ``*.bin`` is absent on purpose: pickled weights can run code when loaded.
HUB_FILES = (*SIDE_FILES, "*.safetensors", "*.safetensors.index.json", "adapter_config.json")

# Git refs as the Hub accepts them in URLs: branches, tags ("v1.0", "refs/pr/1") and commit shas.
_REVISION = r"[A-Za-z0-9_][A-Za-z0-9_./-]*"
_HUB_REFERENCE = re.compile(rf"(?P<repo>{HUB_NAME}/{HUB_NAME})(?:@(?P<revision>{_REVISION}))?")
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{8,}")
_FORMS = "a local folder or .gguf/.safetensors/.bin file, org/name, org/name@<branch or tag> or org/name@<sha>"
_TOKEN_HINT = "check the repo id and revision, or pass --token / HF_TOKEN for gated repos"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSource:
    """A model reference parsed from one string; ``str()`` restores it.

    Forms: a local path (folder, .gguf/.safetensors/.bin file) -> kind ``"local"``; ``"org/name@<rev>"`` or
    ``"org/name"`` -> kind ``"hub"`` (revision None means the default branch, resolved to a commit sha when
    fetched; the fingerprint records the sha).

    Attributes:
        kind: ``"local"`` or ``"hub"``.
        ref: the path (``~`` expanded) or the repo id.
        revision: a branch, tag or commit sha for hub sources; None for the default branch and local paths.

    Example:
        >>> ModelSource.parse("org/name@main")
        ModelSource(kind='hub', ref='org/name', revision='main')
        >>> str(ModelSource.parse("./models/tiny"))
        './models/tiny'
    """

    kind: Literal["local", "hub"]
    ref: str
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSource:
        """Parse a model reference; reads the disk only to check whether a path exists.

        Args:
            text: an existing path; a path starting with ``.``, ``/`` or ``~``; a path with a separator and a
                .gguf/.safetensors/.bin suffix; or a Hub id ``org/name[@revision]``.

        Returns:
            The parsed reference.

        Raises:
            ConfigError: `text` is none of the accepted forms.
        """
        text = text.strip()
        if not text:
            raise ConfigError(f"empty model reference; use {_FORMS}")
        if looks_local(text):
            return cls(kind="local", ref=os.path.expanduser(text))
        match = _HUB_REFERENCE.fullmatch(text)
        revision = match["revision"] if match else None
        if match is None or ".." in match["repo"] or "--" in match["repo"] or not _valid_revision(revision):
            raise ConfigError(f"{text!r} is neither an existing path nor a Hub repo id; use {_FORMS}")
        return cls(kind="hub", ref=match["repo"], revision=revision)

    def __str__(self) -> str:
        return f"{self.ref}@{self.revision}" if self.revision else self.ref


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedSource:
    """A model reference made local.

    Attributes:
        source: the reference as parsed.
        path: the local folder or file, ready for loading (for the Hub: the snapshot folder in the cache).
        revision: the commit sha for hub sources, None for local ones.
    """

    source: ModelSource
    path: Path
    revision: str | None


def resolve(
    source: ModelSource | str,
    *,
    cache_dir: Path | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> ResolvedSource:
    """Turn a model reference into local files, downloading Hub repos into the Hugging Face cache.

    Hub repos: asks the Hub for the commit sha of the revision, then downloads `HUB_FILES` at exactly that
    sha (files already cached are not fetched again). With ``HF_HUB_OFFLINE=1`` only a reference pinned to a
    sha is served, from the cache.

    Args:
        source: a `ModelSource` or a string for `ModelSource.parse`.
        cache_dir: the Hugging Face cache; default ``$HF_HUB_CACHE`` (under ``$HF_HOME``).
        endpoint: the Hub URL; default ``$HF_ENDPOINT`` or https://huggingface.co.
        token: a Hub token for private or gated repos; default ``$HF_TOKEN`` or the stored login.
            It is never logged or put in a message.

    Returns:
        The local path, and for the Hub the commit sha the files come from.

    Raises:
        ConfigError: `source` is a string that is not a model reference.
        ModelLoadError: the path does not exist; the repo, revision or access is missing; the repo has no
            safetensors weights; offline and not cached.
        RemoteError: the Hub refused the token (401/403), failed (429, 5xx) or could not be reached. The
            client retries a failed file HEAD by itself; a failed sha lookup or file body is not retried.

    Example::

        resolve("org/name@main").revision  # the commit sha main pointed at, e.g. '3f1c…'
    """
    text = source if isinstance(source, str) else str(source)
    parsed = source if isinstance(source, ModelSource) else ModelSource.parse(source)
    if parsed.kind == "local":
        path = Path(parsed.ref)
        if not path.exists():
            raise ModelLoadError(f"{path}: no such file or folder", source=text)
        return ResolvedSource(source=parsed, path=path, revision=None)
    with _hub_errors(str(parsed), text, token):
        return _resolve_hub(parsed, text, cache_dir=cache_dir, endpoint=endpoint, token=token)


def download_file(
    source: ModelSource,
    filename: str,
    *,
    cache_dir: Path | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> Path:
    """One file of a Hub repo at ``source.revision`` (pin a sha), into the Hugging Face cache.

    For reading a small file before deciding to fetch the weights (a scan reads ``config.json`` alone to refuse
    custom code first), or the one GGUF file of a repo of quantizations.

    Args:
        source: a Hub reference; filename: the file's path in the repo; the rest as for `resolve`.

    Returns:
        The file in the cache.

    Raises:
        ModelLoadError: the repo, revision or file is missing, or access is refused for a gated repo.
        RemoteError: the Hub failed or could not be reached.
    """
    from huggingface_hub import hf_hub_download

    from bot._http import make_api

    api = make_api(endpoint, token)
    with _hub_errors(f"{source}: {filename}", str(source), token):
        path = hf_hub_download(source.ref, filename, revision=source.revision, cache_dir=cache_dir,
                               endpoint=api.endpoint, token=token)  # fmt: skip
    return Path(path)


@contextmanager
def _hub_errors(source: str, text: str, token: str | None) -> Iterator[None]:
    """huggingface_hub's and httpx's errors inside the block as ours (`_translate`); anything else propagates."""
    try:
        yield
    except ReefguardError:
        raise
    except Exception as e:
        translated = _translate(e, source, text, token)
        if translated is None:
            raise
        raise translated from e


def _resolve_hub(
    source: ModelSource, text: str, *, cache_dir: Path | None, endpoint: str | None, token: str | None
) -> ResolvedSource:
    # Imported here: huggingface_hub brings httpx and friends, and parsing a reference needs none of them.
    from huggingface_hub import is_offline_mode, snapshot_download

    from bot._http import make_api

    offline = is_offline_mode()
    api = make_api(endpoint, token)  # also gives snapshot_download's requests their time limits
    if not offline:
        sha = api.model_info(source.ref, revision=source.revision).sha
        if sha is None:
            raise RemoteError(f"{source}: the Hub sent no commit sha; retry later", service="hub")
    elif source.revision is not None and _COMMIT_SHA.fullmatch(source.revision):
        sha = source.revision
    else:
        raise ModelLoadError(
            f"{source}: HF_HUB_OFFLINE=1 is set and the reference names no commit; "
            "pin one (org/name@<40-hex sha>) that is already cached, or unset HF_HUB_OFFLINE",
            source=text,
        )
    folder = Path(
        snapshot_download(
            source.ref,
            revision=sha,  # the sha just inspected, so a push in between cannot mix two commits
            allow_patterns=list(HUB_FILES),
            cache_dir=cache_dir,
            endpoint=api.endpoint,
            token=token,
            local_files_only=offline,
        )
    )
    if not any(folder.rglob("*.safetensors")):
        raise ModelLoadError(
            f"no safetensors weights at {source.ref}@{sha}; pickle .bin weights are never downloaded "
            "(convert them to safetensors and pass the local folder)",
            source=text,
        )
    logger.info("resolved %s to %s (commit %s)", source, folder, sha)
    return ResolvedSource(source=source, path=folder, revision=sha)


def _translate(error: Exception, source: str, text: str, token: str | None) -> ReefguardError | None:
    """Our error for a huggingface_hub or httpx failure, or None for anything else (left to propagate).

    Args:
        source: what the message names (``org/name@rev``, or ``org/name@rev: config.json`` for one file).
        text: the reference as the user gave it (``ModelLoadError.source``).
    """
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import httpx

    if isinstance(error, LocalEntryNotFoundError):
        # snapshot_download could not use the Hub and the files are not cached: say why it could not.
        cause = error.__cause__
        if isinstance(cause, httpx.HTTPError):
            return _translate(cause, source, text, token)
        if cause is None:
            return ModelLoadError(
                f"{source}: not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE); "
                "run once with network access or unset HF_HUB_OFFLINE",
                source=text,
            )
        said = _redact(str(cause), token).splitlines()[:1]
        message = f"{source}: unusable answer from the Hub ({' '.join(said)[:200]}); check HF_ENDPOINT"
        return RemoteError(message, service="hub")
    if not isinstance(error, httpx.HTTPError):
        return None
    request_id = getattr(error, "request_id", None)
    rid = f" (request id {request_id})" if request_id else ""
    if isinstance(error, GatedRepoError):
        message = f"{source}: gated repo, access refused{rid}; request access on its Hub page, then {_TOKEN_HINT}"
        return ModelLoadError(message, source=text)
    if isinstance(error, RevisionNotFoundError):
        return ModelLoadError(f"{source}: no such revision on the Hub{rid}; {_TOKEN_HINT}", source=text)
    if isinstance(error, RepositoryNotFoundError):
        return ModelLoadError(f"{source}: no such repo on the Hub, or it is private{rid}; {_TOKEN_HINT}", source=text)
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code
        said = _redact(error.server_message or "", token).splitlines()
        detail = f": {said[0][:200]}" if said else ""
        if status in (401, 403):
            hint = "check that --token / HF_TOKEN is valid and may read this repo"
            message = f"{source}: the Hub refused access (HTTP {status}{detail}){rid}; {hint}"
        else:
            message = f"{source}: the Hub answered HTTP {status}{detail}{rid}; retry later"
        return RemoteError(message, service="hub", status=status, request_id=request_id)
    if isinstance(error, httpx.RemoteProtocolError):  # the connection closed before the announced length
        return RemoteError(f"{source}: the Hub's answer was cut off ({type(error).__name__}); retry later",
                           service="hub")  # fmt: skip
    where = _endpoint_of(error)
    message = f"{source}: cannot reach the Hub{where} ({type(error).__name__}); check the network or HF_ENDPOINT"
    return RemoteError(message, service="hub")


def _endpoint_of(error: Exception) -> str:
    """`` at <scheme://host>`` for an httpx error that carries its request, else an empty string."""
    try:
        url = error.request.url  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when the request is not set
        return ""
    return f" at {url.scheme}://{url.netloc.decode()}"


def _valid_revision(revision: str | None) -> bool:
    if revision is None:
        return True
    return not ("//" in revision or ".." in revision or revision.endswith(("/", ".", ".lock")))


def _redact(text: str, token: str | None) -> str:
    """`text` without `token` or anything shaped like a Hugging Face token."""
    if token:
        text = text.replace(token, "***")
    return _HF_TOKEN.sub("hf_***", text)

"""The probes, tokenized in a child process that never imports torch, before the model is loaded.

The tokenizer is the largest thing a streamed fingerprint would hold. transformers parses Gemma 3's 33 MB
``tokenizer.json`` in Python, so loading it peaks 0.47 GB above the imports, and it imports torch beside it
(0.2 GB more). A child process with torch blocked peaks at 0.55 GB in all, while the parent, which has not
imported torch yet, holds 0.04 GB; when the child exits, all of it goes back to the system (freed in-process,
it would stay in the heap).

``tokenize_probes`` is the step itself, for a tokenizer at hand; ``TokenizingApart`` runs it in the child
(``python -m bot.reef.tokenizing``, a JSON request on stdin and the result on stdout) while the caller goes on,
and returns the same; ``tokenize_apart`` runs it and waits.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bot.errors import ConfigError, ModelLoadError, ReefguardError, UnsafeWeightsError
from bot.reef.extraction import ProbeBatch, probe_batches, token_limit
from bot.reef.loading import TokenizerFiles
from bot.reef.weights import anchor_tokens

logger = logging.getLogger(__name__)

# The errors the child can raise, rebuilt in the parent from their class name.
_CHILD_ERRORS: dict[str, type[ReefguardError]] = {
    error.__name__: error for error in (ConfigError, ModelLoadError, UnsafeWeightsError)
}
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class ProbeTokens:
    """The probes, tokenized for one model.

    Attributes:
        batches: what extraction runs (``bot.reef.extraction.probe_batches``).
        anchor_candidates: the candidate anchor tokens (``bot.reef.weights.anchor_tokens``).
    """

    batches: tuple[ProbeBatch, ...]
    anchor_candidates: tuple[tuple[int, str], ...]


def tokenize_probes(tokenizer: Any, texts: Sequence[str], *, batch_size: int, max_tokens: int) -> ProbeTokens:
    """Tokenize the probes into batches and anchor candidates with ``tokenizer``.

    Raises:
        ConfigError: a batch size below 1.
        ModelLoadError: the tokenizer has no token to pad with.
    """
    batches = probe_batches(tokenizer, texts, batch_size=batch_size, max_tokens=max_tokens)
    return ProbeTokens(tuple(batches), anchor_tokens(tokenizer, texts))


class TokenizingApart:
    """``tokenize_probes`` with the tokenizer and token limit of ``files``, running in a child process.

    Started on creation and waited for by ``result``, so the caller can do other work meanwhile (open the model:
    import torch, hash the weights). Torch is blocked in the child, except for a GGUF file (transformers reads
    GGUF metadata with torch). The child's log records are logged again here; transformers' own messages are
    dropped unless it fails. Use it as a context manager: leaving it stops a child still running.

    The request, reply and the child's stderr go through unnamed temporary files, not pipes: a child that filled
    a pipe nobody reads yet would stop, holding its peak memory.

    Example:
        >>> with TokenizingApart(files, texts, batch_size=16) as tokenizing:  # doctest: +SKIP
        ...     loaded = load_streamed(folder)  # meanwhile
        ...     tokens = tokenizing.result()
    """

    def __init__(self, files: TokenizerFiles, texts: Sequence[str], *, batch_size: int) -> None:
        self.files = files
        request = {
            "folder": str(files.folder),
            "gguf_file": files.gguf_file,
            "source": str(files.source),
            "texts": list(texts),
            "batch_size": batch_size,
        }
        self._request, self._reply, self._stderr = (tempfile.TemporaryFile() for _ in range(3))  # noqa: SIM115
        self._request.write(json.dumps(request).encode("utf-8"))
        self._request.seek(0)
        python_path = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p)
        self._child = subprocess.Popen(
            [sys.executable, "-m", "bot.reef.tokenizing"],
            stdin=self._request,
            stdout=self._reply,
            stderr=self._stderr,
            env={**os.environ, "PYTHONPATH": python_path, "TRANSFORMERS_VERBOSITY": "error"},
        )
        self._tokens: ProbeTokens | None = None

    def __enter__(self) -> TokenizingApart:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        for file in (self._request, self._reply, self._stderr):
            file.close()

    def result(self) -> ProbeTokens:
        """Wait for the child and return its tokens (the same on every call).

        Raises:
            ConfigError: a batch size below 1.
            ModelLoadError: the tokenizer or config cannot load (UnsafeWeightsError: they need custom code), or
                the child failed.
        """
        if self._tokens is None:
            self._child.wait()
            self._tokens = self._read_reply()
        return self._tokens

    def _read_reply(self) -> ProbeTokens:
        source = str(self.files.source)
        self._reply.seek(0)
        try:
            reply = json.loads(self._reply.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._stderr.seek(0)
            output = self._stderr.read().decode("utf-8", errors="replace")
            logger.debug("tokenizer process output:\n%s", output)
            lines = output.strip().splitlines() or [f"exit status {self._child.returncode}"]
            raise ModelLoadError(f"{source}: tokenizing the probes failed: {lines[-1]}", source=source) from None
        for name, level, message in reply["log"]:
            logging.getLogger(name).log(level, "%s", message)
        if "error" in reply:
            error = _CHILD_ERRORS[reply["error"]["type"]](reply["error"]["message"])
            if isinstance(error, ModelLoadError):
                error.source = source
            raise error
        return _decode(reply["tokens"])


def tokenize_apart(files: TokenizerFiles, texts: Sequence[str], *, batch_size: int) -> ProbeTokens:
    """``TokenizingApart(files, texts, batch_size=batch_size).result()``: tokenize in a child and wait for it.

    Raises:
        ConfigError, ModelLoadError, UnsafeWeightsError: as ``TokenizingApart.result``.
    """
    with TokenizingApart(files, texts, batch_size=batch_size) as tokenizing:
        return tokenizing.result()


def _encode(tokens: ProbeTokens) -> dict[str, Any]:
    batches = [
        {
            "rows": batch.rows,
            "inputs": {key: value.tolist() for key, value in batch.inputs.items()},
            "last_index": batch.last_index.tolist(),
        }
        for batch in tokens.batches
    ]
    return {"batches": batches, "anchor_candidates": tokens.anchor_candidates}


def _decode(data: dict[str, Any]) -> ProbeTokens:
    batches = tuple(
        ProbeBatch(
            rows=[int(row) for row in batch["rows"]],
            inputs={key: np.asarray(value, dtype=np.int64) for key, value in batch["inputs"].items()},
            last_index=np.asarray(batch["last_index"], dtype=np.int64),
        )
        for batch in data["batches"]
    )
    return ProbeTokens(batches, tuple((int(token), str(spelling)) for token, spelling in data["anchor_candidates"]))


class _Records(logging.Handler):
    """Keeps the child's log records, to be logged again by the parent."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))


def _child() -> None:
    """The child's side of ``tokenize_apart``: one request on stdin, one JSON reply on stdout."""
    reply_to, sys.stdout = sys.stdout, sys.stderr  # anything a library prints must not corrupt the reply
    request = json.load(sys.stdin)
    if request["gguf_file"] is None:
        # None in sys.modules makes `import torch` fail, and transformers then runs as if it were not installed.
        sys.modules["torch"] = None  # type: ignore[assignment]
    records = _Records()
    logging.getLogger("bot").addHandler(records)
    logging.getLogger("bot").setLevel(logging.INFO)
    files = TokenizerFiles(
        folder=Path(request["folder"]), gguf_file=request["gguf_file"], source=Path(request["source"])
    )
    reply: dict[str, Any]
    try:
        max_tokens = token_limit(files.load_config())
        tokens = tokenize_probes(
            files.load_tokenizer(), request["texts"], batch_size=request["batch_size"], max_tokens=max_tokens
        )
        reply = {"tokens": _encode(tokens)}
    except tuple(_CHILD_ERRORS.values()) as e:
        reply = {"error": {"type": type(e).__name__, "message": str(e)}}
    json.dump({**reply, "log": records.records}, reply_to)


if __name__ == "__main__":
    _child()

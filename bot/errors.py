"""Every deliberate reefguard failure, in one place.

The tree::

    ReefguardError                      the CLI prints str(e) on one line, no traceback (exit 3)
    ├── ConfigError(ValueError)         bad flags, inputs, probe files, YAML (exit 2)
    ├── ModelLoadError                  a model reference that cannot become a forward-capable model
    │   └── UnsafeWeightsError          weights that would run code when loaded (pickles, remote code)
    ├── RegistryError                   the fingerprints/ store: missing, corrupt, incompatible entries
    ├── RemoteError                     GitHub or Hugging Face Hub answered with an error
    └── TrainingError                   a training run (protect) ended without a usable checkpoint

Messages say what failed, on which input, and what to do next.
"""

from __future__ import annotations

from pathlib import Path


class ReefguardError(Exception):
    """Base of every deliberate failure; the CLI prints ``str(e)`` without a traceback."""


class ConfigError(ReefguardError, ValueError):
    """Invalid user input: a flag, an action input, a probe file or a YAML key.

    Attributes:
        path: the file at fault, if any.
        key: the key or flag at fault, if any.

    Example: ``probes.txt: no probe texts (the file is empty)``.
    """

    def __init__(self, message: str, *, path: Path | str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.key = key


class ModelLoadError(ReefguardError):
    """A model reference could not be turned into a forward-capable model.

    Attributes:
        source: the model reference as the user gave it.

    Example: ``models/x/model.safetensors: a Git LFS pointer, not weights; run `git lfs pull```.
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class UnsafeWeightsError(ModelLoadError):
    """Weights refused because loading them could execute code (a pickle reduce, ``trust_remote_code``).

    Example: ``pytorch_model.bin: refused, the pickle calls builtins.exec; convert it to safetensors``.
    """


class RegistryError(ReefguardError):
    """The fingerprint registry cannot be read or written as asked.

    Attributes:
        path: the registry folder or entry at fault.

    Example: ``fingerprints/foo/meta.yaml: probe set sha256 1a2b… differs from this run's 9f8e…``.
    """

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = path


class RemoteError(ReefguardError):
    """A remote service (GitHub, the Hugging Face Hub) answered with an error we could not recover from.

    Attributes:
        service: ``"github"`` or ``"hub"``.
        status: the HTTP status, if there was a response.
        request_id: the service's request id, for a bug report.
    """

    def __init__(
        self,
        message: str,
        *,
        service: str,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.service = service
        self.status = status
        self.request_id = request_id


class TrainingError(ReefguardError):
    """A training run (``reefguard protect``) ended without a usable checkpoint.

    Example: ``training produced no usable checkpoint: 40 of 40 steps had a non-finite loss or gradient``.
    """

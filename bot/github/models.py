"""Which models a run checks, and the checks made before any is loaded: size, and Git LFS pointers.

A model is a folder of weights (safetensors, ``pytorch_model*.bin``, a PEFT adapter) or a ``.gguf`` file; it is
named by its workspace-relative path. A changed weight file selects its model: the ``.gguf`` file itself, or
the folder holding it. Paths under the registry and the report folder are never models.

With ``actions/checkout``'s default ``lfs: false`` the workspace holds Git LFS pointers (a ~130-byte text stub
naming the object's sha256 and size; git-lfs docs/spec.md) instead of weights. Their sizes are read from the
pointers, so an oversized model is refused before it is downloaded; then the pointers of the models to check
are fetched with one ``git lfs pull --include``.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bot.errors import ConfigError, ModelLoadError
from bot.github.git import GitError, lfs_pull
from bot.reef import LFS_POINTER_PREFIX
from bot.sizes import format_bytes

logger = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("*.safetensors", "*.gguf", "pytorch_model*.bin", "adapter_model.bin")
# git-lfs parses only blobs under 1024 bytes as pointers (blobSizeCutoff); older pointers name other specs.
_POINTER_MAX_BYTES = 1024
_POINTER_PREFIXES = (
    LFS_POINTER_PREFIX,
    b"version https://hawser.github.com/spec/v1",
    b"version http://git-media.io/v/2",
)
_POINTER_SIZE = re.compile(rb"^size (\d+)$", re.MULTILINE)
LFS_FIX = (
    "set `lfs: true` on the actions/checkout step (`with: lfs: true`), or make sure the LFS objects were pushed "
    "(`git lfs push --all origin`)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelFiles:
    """One model to check, as found in the workspace.

    Attributes:
        path: workspace-relative POSIX path of the folder or ``.gguf`` file.
        weight_files: workspace-relative paths of its weight files.
        size_bytes: their total size (from the pointers for files not fetched yet).
        pointers: those of its weight files that are still Git LFS pointers.
    """

    path: str
    weight_files: tuple[str, ...]
    size_bytes: int
    pointers: tuple[str, ...]


def path_slug(path: str) -> str:
    """A file-name-safe form of a model path (report folders, card branches).

    Example:
        >>> path_slug("models/My Model"), path_slug(".")
        ('models-my-model', 'root')
    """
    return re.sub(r"[^a-z0-9._-]+", "-", path.lower()).strip("-.") or "root"


def is_weight_file(path: str) -> bool:
    """Whether a file name is one of ``WEIGHT_PATTERNS``.

    Example:
        >>> is_weight_file("m/model-00001-of-00002.safetensors"), is_weight_file("m/training_args.bin")
        (True, False)
    """
    name = PurePosixPath(path).name
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in WEIGHT_PATTERNS)


def model_path_of(weight_file: str) -> str:
    """The model a weight file belongs to: a ``.gguf`` file is its own model, others their folder.

    Example:
        >>> model_path_of("models/a/model.safetensors"), model_path_of("q/model-q4.gguf"), model_path_of("x.bin")
        ('models/a', 'q/model-q4.gguf', '.')
    """
    path = PurePosixPath(weight_file)
    return path.as_posix() if path.suffix == ".gguf" else path.parent.as_posix()


def _inside(path: str, folder: str) -> bool:
    return folder not in ("", ".") and (path == folder or path.startswith(folder.rstrip("/") + "/"))


def models_from_files(files: Iterable[str], *, excluded: Sequence[str] = ()) -> list[str]:
    """The sorted model paths that a list of changed or tracked files touches.

    Args:
        files: workspace-relative POSIX paths.
        excluded: folders whose files never count (the registry, the report folder).

    Example:
        >>> models_from_files(["a/model.safetensors", "a/config.json", "reg/x/grams.safetensors"], excluded=["reg"])
        ['a']
    """
    models = set()
    for file in files:
        if not is_weight_file(file) or any(_inside(file, folder) for folder in excluded):
            continue
        if PurePosixPath(file).parts[:1] == (".git",):
            continue
        models.add(model_path_of(file))
    return sorted(models)


def expand_patterns(patterns: Sequence[str], *, workspace: Path) -> list[str]:
    """The model paths named by the ``paths`` input: folders, ``.gguf`` files or glob patterns of them.

    Raises:
        ConfigError: a pattern that matches nothing in the workspace.
    """
    found: list[str] = []
    for pattern in patterns:
        matches = sorted(workspace.glob(pattern)) if any(c in pattern for c in "*?[") else [workspace / pattern]
        matches = [m for m in matches if m.is_dir() or (m.is_file() and m.suffix == ".gguf")]
        if not matches:
            raise ConfigError(
                f"input paths: {pattern!r} matches no model folder or .gguf file in the repository", key="paths"
            )
        found += [m.relative_to(workspace).as_posix() for m in matches]
    return sorted(set(found))


def _pointer_size(file: Path) -> int | None:
    """The size a Git LFS pointer file names, or None if ``file`` holds real content."""
    if file.stat().st_size >= _POINTER_MAX_BYTES:
        return None
    data = file.read_bytes()
    if not data.startswith(_POINTER_PREFIXES):
        return None
    match = _POINTER_SIZE.search(data)
    return int(match.group(1)) if match else 0


def inspect_model(path: str, *, workspace: Path) -> ModelFiles:
    """The weight files of a model, their total size, and which are still LFS pointers.

    Raises:
        ModelLoadError: the path does not exist or holds no weight files.
    """
    target = workspace / path
    if target.is_file():
        files = [target]
    elif target.is_dir():
        files = sorted(p for p in target.iterdir() if p.is_file() and is_weight_file(p.name))
    else:
        raise ModelLoadError(f"{path}: no such model folder or file in the workspace", source=path)
    if not files:
        raise ModelLoadError(f"{path}: no weight files ({', '.join(WEIGHT_PATTERNS)}) in this folder", source=path)
    size, pointers = 0, []
    for file in files:
        pointed = _pointer_size(file)
        if pointed is None:
            size += file.stat().st_size
        else:
            size += pointed
            pointers.append(file.relative_to(workspace).as_posix())
    return ModelFiles(
        path=path,
        weight_files=tuple(f.relative_to(workspace).as_posix() for f in files),
        size_bytes=size,
        pointers=tuple(pointers),
    )


def check_size(model: ModelFiles, max_bytes: int | None) -> None:
    """Refuse a model whose weights exceed ``max_bytes`` (None: no limit).

    Raises:
        ModelLoadError: naming the sizes and the ``max-model-size`` input.
    """
    if max_bytes is not None and model.size_bytes > max_bytes:
        raise ModelLoadError(
            f"{model.path}: {format_bytes(model.size_bytes)} of weights is over max-model-size "
            f"({format_bytes(max_bytes)}); raise the max-model-size input (loading needs about twice the "
            "weights' size in memory at float32: use a larger runner) or leave this path out of `paths`",
            source=model.path,
        )


def fetch_pointers(models: Sequence[ModelFiles], *, workspace: Path) -> list[ModelFiles]:
    """Fetch every weight file that is still an LFS pointer, then check that none is left.

    Returns:
        The models inspected again after the fetch.

    Raises:
        ModelLoadError: git-lfs failed, or pointers remain; the message gives the checkout fix.
    """
    pointers = [pointer for model in models for pointer in model.pointers]
    if not pointers:
        return list(models)
    logger.info("fetching %d Git LFS object(s): %s", len(pointers), ", ".join(pointers))
    failure = ""
    try:
        lfs_pull(pointers, cwd=workspace)
    except GitError as e:
        failure = f" (`git lfs pull` failed: {e})"
    refreshed = [inspect_model(model.path, workspace=workspace) for model in models]
    left = [pointer for model in refreshed for pointer in model.pointers]
    if left:
        raise ModelLoadError(f"{', '.join(left)}: Git LFS pointer(s), not weights{failure}; {LFS_FIX}", source=left[0])
    return refreshed

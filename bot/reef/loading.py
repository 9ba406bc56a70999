"""Local model files -> a forward-capable model, without ever running code from the weights.

Each loader recognises one on-disk form and sits in the literal table ``LOADERS`` (first match wins):

- ``peft-adapter``: a PEFT LoRA adapter folder (``adapter_config.json``) applied to its base and merged;
- ``gguf``: a ``.gguf`` file (dequantized by transformers' GGUF reader);
- ``safetensors``: a Hugging Face folder with ``config.json`` and safetensors weights, sharded or not;
- ``pytorch-bin``: a folder with ``pytorch_model*.bin``, read only through ``torch.load(weights_only=True)``.

Weight files are checked before transformers sees them (Git LFS pointers, corrupt or truncated safetensors
headers), so a bad file fails with one clear line instead of a deep traceback. Configs that need custom code
(``auto_map``, unknown ``model_type``) are refused: reefguard never passes ``trust_remote_code=True``.
This module sees local paths only; turning a Hub id into files is ``bot.sources``' job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot.errors import ConfigError, ModelLoadError, UnsafeWeightsError
from bot.reef.gguf import read_gguf_file_header
from bot.reef.safetensors import SafetensorsHeader, read_file_header

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")
# How a model is run for extraction (bot.reef.streaming.load_for_extraction chooses with it).
EXTRACTION_MODES = ("auto", "stream", "full")
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
# transformers' tokenizer and config files: copied beside converted .bin weights, downloaded beside Hub weights.
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "added_tokens.json",
)
# The files a tokenizer's vocabulary comes in (fast, SentencePiece, BPE, WordPiece); one must be there.
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
# Config keys that size a model (whichever its family uses); each must fit in the stored weights.
_CONFIG_BLOCK_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
_CONFIG_SIZE_KEYS = (
    *_CONFIG_BLOCK_KEYS, "hidden_size", "n_embd", "d_model", "intermediate_size", "n_inner", "vocab_size",
    "head_dim", "num_attention_heads", "n_head", "num_key_value_heads",
)  # fmt: skip
# A numbered block in a tensor name: "model.layers.3.", "transformer.h.3.", "encoder.layer.3.".
_BLOCK_NUMBER = re.compile(r"(?:^|\.)(?:layers|h|layer|blocks)\.(\d+)\.")


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedModel:
    """A model ready for extraction, with the facts a fingerprint records about it.

    Attributes:
        model: the transformers base model (no LM head), in eval mode.
        load_tokenizer: loads its tokenizer, afresh on each call. It is not kept with the model: a 262k-token
            vocabulary's tokenizer takes 0.47 GB, more than a streamed model needs, so callers hold it only
            while they tokenize.
        architecture: the config's architecture name, e.g. ``"LlamaForCausalLM"``.
        model_type: the config's ``model_type``, e.g. ``"llama"``.
        n_layers: number of transformer blocks.
        hidden_size: width of the residual stream.
        weight_sha256: weight file name -> sha256 of its bytes (the Git LFS oid).
        dtype: the dtype the weights were loaded in.
        loader: the name of the loader in ``LOADERS`` that read it.
    """

    model: Any = field(compare=False, repr=False)
    load_tokenizer: Callable[[], Any] = field(compare=False, repr=False)
    architecture: str
    model_type: str
    n_layers: int
    hidden_size: int
    weight_sha256: Mapping[str, str]
    dtype: str
    loader: str


class Loader(Protocol):
    """One on-disk model form."""

    @property
    def name(self) -> str:
        """Short name, recorded in LoadedModel.loader."""
        ...

    @property
    def reference(self) -> str:
        """Where the format is documented."""
        ...

    def matches(self, path: Path) -> bool:
        """Whether this loader reads ``path``."""
        ...

    def load(self, path: Path, *, base: Path | None, dtype: str, with_lm_head: bool) -> LoadedModel:
        """Load ``path`` (``base`` is the base model folder for adapters; the head only when asked)."""
        ...


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for one of ``DTYPES``.

    Raises:
        ConfigError: for any other name.
    """
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r} (known: {', '.join(DTYPES)})", key="dtype")
    import torch

    dtype: torch.dtype = getattr(torch, name)
    return dtype


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (equal to a Git LFS pointer's oid)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_not_lfs_pointer(path: Path) -> None:
    """Raise if ``path`` is a Git LFS pointer file instead of the weights it points to.

    Raises:
        ModelLoadError: naming the fix (``git lfs pull``, or ``lfs: true`` on ``actions/checkout``).
    """
    with path.open("rb") as handle:
        head = handle.read(len(LFS_POINTER_PREFIX))
    if head == LFS_POINTER_PREFIX:
        raise ModelLoadError(
            f"{path}: a Git LFS pointer, not weights; run `git lfs pull` "
            "(in GitHub Actions: `lfs: true` on actions/checkout)",
            source=str(path),
        )


def check_safetensors(path: Path) -> SafetensorsHeader:
    """Read and check a local safetensors file's header (``bot.reef.safetensors.read_header``'s rules), not its
    tensors.

    Raises:
        ModelLoadError: a Git LFS pointer, or a header ``read_header`` refuses (truncated, not JSON, offsets that
            disagree with the shapes, overlap, leave gaps or disagree with the file's size).
    """
    check_not_lfs_pointer(path)
    return read_file_header(path)


def parse_json(data: str | bytes, *, what: str, path: Path) -> Any:
    """``json.loads`` whose every failure (bad bytes, bad syntax, nesting too deep to parse) is one ModelLoadError.

    Raises:
        ModelLoadError: naming ``path`` and ``what`` it should have held.
    """
    try:
        return json.loads(data)
    except RecursionError as e:
        raise ModelLoadError(f"{path}: corrupt {what} (JSON nested too deeply to read)", source=str(path)) from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: corrupt {what}, not JSON ({e})", source=str(path)) from e


def check_inside(file: Path, folder: Path) -> None:
    """Refuse a weight file that lies, or links, outside its model folder.

    The fingerprint records the sha256 of the files in the folder; weights read from elsewhere would carry a
    provenance they do not have. A Hugging Face cache snapshot (``<repo>/snapshots/<revision>/``) links its
    files into the repository's ``blobs/`` folder; that is inside.

    Raises:
        ModelLoadError: naming the file and where it resolves to.
    """
    root = folder.resolve()
    target = file.resolve()
    allowed = [root]
    snapshot = next((p for p in (root, *root.parents) if p.parent.name == "snapshots"), None)
    if snapshot is not None:
        allowed.append(snapshot.parent.parent / "blobs")
    if not any(target.is_relative_to(place) for place in allowed):
        raise ModelLoadError(
            f"{file}: resolves to {target}, outside the model folder {folder}; reefguard reads weights only from "
            "inside the folder it fingerprints (copy the file in)",
            source=str(folder),
        )


def check_config_fits_weights(config: Mapping[str, Any], shapes: Mapping[str, Sequence[int]], folder: Path) -> None:
    """Refuse a config whose sizes the weights cannot fill, before anything is built from it.

    A config that declares more blocks than the weights hold, or a width, vocabulary or MLP size that no stored
    tensor has, would make transformers allocate that model and fill it with random values (or run out of
    memory doing so).

    Args:
        config: ``config.json``'s mapping.
        shapes: every stored tensor's name and shape.
        folder: the model folder, for the message.

    Raises:
        ModelLoadError: naming the config key, its value and what the weights hold.
    """
    text = config["text_config"] if isinstance(config.get("text_config"), dict) else config
    where = folder / "config.json"
    largest = max((int(d) for shape in shapes.values() for d in shape), default=0)
    for key in _CONFIG_SIZE_KEYS:
        value = text.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ModelLoadError(f"{where}: {key} is {value!r}, not a size", source=str(folder))
        if key in _CONFIG_BLOCK_KEYS:
            stored = _stored_blocks(shapes)
            if stored and value > stored:
                raise ModelLoadError(
                    f"{where}: {key} is {value}, but the weights hold {stored} blocks; "
                    "the config does not belong to these weights",
                    source=str(folder),
                )
        elif value > largest:
            raise ModelLoadError(
                f"{where}: {key} is {value}, but no stored tensor has a dimension that large (largest {largest}); "
                "the config does not belong to these weights",
                source=str(folder),
            )


_GGUF_BLOCK = re.compile(r"^blk\.(\d+)\.")


def check_gguf(path: Path) -> None:
    """Read a GGUF file's header (metadata and tensor table, not the tensors) and check its sizes fit its tensors.

    transformers builds the model from the metadata before it reads a tensor: a ``block_count`` of a billion would
    allocate until the machine gives out.

    Raises:
        ModelLoadError: not GGUF, a corrupt or truncated header, or a block count or width the tensors cannot fill.
    """
    check_not_lfs_pointer(path)
    header = read_gguf_file_header(path)
    shapes = {name: tensor.shape for name, tensor in header.tensors.items()}
    architecture = header.architecture
    stored = len({int(m.group(1)) for name in shapes if (m := _GGUF_BLOCK.match(name))})
    largest = max((d for shape in shapes.values() for d in shape), default=0)
    for key, value in header.metadata.items():
        if architecture is None or not key.startswith(f"{architecture}."):
            continue
        field = key.removeprefix(f"{architecture}.")
        if field == "block_count" and (not isinstance(value, int) or value > stored):
            raise ModelLoadError(
                f"{path}: {key} is {value}, but the file holds {stored} blocks; the GGUF metadata is corrupt",
                source=str(path),
            )
        if field in ("embedding_length", "feed_forward_length") and isinstance(value, int) and value > largest:
            raise ModelLoadError(
                f"{path}: {key} is {value}, but no tensor in the file has a dimension that large (largest "
                f"{largest}); the GGUF metadata is corrupt",
                source=str(path),
            )


def _stored_blocks(shapes: Mapping[str, Sequence[int]]) -> int:
    """How many numbered blocks the tensor names hold (``…layers.11.…`` -> 12), 0 if none are numbered."""
    found = [int(match.group(1)) for name in shapes if (match := _BLOCK_NUMBER.search(name))]
    return max(found) + 1 if found else 0


def read_config(folder: Path) -> dict[str, Any]:
    """Read ``config.json`` and refuse configs that need custom code.

    Raises:
        ModelLoadError: no or unreadable ``config.json``.
        UnsafeWeightsError: the config names custom code (``auto_map``) or a model type transformers lacks.
    """
    config = read_config_file(folder)
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise _custom_code(folder, model_type)
    return config


def read_config_file(folder: Path) -> dict[str, Any]:
    """``read_config`` without asking transformers which model types it has, so without importing torch.

    What checks a model before its tokenizer runs uses this: torch imported there would sit beside the tokenizer
    child's peak. The child reads the config with ``read_config`` (torch blocked), so an unknown model type is
    refused there, before anything loads.

    Raises:
        ModelLoadError: no or unreadable ``config.json``.
        UnsafeWeightsError: the config names custom code (``auto_map``).
    """
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(
            f"{folder}: no config.json; reefguard reads Hugging Face model folders (config.json + weights)",
            source=str(folder),
        )
    config = parse_json(path.read_bytes(), what="config.json", path=path)
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: not a JSON object", source=str(folder))
    if "auto_map" in config:
        raise _custom_code(folder, config.get("model_type"))
    return config


def _custom_code(folder: Path, model_type: object) -> UnsafeWeightsError:
    return UnsafeWeightsError(
        f"{folder}: model type {model_type!r} needs custom code (trust_remote_code), which reefguard "
        "never runs; use a model whose architecture ships with transformers",
        source=str(folder),
    )


def _from_pretrained(load: Callable[[], Any], what: str, source: Path) -> Any:
    """Run a transformers loader, turning its failures into one-line ModelLoadErrors."""
    from safetensors import SafetensorError

    try:
        return load()
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError, MemoryError) as e:
        raise ModelLoadError(f"{source}: cannot load the {what}: {_one_line(e)}", source=str(source)) from e


def _one_line(error: BaseException) -> str:
    """An exception's message on one line: its first line, plus the second when the first only introduces it
    (torch's ``Error(s) in loading state_dict for X:``)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return " ".join(lines[:2]) if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def _auto_class(with_lm_head: bool) -> Any:
    """transformers' auto class: the bare base model, or with its LM head (what causal-LM adapters target)."""
    import transformers

    return transformers.AutoModelForCausalLM if with_lm_head else transformers.AutoModel


def _load_folder(
    folder: Path,
    *,
    tokenizer: TokenizerFiles,
    dtype: str,
    weight_sha256: Mapping[str, str],
    loader: str,
    with_lm_head: bool,
) -> LoadedModel:
    """Load a validated Hugging Face folder (safetensors weights); its tokenizer loads from ``tokenizer``."""
    config = read_config(folder)
    model, info = _from_pretrained(
        lambda: _auto_class(with_lm_head).from_pretrained(
            folder, dtype=torch_dtype(dtype), use_safetensors=True, trust_remote_code=False, output_loading_info=True
        ),
        "model",
        folder,
    )
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        # transformers fills them with random values: the fingerprint would change on every run.
        raise ModelLoadError(
            f"{tokenizer.source}: {len(missing)} tensors the config needs are missing from the weights "
            f"(first: {missing[0]}); the weights are incomplete or belong to another config",
            source=str(tokenizer.source),
        )
    return _loaded(
        model,
        tokenizer.load_tokenizer,
        config,
        weight_sha256=weight_sha256,
        dtype=dtype,
        loader=loader,
        source=tokenizer.source,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenizerFiles:
    """Where a model's tokenizer and config load from (``tokenizer_files``), without its weights.

    Attributes:
        folder: the folder transformers reads them from.
        gguf_file: the name of the GGUF file in ``folder`` that holds both, if the model is one.
        source: the model as given, for error messages.
    """

    folder: Path
    gguf_file: str | None = None
    source: Path

    def load_tokenizer(self) -> Any:
        """transformers' AutoTokenizer on these files.

        Raises:
            ModelLoadError: no vocabulary file, or transformers cannot load it (one line).
        """
        from transformers import AutoTokenizer

        # Without vocabulary files transformers builds an empty GPT-2 tokenizer, whose probes have no tokens.
        if self.gguf_file is None and not any((self.folder / name).is_file() for name in VOCABULARY_FILES):
            raise ModelLoadError(
                f"{self.source}: cannot load the tokenizer: none of {', '.join(VOCABULARY_FILES)} is there",
                source=str(self.source),
            )
        return _from_pretrained(
            lambda: AutoTokenizer.from_pretrained(self.folder, trust_remote_code=False, **self._gguf()),
            "tokenizer",
            self.source,
        )

    def load_config(self) -> Any:
        """transformers' config (refused when it needs custom code, as ``read_config`` does).

        Raises:
            ModelLoadError, UnsafeWeightsError: as ``read_config``, or transformers cannot read it.
        """
        from transformers import AutoConfig

        if self.gguf_file is None:
            read_config(self.folder)
        return _from_pretrained(
            lambda: AutoConfig.from_pretrained(self.folder, trust_remote_code=False, **self._gguf()),
            "config",
            self.source,
        )

    def _gguf(self) -> dict[str, str]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def tokenizer_files(path: Path, *, base: Path | None = None) -> TokenizerFiles:
    """Where the model at ``path`` (any form ``load_model`` takes) has its tokenizer and config.

    A PEFT adapter has its base's; a ``.bin`` or ``.safetensors`` file, its folder's; a GGUF file holds both.

    Raises:
        ModelLoadError: ``path`` does not exist, an adapter's base is not a local model, or a GGUF file is an LFS
            pointer or not GGUF.
    """
    path = path.expanduser()
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file or folder", source=str(path))
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return tokenizer_files(_adapter_base(path, base))
    if path.is_file() and path.suffix == ".gguf":
        check_not_lfs_pointer(path)
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise ModelLoadError(f"{path}: not a GGUF file (bad magic bytes)", source=str(path))
        return TokenizerFiles(folder=path.parent, gguf_file=path.name, source=path)
    folder = path.parent if path.is_file() else path
    return TokenizerFiles(folder=folder, source=folder)


def check_finite(model: Any, source: Path) -> None:
    """Refuse weights holding NaN or infinity (they would turn every state into NaN).

    Raises:
        ModelLoadError: naming the first such tensor.
    """
    import torch

    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelLoadError(
                f"{source}: tensor {name!r} holds NaN or infinite values; the weights are corrupt", source=str(source)
            )


def _loaded(
    model: Any,
    load_tokenizer: Callable[[], Any],
    config: Mapping[str, Any],
    *,
    weight_sha256: Mapping[str, str],
    dtype: str,
    loader: str,
    source: Path,
) -> LoadedModel:
    model.eval()
    check_finite(model, source)
    text_config = model.config.get_text_config()
    architectures = config.get("architectures") or [type(model).__name__]
    return LoadedModel(
        model=model,
        load_tokenizer=load_tokenizer,
        architecture=str(architectures[0]),
        model_type=str(text_config.model_type),
        n_layers=int(text_config.num_hidden_layers),
        hidden_size=int(text_config.hidden_size),
        weight_sha256=dict(sorted(weight_sha256.items())),
        dtype=dtype,
        loader=loader,
    )


def _weight_files(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file())


@dataclass(frozen=True, slots=True)
class SafetensorsLoader:
    """A Hugging Face model folder with safetensors weights (single file or shards with an index)."""

    name: str = "safetensors"
    reference: str = "https://huggingface.co/docs/safetensors"

    def matches(self, path: Path) -> bool:
        return path.is_dir() and bool(_weight_files(path, "*.safetensors"))

    def load(self, path: Path, *, base: Path | None, dtype: str, with_lm_head: bool) -> LoadedModel:
        files = check_safetensors_folder(path)
        shas = {file.name: sha256_file(file) for file in files}
        return _load_folder(
            path,
            tokenizer=tokenizer_files(path),
            dtype=dtype,
            weight_sha256=shas,
            loader=self.name,
            with_lm_head=with_lm_head,
        )


def check_safetensors_folder(folder: Path) -> list[Path]:
    """Check a safetensors model folder without loading it, and return its weight files.

    Its config (``read_config_file``), shard index (``check_shard_index``), every weight file's place
    (``check_inside``) and header (``check_safetensors``), and the config's sizes against the stored shapes
    (``check_config_fits_weights``).

    Raises:
        ModelLoadError, UnsafeWeightsError: as those checks.
    """
    config = read_config_file(folder)
    files = _weight_files(folder, "*.safetensors")
    check_shard_index(folder)
    shapes: dict[str, Sequence[int]] = {}
    for file in files:
        check_inside(file, folder)
        shapes.update((name, span.shape) for name, span in check_safetensors(file).tensors.items())
    check_config_fits_weights(config, shapes, folder)
    return files


def check_model_files(path: Path, *, base: Path | None = None) -> None:
    """Check what can be checked of a local model before anything runs on it (the tokenizer included).

    A safetensors folder is checked whole (``check_safetensors_folder``); an adapter, its config, weights and
    base; other forms, their config. Loading checks the rest (tensors against the config, values).

    Raises:
        ModelLoadError, UnsafeWeightsError: the first problem found.
    """
    path = path.expanduser()
    if path.is_file() and path.suffix in {".safetensors", ".bin"}:
        path = path.parent
    if path.is_file() and path.suffix == ".gguf":
        tokenizer_files(path)  # the magic bytes
        check_gguf(path)
    if not path.is_dir():
        return  # a missing path: tokenizer_files and the loader say what is wrong
    if (path / "adapter_config.json").is_file():
        for file in _weight_files(path, "adapter_model.safetensors"):
            check_inside(file, path)
            check_safetensors(file)
        check_model_files(_adapter_base(path, base))
    elif _weight_files(path, "*.safetensors"):
        check_safetensors_folder(path)
    elif (path / "config.json").is_file():
        read_config_file(path)


def check_shard_index(folder: Path) -> None:
    """Check ``model.safetensors.index.json``, if there is one: every shard it names is a safetensors file
    present in ``folder`` itself (a name such as ``../../etc/passwd`` would make transformers read it).

    Raises:
        ModelLoadError: an unreadable index, a shard name leaving the folder, or a missing shard.
    """
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return
    check_inside(index, folder)
    data = parse_json(index.read_bytes(), what="shard index", path=index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelLoadError(f"{index}: not a valid shard index (no weight_map of file names)", source=str(folder))
    for shard in sorted(set(weight_map.values())):
        if Path(shard).name != shard or shard in {".", ".."} or not shard.endswith(".safetensors"):
            raise ModelLoadError(
                f"{index}: shard name {shard!r} is not a .safetensors file in the model folder; refused",
                source=str(folder),
            )
        if not (folder / shard).is_file():
            raise ModelLoadError(f"{folder}: shard {shard} listed in the index is missing", source=str(folder))
        check_inside(folder / shard, folder)


@dataclass(frozen=True, slots=True)
class PytorchBinLoader:
    """A folder of ``pytorch_model*.bin`` pickles, read only with ``torch.load(weights_only=True)``.

    The tensors are re-saved as safetensors in a temporary folder, so transformers never unpickles anything.
    """

    name: str = "pytorch-bin"
    reference: str = "https://pytorch.org/docs/stable/generated/torch.load.html"

    def matches(self, path: Path) -> bool:
        return path.is_dir() and bool(_weight_files(path, "pytorch_model*.bin"))

    def load(self, path: Path, *, base: Path | None, dtype: str, with_lm_head: bool) -> LoadedModel:
        import torch
        from safetensors.torch import save_file

        config = read_config(path)
        files = _weight_files(path, "pytorch_model*.bin")
        tensors: dict[str, torch.Tensor] = {}
        for file in files:
            check_inside(file, path)
            check_not_lfs_pointer(file)
            try:
                state = torch.load(file, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                raise UnsafeWeightsError(
                    f"{file}: refused, the pickle asks to run code or load non-tensor objects; "
                    "convert it to safetensors with a tool you trust",
                    source=str(path),
                ) from e
            except (EOFError, RuntimeError, OSError) as e:
                raise ModelLoadError(f"{file}: not a readable PyTorch checkpoint ({e})", source=str(path)) from e
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise ModelLoadError(f"{file}: not a state dict of tensors", source=str(path))
            tensors.update(state)
        check_config_fits_weights(config, {name: tuple(t.shape) for name, t in tensors.items()}, path)
        shas = {file.name: sha256_file(file) for file in files}
        with tempfile.TemporaryDirectory(prefix="reefguard-bin-") as tmp:
            converted = Path(tmp)
            # Tied weights share storage, which safetensors refuses; give every tensor its own copy.
            save_file(
                {k: v.detach().clone().contiguous() for k, v in tensors.items()},
                converted / "model.safetensors",
            )
            for side in SIDE_FILES:
                if (path / side).is_file():
                    shutil.copy2(path / side, converted / side)
            # The temporary folder goes when this returns; the tokenizer is loaded later, from the original.
            return _load_folder(
                converted,
                tokenizer=tokenizer_files(path),
                dtype=dtype,
                weight_sha256=shas,
                loader=self.name,
                with_lm_head=with_lm_head,
            )


@dataclass(frozen=True, slots=True)
class GgufLoader:
    """A GGUF file (llama.cpp's format), dequantized to ``dtype`` by transformers."""

    name: str = "gguf"
    reference: str = "https://huggingface.co/docs/transformers/gguf"

    def matches(self, path: Path) -> bool:
        return path.is_file() and path.suffix == ".gguf"

    def load(self, path: Path, *, base: Path | None, dtype: str, with_lm_head: bool) -> LoadedModel:
        files = tokenizer_files(path)
        check_gguf(path)
        config = files.load_config()
        model = _from_pretrained(
            lambda: _auto_class(with_lm_head).from_pretrained(
                files.folder, gguf_file=files.gguf_file, dtype=torch_dtype(dtype)
            ),
            "model",
            path,
        )
        return _loaded(
            model,
            files.load_tokenizer,
            config.to_dict(),
            weight_sha256={path.name: sha256_file(path)},
            dtype=dtype,
            loader=self.name,
            source=path,
        )


@dataclass(frozen=True, slots=True)
class PeftAdapterLoader:
    """A PEFT LoRA adapter folder, applied to its base model and merged into it."""

    name: str = "peft-adapter"
    reference: str = "https://huggingface.co/docs/peft"

    def matches(self, path: Path) -> bool:
        return path.is_dir() and (path / "adapter_config.json").is_file()

    def load(self, path: Path, *, base: Path | None, dtype: str, with_lm_head: bool) -> LoadedModel:
        from peft import PeftConfig, PeftModel

        base = _adapter_base(path, base)
        adapter_files = _weight_files(path, "adapter_model.safetensors")
        if not adapter_files:
            raise ModelLoadError(f"{path}: no adapter_model.safetensors", source=str(path))
        adapter_file = adapter_files[0]
        check_inside(adapter_file, path)
        stored = list(check_safetensors(adapter_file).tensors)
        base_model = load_model(base, dtype=dtype, with_lm_head=with_lm_head or _is_causal_lm(base))
        # Adapters name modules as the model they were trained on did: the task model (``model.layers.0…`` under
        # a causal LM) or the bare one (``layers.0…``). Map the names onto the model loaded here.
        key_mapping = _adapter_key_mapping(stored, base_model.model)
        config = _from_pretrained(lambda: PeftConfig.from_pretrained(str(path)), "adapter config", path)
        if not hasattr(base_model.model, "prepare_inputs_for_generation"):
            config.task_type = None  # a task wrapper (PeftModelForCausalLM) needs a model that generates

        def apply() -> Any:
            adapted = PeftModel.from_pretrained(base_model.model, path, config=config, key_mapping=key_mapping)
            _check_every_adapter_tensor_applied(adapted, stored, key_mapping, adapter_file, base)
            return adapted.merge_and_unload()

        merged = _from_pretrained(apply, f"adapter on base {base} (does the adapter belong to this base?)", path)
        check_finite(merged, path)
        shas = {**base_model.weight_sha256, adapter_file.name: sha256_file(adapter_file)}
        model = merged if with_lm_head or merged.base_model is merged else merged.base_model
        return LoadedModel(
            model=model.eval(),
            load_tokenizer=base_model.load_tokenizer,
            architecture=base_model.architecture,
            model_type=base_model.model_type,
            n_layers=base_model.n_layers,
            hidden_size=base_model.hidden_size,
            weight_sha256=dict(sorted(shas.items())),
            dtype=dtype,
            loader=self.name,
        )


def _is_causal_lm(path: Path) -> bool:
    """Whether a local model is a causal LM: its config names a ``*ForCausalLM`` class, or it is a GGUF file."""
    if path.is_file():
        return path.suffix == ".gguf"
    architectures = read_config(path).get("architectures") or []
    return any(str(name).endswith("ForCausalLM") for name in architectures)


# PEFT saves an adapter's tensors as ``base_model.model.<module path>.<lora part>.weight`` (the adapter name
# dropped); these parts end the module path.
_PEFT_PREFIX = "base_model.model."
_ADAPTER_PARTS = frozenset(
    {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector", "modules_to_save"}
)


def _adapter_module(key: str) -> str:
    """The module a stored adapter tensor belongs to: ``base_model.model.model.layers.0.q_proj.lora_A.weight`` ->
    ``model.layers.0.q_proj``."""
    parts = key.removeprefix(_PEFT_PREFIX).split(".")
    cut = next((i for i, part in enumerate(parts) if part in _ADAPTER_PARTS), len(parts) - 1)
    return ".".join(parts[:cut])


def _adapter_key_mapping(stored: Sequence[str], model: Any) -> dict[str, str] | None:
    """peft's ``key_mapping`` that makes the adapter's module names those of ``model``, or None when they already are.

    An adapter trained on a causal LM names ``model.layers.0…`` (its bare model sits under ``base_model_prefix``);
    on the bare model, ``layers.0…``. Whichever ``model`` is, one of the three mappings fits every tensor.
    """
    modules = {name for name, _ in model.named_modules()}
    prefix = f"{model.base_model_prefix}."
    keys = [key for key in stored if key.startswith(_PEFT_PREFIX)]
    candidates: list[dict[str, str] | None] = [None, {f"^{re.escape(prefix)}": ""}, {"^": prefix}]
    for mapping in candidates:
        if all(_adapter_module(_renamed(key, mapping)) in modules for key in keys):
            return mapping
    return None


def _renamed(key: str, mapping: Mapping[str, str] | None) -> str:
    """A stored adapter key as peft's ``key_mapping`` renames it (the first pattern that matches)."""
    if not mapping or not key.startswith(_PEFT_PREFIX):
        return key
    rest = key.removeprefix(_PEFT_PREFIX)
    for pattern, replacement in mapping.items():
        renamed, count = re.subn(pattern, replacement, rest, count=1)
        if count:
            return _PEFT_PREFIX + renamed
    return key


def _check_every_adapter_tensor_applied(
    adapted: Any, stored: Sequence[str], key_mapping: Mapping[str, str] | None, adapter_file: Path, base: Path
) -> None:
    """PEFT only warns when adapter tensors match no module; a silently unapplied adapter is an error here."""
    from peft.utils import get_peft_model_state_dict

    applied = set(get_peft_model_state_dict(adapted, save_embedding_layers=False))  # no Hub lookup
    missing = sorted(key for key in stored if _renamed(key, key_mapping) not in applied)
    if missing:
        raise ModelLoadError(
            f"{adapter_file}: {len(missing)} adapter tensors match no module of base {base} (first: {missing[0]}); "
            "does the adapter belong to this base?",
            source=str(adapter_file.parent),
        )


LOADERS: dict[str, Loader] = {
    "peft-adapter": PeftAdapterLoader(),
    "gguf": GgufLoader(),
    "safetensors": SafetensorsLoader(),
    "pytorch-bin": PytorchBinLoader(),
}


def _adapter_config(path: Path) -> dict[str, Any]:
    config_path = path / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{config_path}: not readable JSON ({e})", source=str(path)) from e
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_path}: not a JSON object", source=str(path))
    return config


def _adapter_base(path: Path, base: Path | None) -> Path:
    """An adapter's base model folder: ``base`` if given, else the local one its adapter config names."""
    if base is not None:
        return base
    named = adapter_base_reference(path)
    if named is None or not Path(named).exists():
        raise ModelLoadError(
            f"{path}: adapter base {named!r} is not a local model; pass --base MODEL", source=str(path)
        )
    return Path(named)


def adapter_base_reference(path: Path) -> str | None:
    """The base model named in a PEFT adapter's ``adapter_config.json``, or None if it names none.

    Raises:
        ModelLoadError: the adapter config is not a readable JSON object.
    """
    base = _adapter_config(path).get("base_model_name_or_path")
    return str(base) if base else None


def load_model(
    path: Path, *, base: Path | None = None, dtype: str = "float32", with_lm_head: bool = False
) -> LoadedModel:
    """Load a local model in any form that ``LOADERS`` knows.

    Args:
        path: a model folder, a ``.gguf`` file, a single ``.safetensors`` file inside a model folder, or a PEFT
            adapter folder.
        base: the base model folder for an adapter (default: the adapter config's base, if local).
        dtype: one of ``DTYPES``; weights are loaded in it explicitly, never in a config's default.
        with_lm_head: load the causal-LM head too (adapters trained on it need it); the default loads the
            bare base model, which is all extraction runs.

    Returns:
        The loaded model, a loader for its tokenizer, and recorded facts.

    Raises:
        ConfigError: unknown dtype.
        ModelLoadError: missing files, LFS pointers, corrupt weights, an adapter that does not fit its base.
        UnsafeWeightsError: pickles that would run code; configs that need custom code.
    """
    torch_dtype(dtype)
    path = path.expanduser()
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file or folder", source=str(path))
    if path.is_file() and path.suffix in {".safetensors", ".bin"}:
        path = path.parent
    for loader in LOADERS.values():
        if loader.matches(path):
            logger.info("loading %s with the %s loader (%s)", path, loader.name, dtype)
            return loader.load(path, base=base, dtype=dtype, with_lm_head=with_lm_head)
    if path.is_dir() and not (path / "config.json").is_file():
        read_config(path)  # raises the "no config.json" error, the most common cause
    raise ModelLoadError(
        f"{path}: no model weights found (looked for *.safetensors, *.gguf, pytorch_model*.bin, adapter_config.json)",
        source=str(path),
    )

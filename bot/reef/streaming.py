"""Block-at-a-time extraction: a model that does not fit in memory, fingerprinted one decoder block at a time.

A 7B model is 28 GB in float32; a CI runner has 8-16 GB. Instead of loading it whole, ``StreamedModel``:

1. builds the model's skeleton with its own transformers classes, parameters on the meta device (no memory);
   buffers such as the rotary frequencies are real, computed by the classes themselves;
2. loads the input embedding's rows for the probes' tokens only (the tokens are renumbered to those rows),
   and the other small tensors outside the blocks (position embeddings, norms);
3. replaces each block with a stand-in; before a block runs a batch, the model's own forward pass runs on the
   batch up to that block's stand-in, which records the arguments the model passes it (attention mask,
   sliding-window mask, rotary cos/sin, position ids) and ends the pass; so embeddings, scaling, masks and
   positions are computed by the model's code, and none of them is kept between blocks;
4. for each block in turn, up to the deepest one needed: loads only that block's tensors from the
   memory-mapped safetensors shards (``safe_open``, closed after the block), upcasts bfloat16/float16 to the
   compute dtype one tensor at a time, runs every batch through it with those arguments and the batch's
   states from the previous block, keeps the last-token states of the blocks that are asked for, and frees
   the block.

Peak memory is one block's weights plus the probes' activations, not the model. Because every block sees the
same batches and arguments as in the whole model, the states equal the whole-model path's
(``tests/reef/test_streaming.py`` checks each architecture in ``STREAMABLE_MODEL_TYPES``).

``load_for_extraction`` picks the path: ``stream`` or ``full`` when forced, else streaming when the model
would not fit comfortably in memory (estimated from the safetensors headers against available memory).
Sources that cannot stream (GGUF, PEFT adapters, ``.bin`` checkpoints, other architectures) load whole.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.errors import ConfigError, ModelLoadError
from bot.progress import progress_bar
from bot.reef.extraction import ProbeBatch, StopForward, transformer_blocks
from bot.reef.loading import (
    EXTRACTION_MODES,
    LoadedModel,
    check_config_fits_weights,
    check_inside,
    check_safetensors,
    check_shard_index,
    load_model,
    read_config,
    sha256_file,
    tokenizer_files,
    torch_dtype,
)
from bot.reef.safetensors import byte_count

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Architectures whose streamed states are tested equal to the whole model's (tests/reef/test_streaming.py).
STREAMABLE_MODEL_TYPES = ("gemma3_text", "gpt2", "llama", "qwen2")
# Stream when the whole model in its compute dtype would take more than this share of available memory:
# the rest is for the activations, the tokenizer, the Python process and whatever else runs on the machine.
COMFORT_FRACTION = 0.5
# Padded tokens a block runs at once: a batch of long probes runs in parts of rows, so a block's temporaries
# stay small (Gemma 3 270M's MLP holds 24 MB at 1024 tokens, 100 MB for 16 probes of 256 tokens).
MAX_BLOCK_TOKENS = 1024
_NUMPY_DTYPE = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8"}  # bfloat16 read as raw 16-bit words


@dataclass(frozen=True, slots=True)
class StoredTensor:
    """Where one tensor lies in a safetensors file.

    Attributes:
        file: the shard holding it.
        dtype: the safetensors dtype name (``"BF16"``, ``"F32"``, ...).
        shape: its shape.
        offset: byte offset of its data from the start of the file.
    """

    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int

    @property
    def n_values(self) -> int:
        return math.prod(self.shape)


def tensor_index(folder: Path) -> dict[str, StoredTensor]:
    """Every tensor in a folder's ``*.safetensors`` files, read from the headers only.

    Raises:
        ModelLoadError: a file is corrupt, truncated, an LFS pointer (``check_safetensors``) or outside the folder
            (``check_inside``), the shard index names a file outside it, or a tensor name appears in two shards.
    """
    index: dict[str, StoredTensor] = {}
    check_shard_index(folder)
    for file in sorted(p for p in folder.glob("*.safetensors") if p.is_file()):
        check_inside(file, folder)
        header = check_safetensors(file)
        for name, span in header.tensors.items():
            if name in index:
                raise ModelLoadError(f"{folder}: tensor {name!r} is in both {index[name].file.name} and {file.name}")
            index[name] = StoredTensor(file, span.dtype, span.shape, header.offset(name))
    return index


def whole_model_bytes(index: Mapping[str, StoredTensor], dtype: str) -> int:
    """Memory the model's floating-point tensors take once loaded whole in ``dtype``."""
    itemsize = 4 if dtype == "float32" else 2
    return sum(
        t.n_values * itemsize if t.dtype in _NUMPY_DTYPE else byte_count(t.dtype, t.n_values) for t in index.values()
    )


def available_memory_bytes() -> int | None:
    """Memory this process may still use: ``MemAvailable``, capped by a cgroup v2 limit; None if unknown."""
    available: int | None = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text(encoding="utf-8").strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text(encoding="utf-8"))
            room = int(limit) - used
            available = room if available is None else min(available, room)
    if available is None:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return available


def streaming_obstacle(path: Path, *, base: Path | None) -> str | None:
    """Why ``path`` cannot be streamed, in words, or None if it can.

    Raises:
        ModelLoadError: ``config.json`` is unreadable.
        UnsafeWeightsError: the config needs custom code.
    """
    if base is not None or (path.is_dir() and (path / "adapter_config.json").is_file()):
        return "a PEFT adapter is merged into its base in memory"
    if not path.is_dir():
        return f"{path.suffix or 'this'} files load whole (only safetensors folders stream)"
    if not any(p.is_file() for p in path.glob("*.safetensors")):
        return "only safetensors weights stream"
    config = read_config(path)
    model_type = (
        config.get("text_config", {}).get("model_type") if "text_config" in config else config.get("model_type")
    )
    if model_type not in STREAMABLE_MODEL_TYPES:
        return (
            f"model type {model_type!r} is not one of the streamed architectures ({', '.join(STREAMABLE_MODEL_TYPES)})"
        )
    return None


def load_for_extraction(
    path: Path, *, base: Path | None = None, dtype: str = "float32", extraction: str = "auto"
) -> LoadedModel:
    """Load a local model for extraction, whole or streamed.

    Args:
        path: as for ``bot.reef.loading.load_model``.
        base: an adapter's base model folder.
        dtype: the compute dtype (weights stored in another dtype are converted block by block).
        extraction: ``"stream"`` or ``"full"`` to force a path; ``"auto"`` streams when the whole model would
            take more than ``COMFORT_FRACTION`` of available memory and the source can stream.

    Returns:
        A ``LoadedModel``; when streamed, its ``model`` is a ``StreamedModel`` and ``loader`` is
        ``"safetensors-stream"``.

    Raises:
        ConfigError: unknown mode or dtype; ``stream`` forced on a source that cannot stream.
        ModelLoadError, UnsafeWeightsError: as ``load_model``.
    """
    if extraction not in EXTRACTION_MODES:
        raise ConfigError(f"unknown extraction {extraction!r} (known: {', '.join(EXTRACTION_MODES)})", key="extraction")
    torch_dtype(dtype)
    path = path.expanduser()
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    if extraction == "full" or not path.exists():
        return load_model(path, base=base, dtype=dtype)
    obstacle = streaming_obstacle(path, base=base)
    if obstacle is not None:
        if extraction == "stream":
            raise ConfigError(f"--extraction stream: {path} cannot stream: {obstacle}; use --extraction full or auto")
        logger.info("loading %s whole: %s", path, obstacle)
        return load_model(path, base=base, dtype=dtype)
    index = tensor_index(path)
    if extraction == "auto":
        needed, available = whole_model_bytes(index, dtype), available_memory_bytes()
        if available is not None and needed <= COMFORT_FRACTION * available:
            logger.info("loading %s whole: %.1f GB of %.1f GB available", path, needed / 1e9, available / 1e9)
            return load_model(path, base=base, dtype=dtype)
        logger.info("streaming %s block by block: whole it would take %.1f GB", path, needed / 1e9)
    return load_streamed(path, dtype=dtype, index=index)


def load_streamed(
    path: Path, *, dtype: str = "float32", index: Mapping[str, StoredTensor] | None = None
) -> LoadedModel:
    """Open a safetensors model folder for block-at-a-time extraction (reads the headers and the config).

    Raises:
        ConfigError: the architecture is not streamable (``streaming_obstacle``).
        ModelLoadError: unreadable config or weights; UnsafeWeightsError: custom code.
    """
    from transformers import AutoConfig

    obstacle = streaming_obstacle(path, base=None)
    if obstacle is not None:
        raise ConfigError(f"{path} cannot stream: {obstacle}; use --extraction full")
    raw_config = read_config(path)
    index = dict(index) if index is not None else tensor_index(path)
    check_config_fits_weights(raw_config, {name: stored.shape for name, stored in index.items()}, path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{path}: cannot load the config: {e}", source=str(path)) from e
    files = sorted({stored.file for stored in index.values()})
    text_config = config.get_text_config()
    architectures = raw_config.get("architectures") or [text_config.model_type]
    return LoadedModel(
        model=StreamedModel(config, index, dtype=dtype, source=path),
        load_tokenizer=tokenizer_files(path).load_tokenizer,
        architecture=str(architectures[0]),
        model_type=str(text_config.model_type),
        n_layers=int(text_config.num_hidden_layers),
        hidden_size=int(text_config.hidden_size),
        weight_sha256={file.name: sha256_file(file) for file in files},
        dtype=dtype,
        loader="safetensors-stream",
    )


class _Tap:
    """What the skeleton's block stand-ins share: the block to stop at, and the arguments the model passed it."""

    def __init__(self) -> None:
        self.stop = 0
        self.call: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    def arguments(self, skeleton: Any, inputs: Mapping[str, Any], index: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments the model passes block ``index`` for ``inputs``: its own embeddings, masks and positions.

        Computed afresh for each block rather than kept: the rotary tables and masks of every batch would
        outweigh a small model's block (86 MB on Gemma 3 270M), and the model's prelude is cheap next to a block.
        """
        self.stop, self.call = index, None
        with contextlib.suppress(StopForward):
            skeleton(**inputs, use_cache=False)
        call, self.call = self.call, None
        if call is None:
            raise ModelLoadError(f"the model's forward pass never reached block {index}")
        return call


def _block_stand_in(index: int, tap: _Tap) -> Any:
    """A ``torch.nn.Module`` in block ``index``'s place: passes its input on, or, at ``tap.stop``, records its
    arguments and ends the forward pass."""
    import torch

    class BlockStandIn(torch.nn.Module):
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            if index == tap.stop:
                tap.call = (args, kwargs)
                raise StopForward
            return _hidden_argument((args, kwargs))

    return BlockStandIn()


class StreamedModel:
    """A safetensors model run one block at a time (satisfies ``bot.reef.extraction.BlockRunner``).

    Attributes:
        config: the transformers config.
        dtype: the compute dtype.
        source: the model folder.
    """

    def __init__(self, config: Any, index: Mapping[str, StoredTensor], *, dtype: str, source: Path) -> None:
        self.config = config
        self.dtype = dtype
        self.source = source
        self._index = dict(index)

    def last_token_states(
        self, batches: Sequence[ProbeBatch], layers: Sequence[int], *, show_progress: bool
    ) -> dict[int, list[torch.Tensor]]:
        """Run every batch block by block; layer -> one ``(rows, hidden)`` float32 tensor per batch.

        Raises:
            ModelLoadError: a tensor the architecture needs is not in the files.
        """
        import torch

        compute = torch_dtype(self.dtype)
        skeleton = self._skeleton(compute)
        prefix = self._prefix(skeleton)
        blocks = transformer_blocks(skeleton, int(self.config.get_text_config().num_hidden_layers))
        blocks_path = next(name for name, module in skeleton.named_modules() if module is blocks)
        meta_blocks: list[Any] = list(blocks)
        tap = _Tap()
        for i in range(len(blocks)):
            blocks[i] = _block_stand_in(i, tap)
        vocabulary = torch.from_numpy(np.unique(np.concatenate([b.inputs["input_ids"].ravel() for b in batches])))
        self._load_outside_blocks(skeleton, prefix, blocks_path, vocabulary, compute)
        inputs = [batch.tensors() for batch in batches]
        for tensors in inputs:
            tensors["input_ids"] = torch.searchsorted(vocabulary, tensors["input_ids"])
        with torch.inference_mode():
            hidden = [_hidden_argument(tap.arguments(skeleton, tensors, 0)) for tensors in inputs]
        # Allocated before any block runs: a state kept from each batch as it runs would pin the top of the heap
        # above the batch's freed temporaries, and the heap would grow by every batch (0.15 GB a block on Gemma).
        width = int(self.config.get_text_config().hidden_size)
        captured = {layer: [torch.empty((len(batch.rows), width)) for batch in batches] for layer in layers}
        for i in progress_bar(range(max(layers) + 1), desc="blocks", unit="block", enabled=show_progress):
            block = self._load_block(meta_blocks[i], f"{prefix}{blocks_path}.{i}.", compute)
            meta_blocks[i] = None
            with torch.inference_mode():
                for b, batch in enumerate(batches):
                    for part in _row_parts(*hidden[b].shape[:2]):
                        part_inputs = {key: value[part] for key, value in inputs[b].items()}
                        args, kwargs = _with_hidden(*tap.arguments(skeleton, part_inputs, i), hidden[b][part])
                        output = block(*args, **kwargs)
                        del args, kwargs
                        # In place: a new tensor per batch would outlive its temporaries and fragment the heap.
                        hidden[b][part] = output[0] if isinstance(output, tuple) else output
                        del output
                    if i in captured:
                        rows = torch.arange(hidden[b].shape[0])
                        captured[i][b].copy_(hidden[b][rows, torch.from_numpy(batch.last_index)])
            del block
            _return_freed_memory()
        return captured

    def embedding_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of the input embedding, as stored (read through a memory map, nothing else loaded)."""
        skeleton = self._skeleton(torch_dtype(self.dtype))
        return self._rows(f"{self._prefix(skeleton)}{_embedding_name(skeleton)}.weight", ids)

    def _skeleton(self, compute: torch.dtype) -> Any:
        """The bare model (no head) with parameters on the meta device and real buffers."""
        import transformers
        from accelerate import init_empty_weights

        auto_model: Any = transformers.AutoModel
        with init_empty_weights(include_buffers=False):
            skeleton = auto_model.from_config(self.config, dtype=compute)
        return skeleton.eval()

    def _prefix(self, skeleton: Any) -> str:
        """The name prefix of the bare model's tensors in the files (``"model."`` for a saved causal LM, ...)."""
        first = next(name for name, _ in skeleton.named_parameters())
        for prefix in ("", f"{skeleton.base_model_prefix}."):
            if prefix + first in self._index:
                return prefix
        raise ModelLoadError(
            f"{self.source}: no tensor {first!r} (nor under {skeleton.base_model_prefix}.) in the safetensors files; "
            "use --extraction full",
            source=str(self.source),
        )

    def _read(self, name: str, compute: torch.dtype, handles: dict[Path, Any]) -> torch.Tensor:
        """One tensor from its (open) shard, converted to the compute dtype.

        Raises:
            ModelLoadError: the tensor is missing or holds NaN or infinite values.
        """
        import torch
        from safetensors import safe_open

        stored = self._index.get(name)
        if stored is None:
            raise ModelLoadError(
                f"{self.source}: tensor {name!r} is missing from the safetensors files", source=str(self.source)
            )
        if stored.file not in handles:
            handles[stored.file] = safe_open(str(stored.file), framework="pt")
        tensor: torch.Tensor = handles[stored.file].get_tensor(name)
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelLoadError(
                f"{self.source}: tensor {name!r} holds NaN or infinite values; the weights are corrupt",
                source=str(self.source),
            )
        return tensor.to(compute)

    def _load_outside_blocks(
        self, skeleton: Any, prefix: str, blocks_path: str, vocabulary: torch.Tensor, compute: torch.dtype
    ) -> None:
        """Materialize the skeleton's tensors outside the blocks; the input embedding keeps only ``vocabulary``."""
        import torch

        embedding = skeleton.get_input_embeddings()
        embedding_name = _embedding_name(skeleton)
        state: dict[str, torch.Tensor] = {}
        handles: dict[Path, Any] = {}
        try:
            for name in skeleton.state_dict():
                if not name.startswith((f"{blocks_path}.", f"{embedding_name}.weight")):
                    state[name] = self._read(prefix + name, compute, handles)
        finally:
            handles.clear()
        skeleton.load_state_dict(state, strict=False, assign=True)
        # The tokens are renumbered to the loaded rows; so is the padding index (it only matters for gradients).
        rows = self._rows(f"{prefix}{embedding_name}.weight", vocabulary).to(compute)
        embedding.weight = torch.nn.Parameter(rows, requires_grad=False)
        embedding.num_embeddings = len(vocabulary)
        pad = getattr(embedding, "padding_idx", None)
        if pad is not None:
            found = (vocabulary == pad).nonzero()
            embedding.padding_idx = int(found[0, 0]) if len(found) else None
        left = [
            name for name, value in skeleton.state_dict().items() if value.is_meta and not name.startswith(blocks_path)
        ]
        if left:
            raise ModelLoadError(f"{self.source}: tensors left unloaded: {', '.join(left)}", source=str(self.source))

    def _rows(self, name: str, rows: torch.Tensor) -> torch.Tensor:
        """Rows ``rows`` of a 2-D stored tensor, read through a memory map (only their pages are touched)."""
        import torch

        stored = self._index.get(name)
        if stored is None or stored.dtype not in _NUMPY_DTYPE or len(stored.shape) != 2:
            raise ModelLoadError(f"{self.source}: no 2-D float embedding {name!r}", source=str(self.source))
        table = np.memmap(
            stored.file, dtype=_NUMPY_DTYPE[stored.dtype], mode="r", offset=stored.offset, shape=stored.shape
        )
        picked = torch.from_numpy(np.ascontiguousarray(table[rows.numpy()]))
        del table
        picked = picked.view(torch.bfloat16) if stored.dtype == "BF16" else picked
        if not bool(torch.isfinite(picked).all()):
            raise ModelLoadError(
                f"{self.source}: tensor {name!r} holds NaN or infinite values; the weights are corrupt",
                source=str(self.source),
            )
        return picked

    def _load_block(self, meta_block: Any, prefix: str, compute: torch.dtype) -> Any:
        """Give a meta-device block its weights from the files, one tensor at a time, and return it in eval mode."""
        handles: dict[Path, Any] = {}
        try:
            state = {name: self._read(prefix + name, compute, handles) for name in meta_block.state_dict()}
        finally:
            handles.clear()  # closes the memory maps, so the block's file pages leave this process
        meta_block.load_state_dict(state, strict=True, assign=True)
        return meta_block.eval()


def _embedding_name(skeleton: Any) -> str:
    """The module name of the skeleton's input embedding (``embed_tokens``, ``wte``, ...)."""
    embedding = skeleton.get_input_embeddings()
    return str(next(name for name, module in skeleton.named_modules() if module is embedding))


def _row_parts(n_rows: int, n_tokens: int) -> list[slice]:
    """A batch's rows in parts of at most ``MAX_BLOCK_TOKENS`` padded tokens (at least one row each).

    Rows are independent in a block (each attends only to itself), so the parts give the batch's result,
    while a block's temporaries stay the size of one part.
    """
    step = max(1, MAX_BLOCK_TOKENS // n_tokens)
    return [slice(start, start + step) for start in range(0, n_rows, step)]


def _return_freed_memory() -> None:
    """Hand freed heap pages back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    A block's tensors are below glibc's adaptive mmap threshold once the first one is freed, so they come from
    the heap, and the freed pages would stay in this process: the RSS grew by every block run (0.35 GB on
    Gemma 3 270M) although only one block is alive at a time.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)  # the process's own symbols, libc's among them


def _hidden_argument(call: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
    args, kwargs = call
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple[Any, ...], kwargs: dict[str, Any], hidden: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The recorded call with the block's real input in place of the stand-in's."""
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}

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
4. for each block in turn, up to the deepest one needed: reads only that block's tensors from the shards
   with ``os.pread`` into the previous block's tensors (no memory map, whose touched pages would count as
   this process's memory), upcasts bfloat16/float16 to the compute dtype one tensor at a time, runs every
   batch through it with those arguments and the batch's states from the previous block, and keeps the
   last-token states of the blocks that are asked for.

Peak memory is one block's weights plus the probes' activations, not the model. Because every block sees the
same batches and arguments as in the whole model, the states equal the whole-model path's
(``tests/reef/test_streaming.py`` checks each architecture in ``STREAMABLE_MODEL_TYPES``).

``load_for_extraction`` picks the path: ``stream`` or ``full`` when forced, else streaming whenever the source
can. Sources that cannot stream (GGUF, PEFT adapters, ``.bin`` checkpoints, other architectures) load whole.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
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
from bot.reef.safetensors import TORCH_DTYPE_NAMES

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Architectures whose streamed states are tested equal to the whole model's (tests/reef/test_streaming.py).
STREAMABLE_MODEL_TYPES = ("gemma3_text", "gpt2", "llama", "qwen2")
# Padded tokens a block runs at once: a batch of long probes runs in parts of rows, so a block's temporaries
# stay small (Gemma 3 270M's MLP holds 24 MB at 1024 tokens, 100 MB for 16 probes of 256 tokens).
MAX_BLOCK_TOKENS = 1024


@dataclass(frozen=True, slots=True)
class StoredTensor:
    """Where one tensor lies in a safetensors file.

    Attributes:
        file: the shard holding it.
        dtype: the safetensors dtype name (``"BF16"``, ``"F32"``, ...).
        shape: its shape.
        offset: byte offset of its data from the start of the file.
        n_bytes: the size of its data.
    """

    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int
    n_bytes: int


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
            index[name] = StoredTensor(file, span.dtype, span.shape, header.offset(name), span.n_bytes)
    return index


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
        extraction: ``"stream"`` or ``"full"`` to force a path; ``"auto"`` streams whenever the source can
            (``streaming_obstacle``): the states are the same, and on Gemma 3 270M streaming took less time and a
            third of the memory (bench/perf.py).

    Returns:
        A ``LoadedModel``; when streamed, its ``model`` is a ``StreamedModel`` and ``loader`` is
        ``"safetensors-stream"``.

    Raises:
        ConfigError: unknown mode or dtype; ``stream`` forced on a source that cannot stream.
        ModelLoadError, UnsafeWeightsError: as ``load_model``.
    """
    torch_dtype(dtype)
    path = _model_folder(path)
    if not streams(path, base=base, extraction=extraction):
        return load_model(path, base=base, dtype=dtype)
    logger.info("streaming %s block by block", path)
    return load_streamed(path, dtype=dtype)


def streams(path: Path, *, base: Path | None = None, extraction: str = "auto") -> bool:
    """Whether ``load_for_extraction`` streams ``path`` with these arguments (reads its config only).

    Raises:
        ConfigError: unknown mode; ``stream`` forced on a source that cannot stream.
        ModelLoadError, UnsafeWeightsError: as ``streaming_obstacle``.
    """
    if extraction not in EXTRACTION_MODES:
        raise ConfigError(f"unknown extraction {extraction!r} (known: {', '.join(EXTRACTION_MODES)})", key="extraction")
    path = _model_folder(path)
    if extraction == "full" or not path.exists():
        return False
    obstacle = streaming_obstacle(path, base=base)
    if obstacle is not None and extraction == "stream":
        raise ConfigError(f"--extraction stream: {path} cannot stream: {obstacle}; use --extraction full or auto")
    if obstacle is not None:
        logger.info("loading %s whole: %s", path, obstacle)
    return obstacle is None


def _model_folder(path: Path) -> Path:
    """The folder of a path given as its ``.safetensors`` file."""
    path = path.expanduser()
    return path.parent if path.is_file() and path.suffix == ".safetensors" else path


def load_streamed(path: Path, *, dtype: str = "float32") -> LoadedModel:
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
    index = tensor_index(path)
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
        self._block_weights: dict[str, torch.Tensor] = {}  # the last block's, reused by the next (_load_block)
        self._staging = _empty_bytes()  # stored bytes on their way to another dtype (_read)

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
        self._block_weights, self._staging = {}, _empty_bytes()  # a 7B block is 0.8 GB; the Grams come next
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

    def _read(self, name: str, compute: torch.dtype, *, into: torch.Tensor | None = None) -> torch.Tensor:
        """One tensor, floating-point values converted to the compute dtype, read into ``into`` when it fits.

        Raises:
            ModelLoadError: the tensor is missing, cut short, of a dtype torch lacks, or holds NaN or infinity.
        """
        import torch

        stored = self._stored(name)
        stored_dtype = self._torch_dtype(name, stored)
        dtype = compute if stored_dtype.is_floating_point else stored_dtype
        if into is None or into.shape != stored.shape or into.dtype != dtype:
            into = torch.empty(stored.shape, dtype=dtype)
        if stored_dtype == dtype:
            self._pread([(stored.offset, into)], stored.file)
        else:  # through one staging buffer, reused: an upcast needs the stored bytes and the result at once
            if self._staging.numel() < stored.n_bytes:
                self._staging = torch.empty(stored.n_bytes, dtype=torch.uint8)
            raw = self._staging[: stored.n_bytes].view(stored_dtype).view(stored.shape)
            self._pread([(stored.offset, raw)], stored.file)
            into.copy_(raw)
        self._check_finite(name, into)
        return into

    def _stored(self, name: str) -> StoredTensor:
        stored = self._index.get(name)
        if stored is None:
            raise ModelLoadError(
                f"{self.source}: tensor {name!r} is missing from the safetensors files", source=str(self.source)
            )
        return stored

    def _torch_dtype(self, name: str, stored: StoredTensor) -> torch.dtype:
        import torch

        dtype = getattr(torch, TORCH_DTYPE_NAMES.get(stored.dtype, ""), None)
        if not isinstance(dtype, torch.dtype):
            raise ModelLoadError(
                f"{self.source}: tensor {name!r} is stored as {stored.dtype}, which reefguard cannot compute with",
                source=str(self.source),
            )
        return dtype

    def _pread(self, pieces: Sequence[tuple[int, torch.Tensor]], file: Path) -> None:
        """Fill each tensor with the bytes at its offset in ``file`` (``os.pread``: nothing is mapped).

        A memory map would make every page it touched, and the pages the kernel maps around each (fault-around),
        count as this process's memory until unmapped; reading copies only the bytes asked for.

        Raises:
            ModelLoadError: the file ends first.
        """
        import torch

        fd = os.open(file, os.O_RDONLY)
        try:
            for offset, tensor in pieces:
                view = tensor.view(-1).view(torch.uint8).numpy().data
                done = 0
                while done < len(view):
                    got = os.preadv(fd, [view[done:]], offset + done)
                    if got == 0:
                        raise ModelLoadError(f"{file}: ends inside a tensor; download it again", source=str(file))
                    done += got
        finally:
            os.close(fd)

    def _check_finite(self, name: str, tensor: torch.Tensor) -> None:
        import torch

        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelLoadError(
                f"{self.source}: tensor {name!r} holds NaN or infinite values; the weights are corrupt",
                source=str(self.source),
            )

    def _load_outside_blocks(
        self, skeleton: Any, prefix: str, blocks_path: str, vocabulary: torch.Tensor, compute: torch.dtype
    ) -> None:
        """Materialize the skeleton's tensors outside the blocks; the input embedding keeps only ``vocabulary``."""
        import torch

        embedding = skeleton.get_input_embeddings()
        embedding_name = _embedding_name(skeleton)
        state = {
            name: self._read(prefix + name, compute)
            for name in skeleton.state_dict()
            if not name.startswith((f"{blocks_path}.", f"{embedding_name}.weight"))
        }
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
        """Rows ``rows`` of a 2-D stored floating-point tensor, as stored; only their bytes are read."""
        import torch

        stored = self._index.get(name)
        dtype = self._torch_dtype(name, stored) if stored is not None else None
        if stored is None or dtype is None or not dtype.is_floating_point or len(stored.shape) != 2:
            raise ModelLoadError(f"{self.source}: no 2-D float embedding {name!r}", source=str(self.source))
        picked = torch.empty((len(rows), stored.shape[1]), dtype=dtype)
        row_bytes = stored.n_bytes // stored.shape[0]
        self._pread(
            [(stored.offset + row * row_bytes, out) for row, out in zip(rows.tolist(), picked, strict=True)],
            stored.file,
        )
        self._check_finite(name, picked)
        return picked

    def _load_block(self, meta_block: Any, prefix: str, compute: torch.dtype) -> Any:
        """Give a meta-device block its weights from the files, and return it in eval mode.

        The weights go into the previous block's tensors (blocks share their shapes), which that block no longer
        needs: one block's worth is allocated once, instead of freed and allocated again for every block.
        """
        state = {
            name: self._read(prefix + name, compute, into=self._block_weights.get(name))
            for name in meta_block.state_dict()
        }
        self._block_weights = state
        meta_block.load_state_dict(state, strict=True, assign=True)
        return meta_block.eval()


def _empty_bytes() -> torch.Tensor:
    import torch

    return torch.empty(0, dtype=torch.uint8)


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

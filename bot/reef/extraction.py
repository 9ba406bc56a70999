"""Last-token residual-stream states after each transformer block, as REEF reads them.

REEF hooks each decoder block and keeps the block's output at the last token (before the final norm; the last
entry of transformers' ``hidden_states`` tuple has that norm applied, so we hook the blocks ourselves).
Probes run in right-padded batches with attention masks, and each text's own last real token is read, so a
batched run equals one probe at a time. Texts are sorted by length to keep padding small, and results are
returned in the probes' order. The forward pass stops after the deepest block that is asked for.

Tokenizing (``probe_batches``, numpy only) and running (``batch_states``) are separate steps, so the probes
can be tokenized before the model is loaded, in a process of their own (``bot.reef.tokenizing``). Two runners
share the tokenized batches: the whole model in memory (forward hooks on its blocks), or a ``BlockRunner`` that
streams the model one block at a time (``bot.reef.streaming``, for models that would not fit). Both see the
same batches, so they return the same states.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from bot.errors import ConfigError, ModelLoadError
from bot.progress import progress_bar
from bot.reef.loading import LoadedModel

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MAX_PROBE_TOKENS = 256  # probes are short; a longer one is cut here, with a warning, instead of growing the batch


class StopForward(Exception):
    """Raised at the deepest block that is needed, to skip the rest of the model's forward pass."""


@dataclass(frozen=True, slots=True)
class ProbeBatch:
    """One right-padded batch of probes, as numpy arrays (tokenizing needs no torch, see ``bot.reef.tokenizing``).

    Attributes:
        rows: the probes' indices in the caller's text order, one per batch row.
        inputs: the tokenizer's arrays the forward pass takes (``input_ids``, ``attention_mask``, ...), int64.
        last_index: position of each row's last real token.
    """

    rows: list[int]
    inputs: dict[str, NDArray[np.int64]]
    last_index: NDArray[np.int64]

    def tensors(self) -> dict[str, torch.Tensor]:
        """``inputs`` as torch tensors (sharing their memory)."""
        import torch

        return {key: torch.from_numpy(value) for key, value in self.inputs.items()}


@runtime_checkable
class BlockRunner(Protocol):
    """A model that runs probe batches itself instead of being called whole (a streamed model)."""

    @property
    def config(self) -> Any:
        """The transformers config."""
        ...

    def last_token_states(
        self, batches: Sequence[ProbeBatch], layers: Sequence[int], *, show_progress: bool
    ) -> dict[int, list[torch.Tensor]]:
        """Block outputs at each row's last token: layer -> one ``(rows, hidden)`` float32 tensor per batch."""
        ...


def transformer_blocks(model: Any, n_layers: int) -> Any:
    """The model's list of transformer blocks: the ``ModuleList`` that holds ``n_layers`` modules.

    Raises:
        ModelLoadError: no such list (an architecture this extraction does not understand).
    """
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            logger.debug("transformer blocks at %s", name)
            return module
    raise ModelLoadError(f"cannot find the {n_layers} transformer blocks of {type(model).__name__}")


def _prepare_tokenizer(tokenizer: Any) -> None:
    """Right padding, so each row's last real token sits at (length - 1); a pad token if the model has none."""
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ModelLoadError("the tokenizer has no pad, eos or unk token to pad batches with")
        tokenizer.pad_token = fallback


def probe_batches(tokenizer: Any, texts: Sequence[str], *, batch_size: int, max_tokens: int) -> list[ProbeBatch]:
    """Tokenize the probes into length-sorted, right-padded batches (cut at ``max_tokens``, with a warning).

    Raises:
        ConfigError: a batch size below 1.
        ModelLoadError: the tokenizer has no token to pad with.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}", key="batch-size")
    _prepare_tokenizer(tokenizer)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches: list[ProbeBatch] = []
    n_cut = 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        encoded = tokenizer(
            [texts[i] for i in rows], return_tensors="np", padding=True, truncation=True, max_length=max_tokens
        )
        last_index = np.asarray(encoded["attention_mask"], dtype=np.int64).sum(axis=1) - 1
        n_cut += int((last_index == max_tokens - 1).sum())
        batches.append(ProbeBatch(rows=rows, inputs=_model_inputs(encoded), last_index=last_index))
    if n_cut:
        logger.warning("%d probe(s) reached %d tokens and were cut there", n_cut, max_tokens)
    return batches


def token_limit(config: Any) -> int:
    """Tokens per probe: ``MAX_PROBE_TOKENS``, or fewer if the model (its transformers config) has fewer positions."""
    positions = getattr(config.get_text_config(), "max_position_embeddings", None)
    return min(MAX_PROBE_TOKENS, int(positions)) if positions else MAX_PROBE_TOKENS


def extract_states(
    loaded: LoadedModel,
    texts: Sequence[str],
    *,
    layers: Sequence[int],
    batch_size: int = 16,
    show_progress: bool = False,
) -> NDArray[np.float32]:
    """Tokenize the probes and return the last-token state after each requested block (``batch_states``).

    The tokenizer is loaded for the tokenizing and dropped before any weight is read.

    Raises:
        ConfigError: a batch size below 1, or as ``batch_states``.
        ModelLoadError: the tokenizer cannot load or pad, or as ``batch_states``.
    """
    batches = probe_batches(
        loaded.load_tokenizer(), texts, batch_size=batch_size, max_tokens=token_limit(loaded.model.config)
    )
    return batch_states(loaded, batches, layers=layers, show_progress=show_progress)


def batch_states(
    loaded: LoadedModel, batches: Sequence[ProbeBatch], *, layers: Sequence[int], show_progress: bool = False
) -> NDArray[np.float32]:
    """Run tokenized probes and return the last-token state after each requested block.

    Args:
        loaded: the model (a whole model, or a streamed one from ``bot.reef.streaming``).
        batches: the probes, from ``probe_batches``.
        layers: 0-based block indices to keep (block i's output is transformers' ``hidden_states[i + 1]``
            without the final norm).
        show_progress: draw a progress bar on stderr.

    Returns:
        Array of shape ``(len(layers), n_probes, hidden_size)``, float32, rows in the probes' text order.

    Raises:
        ConfigError: no probes or no layers, or a layer out of range.
        ModelLoadError: the model's blocks (or a streamed block's weights) cannot be found.
    """
    if not batches or not layers:
        raise ConfigError("nothing to extract: no probe texts or no layers")
    if min(layers) < 0 or max(layers) >= loaded.n_layers:
        raise ConfigError(f"layers {list(layers)} out of range for a {loaded.n_layers}-block model", key="layers")
    wanted = sorted(set(layers))
    if isinstance(loaded.model, BlockRunner):
        captured = loaded.model.last_token_states(batches, wanted, show_progress=show_progress)
    else:
        captured = _run_whole_model(loaded, batches, wanted, show_progress=show_progress)
    n_probes = sum(len(batch.rows) for batch in batches)
    out = np.zeros((len(layers), n_probes, loaded.hidden_size), dtype=np.float32)
    for k, layer in enumerate(layers):
        for batch, states in zip(batches, captured[layer], strict=True):
            out[k, batch.rows] = states.numpy()
    return out


def _run_whole_model(
    loaded: LoadedModel, batches: Sequence[ProbeBatch], layers: Sequence[int], *, show_progress: bool
) -> dict[int, list[torch.Tensor]]:
    """Forward hooks on the blocks of a model held whole in memory; stops after the deepest block needed."""
    import torch

    blocks = transformer_blocks(loaded.model, loaded.n_layers)
    deepest = max(layers)
    captured: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    current: list[torch.Tensor] = []  # the batch being run: its last_index

    def hook_for(layer: int) -> Any:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            rows = torch.arange(hidden.shape[0])
            captured[layer].append(hidden[rows, current[0]].float())
            if layer == deepest:
                raise StopForward

        return hook

    handles = [blocks[layer].register_forward_hook(hook_for(layer)) for layer in layers]
    try:
        with torch.inference_mode():
            for batch in progress_bar(batches, desc="probes", unit="batch", enabled=show_progress):
                current[:] = [torch.from_numpy(batch.last_index)]
                with contextlib.suppress(StopForward):
                    loaded.model(**batch.tensors())
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _model_inputs(encoded: Any) -> dict[str, NDArray[np.int64]]:
    """Only the inputs the forward pass needs; BERT tokenizers also return token_type_ids, which it accepts."""
    wanted = {"input_ids", "attention_mask", "token_type_ids"}
    return {key: np.asarray(value, dtype=np.int64) for key, value in encoded.items() if key in wanted}

"""The causal-LM loss with the LM head applied to a few tokens at a time (issue 17).

A 262k-token vocabulary (Gemma 3) makes the LM head most of a small model's work: transformers' loss materialises
every position's logits, then the softmax, then the gradient of the logits (each ``tokens × vocab`` floats).
``head_loss`` runs the model's decoder for the hidden states and then, ``chunk_tokens`` rows at a time: logits,
log-sum-exp, the picked logit and, when a gradient is wanted, the gradient with respect to the hidden states
(``(softmax − onehot) @ W``), so no ``tokens × vocab`` tensor outlives its chunk and the head costs two matrix
products per pass (forward and input gradient), as before. When every row fits in one chunk (a training batch of
a few windows), the softmax and the input gradient wait for ``backward``, with the logits kept until then: a
pass whose backward never runs (Trap²'s capped scaled pass) costs one matrix product of the head, not two.

The loss is exactly the mean next-token cross-entropy transformers computes (same reduction, same shift), in
float32; the vocabulary is never restricted (the softmax normaliser needs every token, so a restricted vocabulary
would change the objective).

It applies when the head is a plain linear map: no bias, a frozen weight (LoRA training: the weight is the base's;
or no gradient at all, as in evaluation), no logit soft-capping. Otherwise ``supports`` says no and the caller
uses the model's own loss.
"""

from __future__ import annotations

from typing import Any

import torch

# Logit rows per chunk: 2^25 floats (128 MiB) at most, e.g. 128 tokens of Gemma 3's 262,144-token vocabulary.
CHUNK_FLOATS = 1 << 25


def _causal(model: torch.nn.Module) -> Any:
    """The transformers causal LM inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def supports(model: torch.nn.Module) -> bool:
    """Whether ``head_loss`` computes exactly the model's own loss (a bias-free, frozen, uncapped linear head)."""
    causal = _causal(model)
    head = causal.get_output_embeddings() if hasattr(causal, "get_output_embeddings") else None
    decoder = causal.get_decoder() if hasattr(causal, "get_decoder") else None
    if not isinstance(head, torch.nn.Linear) or decoder is None or decoder is causal:
        return False
    capped = getattr(getattr(causal, "config", None), "final_logit_softcapping", None)
    frozen = not head.weight.requires_grad or not torch.is_grad_enabled()  # evaluation: no weight gradient
    return head.bias is None and frozen and not capped


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` against ``labels``.

    With one chunk the input gradient is made in ``backward`` from the kept logits; with several it is made chunk
    by chunk in the forward (no ``tokens × vocab`` tensor is kept).
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int) -> Any:
        want_grad = hidden.requires_grad
        ctx.deferred = want_grad and hidden.shape[0] <= chunk
        total = hidden.new_zeros(())
        grad = torch.zeros_like(hidden) if want_grad and not ctx.deferred else None
        count = max(int(labels.numel()), 1)
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            logits = hidden[rows] @ weight.T
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, labels[rows, None])[:, 0]).sum()
            if ctx.deferred:
                ctx.save_for_backward(logits, lse, labels, weight)
                ctx.count = count
            elif grad is not None:
                grad[rows] = _input_gradient(logits, lse, labels[rows], weight)
        if grad is not None:
            ctx.save_for_backward(grad / count)
        return total / count

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Any:
        if ctx.deferred:
            logits, lse, labels, weight = ctx.saved_tensors
            grad = _input_gradient(logits, lse, labels, weight) / ctx.count
        else:
            (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None, None


def _input_gradient(logits: torch.Tensor, lse: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> Any:
    """``(softmax − onehot) @ weight``: the summed cross-entropy's gradient with respect to the rows' hidden states.

    The softmax is made in place of ``logits``.
    """
    probs = logits.sub_(lse[:, None]).exp_()
    probs[torch.arange(probs.shape[0]), labels] -= 1.0
    return probs @ weight


def head_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``model`` on ``batch`` (B × T ids), the LM head in chunks.

    Call only where ``supports(model)``; works inside ``torch.func.functional_call`` (the decoder and the head
    are the model's own submodules).

    Example:
        >>> import torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> _ = torch.manual_seed(0)
        >>> config = LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        ...                      num_attention_heads=2, num_key_value_heads=1)
        >>> model = LlamaForCausalLM(config).requires_grad_(False)
        >>> batch = torch.randint(0, 300, (2, 9))
        >>> supports(model), abs(float(head_loss(model, batch) - model(input_ids=batch, labels=batch).loss)) < 1e-5
        (True, True)
    """
    causal = _causal(model)
    head = causal.get_output_embeddings()
    hidden = causal.get_decoder()(input_ids=batch).last_hidden_state[:, :-1]
    labels = batch[:, 1:].reshape(-1)
    weight = head.weight
    chunk = max(1, CHUNK_FLOATS // weight.shape[0])
    flat = hidden.reshape(-1, hidden.shape[-1])
    loss: torch.Tensor = _ChunkedCrossEntropy.apply(flat, weight, labels, chunk)  # type: ignore[no-untyped-call]
    return loss


class HeadLoss(torch.nn.Module):
    """``head_loss`` as a module around ``model`` (registered as ``model``), for ``torch.func.functional_call``:
    parameter names gain the prefix ``model.``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return head_loss(self.model, batch)

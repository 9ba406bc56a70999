"""Merge attacks: the operators an attacker would use to fold a released update into a merge.

Every method combines dense task vectors τ_i = W_i − W0 of one base (the protected, or twin, update first, then the
others) into one merged task vector; the merged model is ``W0 + merged``. Each method is a small class with its
coefficient grid; ``MERGES`` is the literal table. Our own few lines of torch, written from the papers:

- ``linear``: the plain average Σ τ_i / N (a model soup; mergekit ``linear`` with equal weights).
- ``task-arithmetic``: λ·Σ τ_i over a grid of λ (Ilharco et al. 2023).
- ``ties``: per tensor, keep each τ_i's top-``density`` entries by magnitude (trim), elect each coordinate's sign
  as the sign of the sum of the trimmed values, average only the entries that agree with it (disjoint mean),
  times λ (Yadav et al. 2023). Trimming is per tensor, not over the whole flattened vector.
- ``dare``: drop each entry of each τ_i with probability p, rescale the survivors by 1/(1 − p), then λ·Σ
  (Yu et al. 2024). One seeded mask per setting.
- ``asymmetric``: τ_protected + c·Σ τ_other: the protected update kept at exactly its authorised scale 1 and the
  others down-weighted — an attacker who knows the defence (our addition; not in the paper).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from bot.trap2.scaling import TaskVector

Params = Mapping[str, float]


class MergeMethod(Protocol):
    """One merge operator and the settings an attacker would search."""

    @property
    def name(self) -> str:
        """Short name used in reports."""
        ...

    @property
    def reference(self) -> str:
        """The paper that defines it."""
        ...

    def settings(self) -> tuple[Params, ...]:
        """The coefficient grid (each a mapping of parameter name to value)."""
        ...

    def merge(self, vectors: Sequence[TaskVector], params: Params) -> dict[str, torch.Tensor]:
        """Merged task vector of ``vectors`` (protected first) under ``params``."""
        ...


def _keys(vectors: Sequence[TaskVector]) -> list[str]:
    return sorted({k for v in vectors for k in v})


def _stack(vectors: Sequence[TaskVector], key: str) -> torch.Tensor:
    import torch

    like = next(v[key] for v in vectors if key in v)
    return torch.stack([v[key] if key in v else torch.zeros_like(like) for v in vectors])


def weighted_sum(vectors: Sequence[TaskVector], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Σ weights_i·τ_i, tensor by tensor.

    Example:
        >>> import torch
        >>> weighted_sum([{"w": torch.ones(2)}, {"w": torch.full((2,), 3.0)}], [0.5, 0.5])["w"].tolist()
        [2.0, 2.0]
    """
    out = {}
    for key in _keys(vectors):
        stacked = _stack(vectors, key)
        out[key] = sum((w * t for w, t in zip(weights, stacked, strict=True)), start=stacked[0] * 0)
    return out


def trim_top(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """``tensor`` with all but its top ``density`` share of entries (by magnitude) set to zero.

    Example:
        >>> import torch
        >>> trim_top(torch.tensor([0.1, -3.0, 2.0, 0.5]), 0.5).tolist()
        [0.0, -3.0, 2.0, 0.0]
    """
    if density >= 1:
        return tensor
    flat = tensor.abs().flatten()
    keep = max(1, round(density * flat.numel()))
    threshold = flat.kthvalue(flat.numel() - keep + 1).values
    return tensor * (tensor.abs() >= threshold)


def ties_tensor(stacked: torch.Tensor, density: float) -> torch.Tensor:
    """TIES on one tensor stacked over tasks (dim 0): trim, elect sign, disjoint mean.

    Example:
        >>> import torch
        >>> ties_tensor(torch.tensor([[1.0, -2.0], [3.0, 4.0], [-1.0, -4.0]]), 1.0).tolist()
        [2.0, -3.0]
    """
    import torch

    trimmed = torch.stack([trim_top(t, density) for t in stacked])
    sign = torch.sign(trimmed.sum(dim=0))
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    count = agree.sum(dim=0).clamp(min=1)
    return (trimmed * agree).sum(dim=0) / count


@dataclass(frozen=True, slots=True)
class Linear:
    name: str = "linear"
    reference: str = "https://arxiv.org/abs/2203.05482"

    def settings(self) -> tuple[Params, ...]:
        return ({},)

    def merge(self, vectors: Sequence[TaskVector], params: Params) -> dict[str, torch.Tensor]:
        return weighted_sum(vectors, [1.0 / len(vectors)] * len(vectors))


@dataclass(frozen=True, slots=True)
class TaskArithmetic:
    coefficients: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 21))
    name: str = "task-arithmetic"
    reference: str = "https://arxiv.org/abs/2212.04089"

    def settings(self) -> tuple[Params, ...]:
        return tuple({"lambda": c} for c in self.coefficients)

    def merge(self, vectors: Sequence[TaskVector], params: Params) -> dict[str, torch.Tensor]:
        return weighted_sum(vectors, [params["lambda"]] * len(vectors))


@dataclass(frozen=True, slots=True)
class Ties:
    densities: tuple[float, ...] = (0.2, 0.5, 0.8, 1.0)
    coefficients: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    name: str = "ties"
    reference: str = "https://arxiv.org/abs/2306.01708"

    def settings(self) -> tuple[Params, ...]:
        return tuple({"density": d, "lambda": c} for d in self.densities for c in self.coefficients)

    def merge(self, vectors: Sequence[TaskVector], params: Params) -> dict[str, torch.Tensor]:
        return {k: params["lambda"] * ties_tensor(_stack(vectors, k), params["density"]) for k in _keys(vectors)}


@dataclass(frozen=True, slots=True)
class Dare:
    drop_rates: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    coefficients: tuple[float, ...] = (0.3, 0.5, 0.7, 1.0)
    seed: int = 0
    name: str = "dare"
    reference: str = "https://arxiv.org/abs/2311.03099"

    def settings(self) -> tuple[Params, ...]:
        return tuple({"drop": p, "lambda": c} for p in self.drop_rates for c in self.coefficients)

    def merge(self, vectors: Sequence[TaskVector], params: Params) -> dict[str, torch.Tensor]:
        import torch

        generator = torch.Generator().manual_seed(self.seed)
        keep = 1.0 - params["drop"]
        dropped = []
        for vector in vectors:
            dropped.append(
                {k: t * (torch.rand(t.shape, generator=generator) < keep) / keep for k, t in sorted(vector.items())}
            )
        return weighted_sum(dropped, [params["lambda"]] * len(vectors))


@dataclass(frozen=True, slots=True)
class Asymmetric:
    coefficients: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    name: str = "asymmetric"
    reference: str = "reefguard (protected kept at 1.0, others down-weighted; not in the Trap² paper)"

    def settings(self) -> tuple[Params, ...]:
        return tuple({"others": c} for c in self.coefficients)

    def merge(self, vectors: Sequence[TaskVector], params: Params) -> dict[str, torch.Tensor]:
        return weighted_sum(vectors, [1.0] + [params["others"]] * (len(vectors) - 1))


MERGES: dict[str, MergeMethod] = {
    "linear": Linear(),
    "task-arithmetic": TaskArithmetic(),
    "ties": Ties(),
    "dare": Dare(),
    "asymmetric": Asymmetric(),
}


def describe(params: Params) -> str:
    """A setting as text, e.g. ``density=0.5 lambda=1``.

    Example:
        >>> describe({"density": 0.5, "lambda": 1.0})
        'density=0.5 lambda=1'
    """
    return " ".join(f"{k}={v:g}" for k, v in params.items()) or "-"

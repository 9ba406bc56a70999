"""Weight-level evidence: does a suspect carry a source's embedding rows, up to a reparametrization?

REEF compares what models compute; an independently trained model of the same architecture on the same data
computes much the same (REEF scores it 0.76-0.94), so representations alone cannot clear it. Weights can: a
fine-tuned, pruned, quantized, merged, permuted or rotated copy keeps the source's rows up to a map of the hidden
space, an independent model does not.

The evidence, for two models whose vocabularies share tokens:

1. **Anchors.** Each fingerprint keeps the input-embedding rows of its anchor tokens: the tokens the probes
   use most, at most ``MAX_ANCHORS`` rows and ``ANCHOR_BYTES`` in float16 (512 rows up to 1953 wide; 244
   of a 4096-wide one). Tokens are matched by their string, so an extended vocabulary changes nothing.
2. **Fine parts.** The source's ``COARSE_DIRECTIONS`` strongest token-space directions, which every trained
   embedding shares, are dropped from both models' rows (``fine_parts``).
3. **Two statistics** (``STATISTICS``). *Units*: every source unit is correlated with every suspect unit and
   the assignment problem (Hungarian, on absolute correlations) pairs them one to one; the score is the mean
   absolute correlation of the pairs, unchanged by permuting, rescaling or negating units. *Geometry*: the
   debiased CKA of the two sets of rows, which sees only the tokens' inner products and so is unchanged by any
   rotation of the residual stream (what SliceGPT, QuaRot and SpinQuant apply), which scrambles the units.
4. **Null.** Independent models are not at 0: trained embeddings share token statistics, and the assignment
   picks the best of many pairings. Measured on the demo models, an independent model sits 4 to 7 standard
   deviations above randomly rotated copies of itself, so a rotation null would accuse. The p-value instead
   treats the suspect as one more model unrelated to the source, as ``bot.reef.verdict`` does for CKA: the
   scores of the source against the registry's unrelated entries form the null, one per statistic.
5. **Merge coefficients.** Non-negative least squares of the suspect's shared rows on the sources' aligned
   rows (``fit_sources``) says what share of each a merge holds, and what each source's term is; the
   suspect less the other sources' terms is what ``bot.reef.verdict`` (rule 6) aligns a merge's component
   with (a 0.4 share correlates only about 0.55 with the merge, about 1.0 with what the 0.6 share leaves).
   ``WeightScores.share`` measures one source's share on the fine parts, which a parent outside the registry
   does not bias (rule 7).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bot.reef.loading import LoadedModel

if TYPE_CHECKING:
    import torch

MAX_ANCHORS = 512
ANCHOR_BYTES = 2_000_000
MIN_SHARED = 64
"""Fewer shared anchor tokens than this and the weights say nothing (other tokenizer families)."""
COARSE_DIRECTIONS = 8
"""Token-space directions that every trained embedding shares, projected out before comparing (``fine_parts``)."""


@dataclass(frozen=True, slots=True)
class Anchors:
    """Input-embedding rows of a model's anchor tokens.

    Attributes:
        tokens: the tokens, as the tokenizer spells them, most used by the probes first.
        rows: ``(len(tokens), hidden_size)`` float32, read-only, rounded to float16 (the stored precision).
    """

    tokens: tuple[str, ...]
    rows: NDArray[np.float32] = field(repr=False)

    def __post_init__(self) -> None:
        if self.rows.shape[0] != len(self.tokens) or self.rows.ndim != 2:
            raise ValueError(f"{len(self.tokens)} anchor tokens but rows of shape {self.rows.shape}")


@dataclass(frozen=True, slots=True)
class Alignment:
    """Source units paired with suspect units over the shared anchor tokens.

    Attributes:
        score: mean absolute correlation of the paired units.
        shared_tokens: how many anchor tokens both vocabularies have.
        source_units, suspect_units: the pairs, as two index arrays.
        signs: the sign of each pair's correlation.
    """

    score: float
    shared_tokens: int
    source_units: NDArray[np.intp] = field(repr=False)
    suspect_units: NDArray[np.intp] = field(repr=False)
    signs: NDArray[np.float64] = field(repr=False)


def anchor_count(hidden_size: int) -> int:
    """How many anchor rows a model of this width keeps (``MAX_ANCHORS``, fewer when over ``ANCHOR_BYTES``).

    Example:
        >>> anchor_count(640), anchor_count(4096)
        (512, 244)
    """
    return max(MIN_SHARED, min(MAX_ANCHORS, ANCHOR_BYTES // (2 * hidden_size)))


def anchor_tokens(tokenizer: Any, texts: Sequence[str]) -> tuple[tuple[int, str], ...]:
    """The candidate anchors: the probes' non-special tokens as ``(id, spelling)``, most used first.

    A spelling counts once (its first id); at most ``MAX_ANCHORS``, of which ``anchors_of`` keeps as many as
    the model's width allows.
    """
    counts: Counter[int] = Counter()
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        counts.update(ids)
    special = set(tokenizer.all_special_ids)
    ranked = sorted((token for token in counts if token not in special), key=lambda t: (-counts[t], t))
    picked: dict[str, int] = {}
    for token, spelling in zip(ranked, tokenizer.convert_ids_to_tokens(ranked), strict=True):
        if spelling is not None and spelling not in picked:
            picked[spelling] = token
        if len(picked) == MAX_ANCHORS:
            break
    return tuple((token, spelling) for spelling, token in picked.items())


def anchors_of(loaded: LoadedModel, candidates: Sequence[tuple[int, str]]) -> Anchors:
    """The anchors of a loaded model: the first ``anchor_count`` of ``anchor_tokens``, with their rows."""
    import torch

    kept = candidates[: anchor_count(loaded.hidden_size)]
    rows = _embedding_rows(loaded.model, torch.tensor([token for token, _ in kept], dtype=torch.long))
    stored = rows.float().numpy().astype(np.float16).astype(np.float32)
    stored.setflags(write=False)
    return Anchors(tuple(spelling for _, spelling in kept), stored)


def _embedding_rows(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """Rows ``ids`` of the model's input embedding (a streamed model reads them from its files)."""
    import torch

    from bot.reef.streaming import StreamedModel

    if isinstance(model, StreamedModel):
        return model.embedding_rows(ids)
    with torch.no_grad():
        rows: torch.Tensor = model.get_input_embeddings().weight[ids].detach()
    return rows


def shared_rows(source: Anchors, suspect: Anchors) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The two models' rows for the anchor tokens both have, in the source's order."""
    where = {token: i for i, token in enumerate(suspect.tokens)}
    pairs = [(i, where[token]) for i, token in enumerate(source.tokens) if token in where]
    if not pairs:
        empty = np.zeros((0, 0))
        return empty, empty
    mine, theirs = (np.asarray(side, dtype=np.intp) for side in zip(*pairs, strict=True))
    return source.rows[mine].astype(np.float64), suspect.rows[theirs].astype(np.float64)


def _standardized(rows: NDArray[np.float64]) -> NDArray[np.float64]:
    centred = rows - rows.mean(axis=0)
    scale = centred.std(axis=0)
    # A unit that is constant over the tokens (pruned away) correlates with nothing.
    standardized: NDArray[np.float64] = np.divide(centred, scale, out=np.zeros_like(centred), where=scale > 1e-12)
    return standardized


def _paired_correlations(
    a: NDArray[np.float64], b: NDArray[np.float64]
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
    """Units of ``a`` paired one to one with units of ``b`` (Hungarian, on absolute correlations over the
    rows) and each pair's correlation."""
    from scipy.optimize import linear_sum_assignment

    correlation = _standardized(a).T @ _standardized(b) / len(a)
    rows, cols = linear_sum_assignment(np.abs(correlation), maximize=True)
    return rows, cols, correlation[rows, cols]


def align(source: Anchors, suspect: Anchors) -> Alignment | None:
    """Pair the source's hidden units with the suspect's; None when they share fewer than ``MIN_SHARED`` tokens.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> rows = rng.standard_normal((100, 8)).astype(np.float32)
        >>> tokens = tuple(f"t{i}" for i in range(100))
        >>> moved = Anchors(tokens, -3 * rows[:, ::-1])  # units reversed, scaled, negated
        >>> found = align(Anchors(tokens, rows), moved)
        >>> round(found.score, 6), found.suspect_units.tolist()
        (1.0, [7, 6, 5, 4, 3, 2, 1, 0])
    """
    a, b = shared_rows(source, suspect)
    if len(a) < MIN_SHARED:
        return None
    rows, cols, paired = _paired_correlations(a, b)
    return Alignment(
        score=float(np.abs(paired).mean()),
        shared_tokens=len(a),
        source_units=rows,
        suspect_units=cols,
        signs=np.sign(paired),
    )


# ---- the two statistics ----------------------------------------------------------------------------------------


def fine_parts(a: NDArray[np.float64], b: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Both models' rows less what every trained embedding shares, in coordinates of what is left.

    Each side is centred over the tokens; then the source's ``COARSE_DIRECTIONS`` strongest token-space
    directions (at most a quarter of its rank) are dropped from both, by expressing every column in an
    orthonormal basis of the token space orthogonal to them and to the all-ones vector. Those directions
    (token frequency, spelling, word class) are learned by any model of the same data, so they make independent
    models look alike: on the demo models an independent model's units score drops from 0.44-0.54 to 0.24-0.33
    without them, while a fine-tune stays at 0.97 and a 50/50 merge with an unregistered model at 0.62. A basis,
    rather than a projection left in token space, gives both sides no common structure of our making.
    """
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    kept = min(COARSE_DIRECTIONS, min(*a.shape, b.shape[1]) // 4)  # a narrow model keeps most of its rank
    directions = np.linalg.svd(a, full_matrices=False)[0][:, :kept]
    ones = np.full((len(a), 1), len(a) ** -0.5)
    rest = np.linalg.qr(np.hstack([ones, directions]), mode="complete")[0][:, kept + 1 :]
    return rest.T @ a, rest.T @ b


STATISTICS = {
    "units": "permutations, per-unit scales and signs of hidden units",
    "geometry": "any orthogonal map of the hidden space (rotation)",
}
"""The weight statistics, each with the reparametrizations that leave it unchanged."""


def geometry_score(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Debiased linear CKA of the two sets of rows (``bot.reef.cka``): it depends only on the tokens' inner
    products, so any orthogonal map of the hidden space (rotation, permutation, sign flips) and any global scale
    leave it unchanged; debiased, because plain CKA of a few hundred rows of a wide model is high by chance
    (0.95 for two independent random 244 × 4096 matrices, against 0.00 debiased).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a = rng.standard_normal((50, 6))
        >>> rotation = np.linalg.qr(rng.standard_normal((6, 6)))[0]
        >>> round(geometry_score(a, 3 * a @ rotation), 6)
        1.0
    """
    from bot.reef.cka import MEASURES, cka_grid

    return float(cka_grid((a @ a.T)[None], (b @ b.T)[None], MEASURES["debiased"])[0, 0])


@dataclass(frozen=True, slots=True)
class WeightScores:
    """Two models' anchor rows compared (``weight_scores``).

    Attributes:
        scores: each statistic of ``STATISTICS`` on the rows' ``fine_parts``; 1 for the same weights. *units*:
            mean absolute correlation of hidden units paired one to one (Hungarian). *geometry*:
            ``geometry_score``.
        shared_tokens: how many anchor tokens both models have.
        share: how much of the source's rows the suspect holds: the least-squares coefficient of the suspect's
            fine parts on the source's paired units (a 50/50 merge holds 0.5, a fine-tune about 1); it means
            something only where the units pair up.
        explained: the part of the suspect's fine parts that this one term explains (R²): about 1 for a
            rescaled copy, well under for a merge, whose other parent explains the rest.
    """

    scores: dict[str, float]
    shared_tokens: int
    share: float
    explained: float


def weight_scores(source: Anchors, suspect: Anchors) -> WeightScores | None:
    """Compare the anchor rows of the tokens both models have; None when they are fewer than ``MIN_SHARED``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> tokens = tuple(f"t{i}" for i in range(300))
        >>> a, b = (rng.standard_normal((300, 16)).astype(np.float32) for _ in range(2))
        >>> rotation = np.linalg.qr(rng.standard_normal((16, 16)))[0].astype(np.float32)
        >>> rotated = weight_scores(Anchors(tokens, a), Anchors(tokens, a @ rotation))
        >>> round(rotated.scores["geometry"], 4), rotated.scores["units"] < 0.9, rotated.shared_tokens
        (1.0, True, 300)
        >>> relabelled = weight_scores(Anchors(tokens, a), Anchors(tokens, -2 * a[:, ::-1]))
        >>> round(relabelled.scores["units"], 4), round(relabelled.share, 4)
        (1.0, 2.0)
        >>> merged = weight_scores(Anchors(tokens, a), Anchors(tokens, 0.5 * a + 0.5 * b))
        >>> round(merged.share, 1), merged.explained < 0.6
        (0.5, True)
    """
    a, b = shared_rows(source, suspect)
    if len(a) < MIN_SHARED:
        return None
    fine_a, fine_b = fine_parts(a, b)
    rows, cols, paired = _paired_correlations(fine_a, fine_b)
    rebuilt, target = fine_a[:, rows] * np.sign(paired), fine_b[:, cols]
    total, variance = float(np.sum(rebuilt * rebuilt)), float(np.sum(target * target))
    share = max(0.0, float(np.sum(rebuilt * target)) / total) if total > 0 else 0.0
    left = float(np.sum((target - share * rebuilt) ** 2))
    return WeightScores(
        scores={"units": float(np.abs(paired).mean()), "geometry": geometry_score(fine_a, fine_b)},
        shared_tokens=len(a),
        share=share,
        explained=1.0 - left / variance if variance > 0 else 0.0,
    )


@dataclass(frozen=True, slots=True)
class SourceFit:
    """The suspect's anchor rows as a non-negative mix of sources' aligned rows.

    Attributes:
        shares: one weight per source, in the order given (0 for a source that does not align).
        r2: the share of the rows' variance the mix explains.
        residual: the suspect's rows less the mix, on the tokens every model shares: what another merged
            source would have to explain.
        parts: each source's term of the mix (its share times its aligned rows), on the same tokens; the
            residual plus one part is what the other sources leave.
    """

    shares: tuple[float, ...]
    r2: float
    residual: Anchors
    parts: tuple[Anchors, ...]


def fit_sources(suspect: Anchors, sources: Sequence[Anchors]) -> SourceFit | None:
    """Non-negative least squares of the suspect's rows on each source's rows, aligned to the suspect's units.

    Sources are aligned in the order given, each to what the ones before it leave unexplained (a minor
    source aligns badly with the whole merge); give the best-matching first. Only the tokens every model
    shares are used; None when they are fewer than ``MIN_SHARED``.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> tokens = tuple(f"t{i}" for i in range(200))
        >>> a, b = (rng.standard_normal((200, 16)).astype(np.float32) for _ in range(2))
        >>> fit = fit_sources(Anchors(tokens, 0.7 * a + 0.3 * b), [Anchors(tokens, a), Anchors(tokens, b)])
        >>> [round(w, 3) for w in fit.shares], round(fit.r2, 3)
        ([0.7, 0.3], 1.0)
    """
    from scipy.optimize import nnls

    common = set(suspect.tokens).intersection(*(source.tokens for source in sources))
    kept = tuple(token for token in suspect.tokens if token in common)
    if len(kept) < MIN_SHARED:
        return None
    target = _restricted(suspect, kept)
    goal = target.rows.astype(np.float64).ravel()
    columns: list[NDArray[np.float64]] = []
    left = goal
    for source in sources:  # each aligned to what the sources before it leave unexplained
        restricted = _restricted(source, kept)
        found = align(restricted, Anchors(kept, left.reshape(target.rows.shape).astype(np.float32)))
        rebuilt = np.zeros(target.rows.shape)
        if found is not None:
            rebuilt[:, found.suspect_units] = restricted.rows[:, found.source_units] * found.signs
        columns.append(rebuilt.ravel())
        design = np.stack(columns, axis=1)
        shares, _ = nnls(design, goal)
        left = goal - design @ shares
    total = float(np.sum((goal - goal.mean()) ** 2))
    shape = target.rows.shape
    return SourceFit(
        shares=tuple(float(w) for w in shares),
        r2=1.0 - float(left @ left) / total if total > 0 else 0.0,
        residual=Anchors(kept, left.reshape(shape).astype(np.float32)),
        parts=tuple(
            Anchors(kept, (w * column).reshape(shape).astype(np.float32))
            for w, column in zip(shares, columns, strict=True)
        ),
    )


def _restricted(anchors: Anchors, tokens: Sequence[str]) -> Anchors:
    where = {token: i for i, token in enumerate(anchors.tokens)}
    return Anchors(tuple(tokens), anchors.rows[[where[token] for token in tokens]])

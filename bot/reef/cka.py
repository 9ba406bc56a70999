"""Centred kernel alignment (CKA) between layers, computed from stored centred Gram matrices.

A fingerprint keeps, per layer, the (m, m) centred Gram matrix ``Kc = Xc Xcᵀ`` of the (m, d) last-token states
(m probes, d hidden units), scaled to unit Frobenius norm, instead of the states themselves. Why Grams:

* Every measure here (linear CKA as in REEF, debiased CKA, RBF CKA) depends on the states only through
  their Gram matrix, so the Gram is all a comparison needs, and models of different widths compare
  directly ((m, m) on both sides, whatever d is).
* The Gram already discards what CKA is invariant to: the order of the hidden units and any orthogonal
  transform of them (``X Q (X Q)ᵀ = X Xᵀ``), a translation (columns are centred), and the overall scale
  (unit norm). With ``standardize=True`` (REEF's per-feature z-scoring) a per-unit rescaling is
  discarded too, but an orthogonal rotation no longer is.
* Size: m(m+1)/2 stored numbers (a float16 upper triangle) instead of m*d; for m=512 probes and
  d=4096 that is 16 times fewer, and it does not grow with the model.

Each measure splits into a per-Gram ``prepare`` step that returns one unit-norm row per layer, so the
similarity of two layers is a dot product and a whole registry compares with a few matrix products
(``cka_grid``).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((32, 16))
    >>> rotation, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    >>> grams = np.stack([centered_gram(x, standardize=False)])
    >>> rotated = np.stack([centered_gram(0.8 * x @ rotation, standardize=False)])
    >>> round(float(cka_grid(grams, grams, MEASURES["linear"])[0, 0]), 6)
    1.0
    >>> [round(float(cka_grid(grams, rotated, MEASURES[name])[0, 0]), 6) for name in MEASURES]
    [1.0, 1.0, 1.0]
    >>> round(linear_cka_features(x, 0.8 * x @ rotation), 6)
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from bot.errors import ConfigError

MIN_PROBES = 4
# A feature whose std is at most this fraction of the largest std is treated as constant: centring leaves
# roundoff (~1e-16 relative) in a constant column, and z-scoring would blow that noise up to unit variance.
_CONSTANT_STD_RATIO = 1e-12
# A prepared row whose norm is below this fraction of its input Gram's norm is roundoff of a zero matrix
# (e.g. the U-centred form of a Gram with constant off-diagonal); it becomes an all-zero row.
_ZERO_NORM_RATIO = 1e-10


def _centered_features(states: NDArray[np.floating], *, standardize: bool) -> NDArray[np.float64]:
    """(m, d) states -> (m, d') centred (optionally z-scored) float64 features, constant columns dropped.

    Raises:
        ConfigError: not a 2-D array, fewer than ``MIN_PROBES`` rows, non-finite values, or every column
            constant.
    """
    x = np.asarray(states, dtype=np.float64)
    if x.ndim != 2:
        raise ConfigError(f"states: expected an (m, d) array of probes x features, got shape {x.shape}")
    m, d = x.shape
    if m < MIN_PROBES:
        raise ConfigError(
            f"states: {m} probe(s); CKA needs at least {MIN_PROBES} (the unbiased HSIC divides by m-3); "
            "use a larger probe set"
        )
    if not np.isfinite(x).all():
        raise ConfigError("states: contain NaN or inf; check the model's dtype (float16 overflow?)")
    centred = x - x.mean(axis=0)
    std = centred.std(axis=0, ddof=1) if d else np.zeros(0)
    largest = float(std.max()) if d else 0.0
    keep = (std > 0) & (std > _CONSTANT_STD_RATIO * largest)
    if not keep.any():
        raise ConfigError(
            f"states: all {d} feature(s) are constant over the {m} probes, so CKA is undefined; "
            "check that the probes differ and the model's layers are not empty"
        )
    if standardize:
        return np.asarray(centred[:, keep] / std[keep], dtype=np.float64)
    return np.asarray(centred[:, keep], dtype=np.float64)


def centered_gram(states: NDArray[np.floating], *, standardize: bool = True) -> NDArray[np.float64]:
    """The unit-norm centred linear Gram matrix of one layer's states, the form a fingerprint stores.

    Columns are centred over the m probes; with ``standardize=True`` each column is then divided by its
    standard deviation (ddof=1), as REEF's code does. Columns whose std is 0 or at most 1e-12 of the
    largest std are dropped, since they carry no signal and would otherwise divide roundoff by ~0.

    Args:
        states: (m, d) last-token states of m probes.
        standardize: z-score each feature over the probes first (REEF's preprocessing).

    Returns:
        (m, m) float64 matrix ``Xc Xcᵀ / ‖Xc Xcᵀ‖_F``: symmetric, positive semi-definite, rows and columns
        summing to zero (up to roundoff).

    Raises:
        ConfigError: ``states`` is not 2-D, has fewer than 4 rows, contains NaN or inf, or every column is
            constant.

    Example:
        >>> import numpy as np
        >>> gram = centered_gram(np.arange(20.0).reshape(5, 4) ** 2)
        >>> gram.shape, round(float(np.linalg.norm(gram)), 6), round(float(abs(gram.sum(axis=0)).max()), 6)
        ((5, 5), 1.0, 0.0)
    """
    features = _centered_features(states, standardize=standardize)
    gram = features @ features.T
    gram = (gram + gram.T) / 2
    result: NDArray[np.float64] = gram / np.linalg.norm(gram)
    return result


def linear_cka_features(x: NDArray[np.floating], y: NDArray[np.floating], *, standardize: bool = False) -> float:
    """Linear CKA from the features themselves: ``‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)`` (Kornblith 2019, eq. 5).

    The plain feature-space formula on column-centred features, independent of the Gram route; tests and
    docs use it as the reference that ``MEASURES["linear"]`` must reproduce. Costs O(d²) memory.

    Args:
        x: (m, d1) features of m probes.
        y: (m, d2) features of the same m probes.
        standardize: z-score each feature first (constant features dropped), as ``centered_gram`` does.

    Returns:
        The linear CKA in [0, 1].

    Raises:
        ConfigError: the row counts differ, or either input fails ``centered_gram``'s checks.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(1).standard_normal((10, 3))
        >>> round(linear_cka_features(x, x[:, ::-1] * 2.0), 6)
        1.0
    """
    if np.shape(x)[0] != np.shape(y)[0]:
        raise ConfigError(f"linear CKA needs the same probes on both sides, got {np.shape(x)[0]} and {np.shape(y)[0]}")
    xc = _centered_features(x, standardize=standardize)
    yc = _centered_features(y, standardize=standardize)
    cross = float(np.linalg.norm(yc.T @ xc) ** 2)
    return cross / float(np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))


def _as_grams(grams: NDArray[np.floating]) -> NDArray[np.float64]:
    """Validate an (L, m, m) stack of Grams and return it as float64.

    Raises:
        ConfigError: wrong shape, fewer than ``MIN_PROBES`` probes, or NaN/inf entries.
    """
    stack = np.asarray(grams, dtype=np.float64)
    if stack.ndim != 3 or stack.shape[1] != stack.shape[2]:
        raise ConfigError(f"grams: expected an (L, m, m) stack of square Gram matrices, got shape {stack.shape}")
    if stack.shape[1] < MIN_PROBES:
        raise ConfigError(f"grams: {stack.shape[1]} probe(s); CKA needs at least {MIN_PROBES}")
    if not np.isfinite(stack).all():
        raise ConfigError("grams: contain NaN or inf; the fingerprint is corrupt, create it again")
    return stack


def _double_centre(stack: NDArray[np.float64]) -> NDArray[np.float64]:
    """H K H for every K in an (L, m, m) stack, without forming H."""
    centred = stack - stack.mean(axis=1, keepdims=True)
    result: NDArray[np.float64] = centred - centred.mean(axis=2, keepdims=True)
    return result


def _unit_rows(matrices: NDArray[np.float64], inputs: NDArray[np.float64]) -> NDArray[np.float64]:
    """Flatten (L, m, m) -> (L, m*m) and scale each row to unit norm; rows that are ~0 become exactly 0."""
    rows = matrices.reshape(matrices.shape[0], -1)
    norms = np.linalg.norm(rows, axis=1)
    scale = np.linalg.norm(inputs.reshape(inputs.shape[0], -1), axis=1)
    degenerate = norms <= _ZERO_NORM_RATIO * scale
    safe = np.where(degenerate, 1.0, norms)
    result: NDArray[np.float64] = np.where(degenerate[:, None], 0.0, rows / safe[:, None])
    return result


def condition_grams(grams: NDArray[np.floating], basis: NDArray[np.floating]) -> NDArray[np.float64]:
    """Project a basis of probe covariates out of every Gram: ``P K P`` with ``P = I - B Bᵀ``.

    This is the Gram of the states' residuals after regressing out the covariates, so a measure applied to
    the result compares what the models encode beyond those covariates (a partial CKA). With an empty basis
    the Grams come back unchanged.

    Args:
        grams: ``(L, m, m)`` centred Grams.
        basis: ``(m, r)`` with orthonormal columns, e.g. ``bot.reef.probes.surface_basis``.

    Raises:
        ConfigError: the basis does not have one row per probe.

    Example:
        >>> x = np.random.default_rng(1).standard_normal((8, 3))
        >>> b = np.linalg.qr(x - x.mean(axis=0))[0][:, :1]
        >>> k = condition_grams(np.stack([x @ x.T]), b)
        >>> bool(np.allclose(k[0] @ b, 0))
        True
    """
    stack = _as_grams(grams)
    b = np.asarray(basis, dtype=np.float64)
    if b.ndim != 2 or b.shape[0] != stack.shape[1]:
        raise ConfigError(f"basis: expected shape ({stack.shape[1]}, r), got {b.shape}")
    if b.shape[1] == 0:
        return stack
    kb = stack @ b  # (L, m, r)
    projected: NDArray[np.float64] = stack - kb @ b.T - b @ kb.transpose(0, 2, 1) + b @ (b.T @ kb) @ b.T
    return projected


class Measure(Protocol):
    """A CKA variant: ``similarity(x, y) = prepare(x) @ prepare(y).T`` for stacks of centred Grams."""

    @property
    def name(self) -> str:
        """Key in ``MEASURES`` and the name shown in reports."""
        ...

    @property
    def reference(self) -> str:
        """URL of the paper that defines the measure, cited in reports."""
        ...

    def prepare(self, grams: NDArray[np.floating]) -> NDArray[np.float64]:
        """(L, m, m) centred Grams -> (L, m*m) unit-norm rows whose dot products are the CKA values."""
        ...


@dataclass(frozen=True, slots=True)
class LinearCKA:
    """Linear CKA with the biased HSIC (Kornblith et al. 2019), the measure REEF reports.

    ``CKA = <Kc, Lc>_F / (‖Kc‖_F ‖Lc‖_F)`` for centred linear Grams Kc, Lc. Strongly inflated when the
    number of probes m is small relative to the feature count and the features are near-isotropic: two
    independent 200x512 Gaussian matrices score ≈ 0.7 (see ``DebiasedLinearCKA``).

    Attributes:
        name: ``"linear"``.
        reference: Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited".
    """

    name: str = "linear"
    reference: str = "https://arxiv.org/abs/1905.00414"

    def prepare(self, grams: NDArray[np.floating]) -> NDArray[np.float64]:
        """Centre each Gram again (undoing float16 storage roundoff; idempotent), flatten, normalise.

        Args:
            grams: (L, m, m) Gram matrices, centred or not.

        Returns:
            (L, m*m) float64 rows of unit norm; an all-zero Gram gives an all-zero row (CKA 0 with anything).

        Raises:
            ConfigError: not an (L, m, m) stack, m < 4, or NaN/inf entries.

        Example:
            >>> import numpy as np
            >>> gram = centered_gram(np.random.default_rng(0).standard_normal((6, 3)))
            >>> rows = LinearCKA().prepare(gram[None])
            >>> rows.shape, round(float(rows[0] @ rows[0]), 6)
            ((1, 36), 1.0)
        """
        stack = _as_grams(grams)
        return _unit_rows(_double_centre(stack), stack)


@dataclass(frozen=True, slots=True)
class DebiasedLinearCKA:
    """Linear CKA with the unbiased HSIC of Song et al. (2012), as Kornblith's ``debiased=True``.

    ``prepare`` U-centres each Gram (Székely & Rizzo 2014): with K̃ = K with a zeroed diagonal,
    ``Ũ_ij = K̃_ij - r_i/(m-2) - c_j/(m-2) + s/((m-1)(m-2))`` off the diagonal (r, c row and column sums,
    s the total) and 0 on it. Then ``HSIC_u(K, L) = <Ũ_K, Ũ_L>_F / (m(m-3))``, so the dot product of the
    normalised Ũ rows is ``HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L))``. U-centring ignores terms of
    the form a_i + b_j, so it gives the same result on the raw or the centred Gram, and storing the centred
    Gram is enough. Values can be slightly negative; independent features give ≈ 0 at any m.

    Degenerate case: ``HSIC_u(K, K) = ‖Ũ_K‖²/(m(m-3))`` is a sum of squares, so it is never negative and
    is 0 only when Ũ_K = 0 (e.g. a Gram with constant off-diagonal, such as one-hot features). Such a
    layer gets an all-zero row: its CKA with anything, itself included, is 0.0, never NaN.

    Attributes:
        name: ``"debiased"``.
        reference: Song et al. 2012, "Feature Selection via Dependence Maximization" (the unbiased HSIC).
    """

    name: str = "debiased"
    reference: str = "https://jmlr.org/papers/v13/song12a.html"

    def prepare(self, grams: NDArray[np.floating]) -> NDArray[np.float64]:
        """U-centre each Gram, flatten, normalise.

        Args:
            grams: (L, m, m) Gram matrices, centred or not.

        Returns:
            (L, m*m) float64 rows of unit norm, or all-zero rows for degenerate Grams (see class docstring).

        Raises:
            ConfigError: not an (L, m, m) stack, m < 4, or NaN/inf entries.

        Example:
            >>> import numpy as np
            >>> rows = DebiasedLinearCKA().prepare(np.eye(5)[None] - 0.2)  # constant off-diagonal
            >>> float(abs(rows).max())
            0.0
        """
        stack = _as_grams(grams)
        m = stack.shape[1]
        off = stack.copy()
        diagonal = np.arange(m)
        off[:, diagonal, diagonal] = 0.0
        row_sums = off.sum(axis=2)
        col_sums = off.sum(axis=1)
        totals = row_sums.sum(axis=1)
        u_centred = (
            off
            - row_sums[:, :, None] / (m - 2)
            - col_sums[:, None, :] / (m - 2)
            + totals[:, None, None] / ((m - 1) * (m - 2))
        )
        u_centred[:, diagonal, diagonal] = 0.0
        return _unit_rows(u_centred, stack)


@dataclass(frozen=True, slots=True)
class RbfCKA:
    """CKA with a Gaussian kernel (Kornblith et al. 2019), bandwidth by the median heuristic.

    Squared distances come from the Gram (``D_ij = G_ii + G_jj - 2 G_ij``, clipped at 0), and
    ``K = exp(-D / (2 sigma^2))`` with sigma^2 the median of the non-zero pairwise squared distances, per
    Gram, as in REEF's (commented-out) RBF code used for its Figure 3. K is then centred like a linear
    Gram. The median makes the result independent of the Gram's overall scale.

    Attributes:
        name: ``"rbf"``.
        reference: Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited".
    """

    name: str = "rbf"
    reference: str = "https://arxiv.org/abs/1905.00414"

    def squared_distances(self, gram: NDArray[np.floating]) -> NDArray[np.float64]:
        """(m, m) Gram -> (m, m) pairwise squared Euclidean distances of the underlying points (diagonal 0).

        Example:
            >>> import numpy as np
            >>> x = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [1.0, 0.0]])
            >>> RbfCKA().squared_distances(x @ x.T)[0, 1]
            np.float64(25.0)
        """
        g = np.asarray(gram, dtype=np.float64)
        norms = np.diagonal(g)
        distances = np.clip(norms[:, None] + norms[None, :] - 2.0 * g, 0.0, None)
        np.fill_diagonal(distances, 0.0)
        return distances

    def sigma_squared(self, gram: NDArray[np.floating]) -> float:
        """The bandwidth sigma^2: the median non-zero pairwise squared distance (0.0 if all points coincide).

        Distances below 1e-12 of the largest count as zero (roundoff between identical probes' states).

        Example:
            >>> import numpy as np
            >>> x = np.array([[0.0], [1.0], [3.0], [3.0]])
            >>> RbfCKA().sigma_squared(x @ x.T)  # distances² 1, 9, 9, 4, 4 (one pair coincides)
            4.0
        """
        distances = self.squared_distances(gram)
        upper = distances[np.triu_indices(distances.shape[0], k=1)]
        largest = float(upper.max()) if upper.size else 0.0
        positive = upper[upper > _CONSTANT_STD_RATIO * largest]
        return float(np.median(positive)) if positive.size else 0.0

    def prepare(self, grams: NDArray[np.floating]) -> NDArray[np.float64]:
        """RBF kernel of each Gram's points, centred, flattened, normalised.

        Args:
            grams: (L, m, m) Gram matrices, centred or not.

        Returns:
            (L, m*m) float64 rows of unit norm; a layer whose points all coincide gets an all-zero row.

        Raises:
            ConfigError: not an (L, m, m) stack, m < 4, or NaN/inf entries.
        """
        stack = _as_grams(grams)
        kernels = np.zeros_like(stack)
        # One Gram at a time: the median is per Gram and has no cheap batched form with the zero filter.
        for index, gram in enumerate(stack):
            sigma_sq = self.sigma_squared(gram)
            if sigma_sq > 0:
                kernels[index] = np.exp(-self.squared_distances(gram) / (2.0 * sigma_sq))
        centred = _double_centre(kernels)
        return _unit_rows(centred, kernels)


def cka_grid(grams_x: NDArray[np.floating], grams_y: NDArray[np.floating], measure: Measure) -> NDArray[np.float64]:
    """CKA of every layer of one fingerprint against every layer of another.

    Args:
        grams_x: (Lx, m, m) centred Grams of the first model.
        grams_y: (Ly, m, m) centred Grams of the second model, on the same m probes.
        measure: one of ``MEASURES``' values.

    Returns:
        (Lx, Ly) float64 grid, ``grid[i, j]`` = CKA of layer i of x and layer j of y, clipped to [-1, 1]
        against roundoff.

    Raises:
        ConfigError: shapes are not (L, m, m) stacks, the probe counts differ, m < 4, or NaN/inf entries.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> grams = np.stack([centered_gram(rng.standard_normal((8, 5))) for _ in range(3)])
        >>> grid = cka_grid(grams, grams[:2], MEASURES["linear"])
        >>> grid.shape, [round(float(v), 6) for v in np.diagonal(grid)]
        ((3, 2), [1.0, 1.0])
    """
    shape_x, shape_y = np.shape(grams_x), np.shape(grams_y)
    if len(shape_x) == 3 and len(shape_y) == 3 and shape_x[1:] != shape_y[1:]:
        raise ConfigError(
            f"grams: the two fingerprints use different probe counts ({shape_x[1]} vs {shape_y[1]}); "
            "fingerprint both models with the same probe set"
        )
    grid: NDArray[np.float64] = measure.prepare(grams_x) @ measure.prepare(grams_y).T
    return np.clip(grid, -1.0, 1.0)


MEASURES: dict[str, Measure] = {
    "linear": LinearCKA(),
    "debiased": DebiasedLinearCKA(),
    "rbf": RbfCKA(),
}

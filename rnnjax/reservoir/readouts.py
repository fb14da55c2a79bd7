r"""Linear readouts of a reservoir: ridge regression from sufficient statistics, and RLS.

Ridge. The features are ``z_t = [h_t, (u_t), 1]`` (the input ``u_t`` only with
``include_input=True``; the last entry is the bias feature). Their sums
``Z^T Z`` and ``Z^T Y`` (:class:`RidgeStats`) are all a ridge readout needs, and stats of
several series add up. The solve *centres* with these sums,

.. math::

    C = \textstyle\sum_t (f_t - \bar f)(f_t - \bar f)^\top = F^\top F - n \bar f \bar f^\top,
    \qquad W = (C + \lambda I)^{-1} \textstyle\sum_t (f_t - \bar f)(y_t - \bar y)^\top,
    \qquad b = \bar y - W^\top \bar f

(ridge on centred features: the bias is not shrunk, as ReservoirPy's ``Ridge``). The
uncentred normal equations carry the mean's huge eigenvalue (condition numbers near 1e21
at small ridges): Cholesky on them returns NaN and float32 loses every digit; centred,
both are usable.

Badly conditioned features (float64): the Gram squares their condition number. A fit of
one ridge (:func:`~rnnjax.reservoir.fit_ridge`, :func:`~rnnjax.reservoir.fit_states`) whose
Gram solve has a condition estimate above ``1e10`` is redone from the R factor of the
centred features (the data run once more), as float32 and NVAR always are: on NVAR's
Lorenz-63 monomials (condition 2e8) within 1e-7 of the float64 SVD least-squares weights,
where a Gram solve (rnnjax's or ReservoirPy's) is 3e-4 to 1e-2 off. Statistics and
many-ridge solves (:func:`~rnnjax.reservoir.fit_readouts`, sweeps) keep the Gram. Cost,
when it triggers: a Mackey-Glass fit at N=500, T=3000, ridge 1e-8 (estimate 1.4e10) took
27 s instead of 3.9 s (two loaded CPU cores; XLA:CPU's QR); at ridge 1e-7 the estimate
stays below 1e10 up to N=2000 (2.3e9), so those fits keep the Gram's speed.

Solvers: one ridge value by Cholesky of ``C + lambda I`` with a checked fallback: when the
factor is not finite or its condition estimate exceeds ``1 / eps``, the symmetric
eigendecomposition ``C = V diag(e) V^T`` solves it instead, dropping the directions with
``e + lambda`` below ``4 eps max(e)`` (a truncated pseudo-inverse; at ``ridge = 0`` this is
the least-squares solution of minimum norm when it is well defined). Several ridge values
(:func:`solve_ridges`, sweeps) all come from one eigendecomposition. A solve whose result
is not finite raises; a fallback warns with the condition number.

Shapes: ``T`` time, ``N`` reservoir size, ``I`` input size, ``F`` features
(``N`` or ``N + I``), ``O`` outputs, ``R`` ridge values.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import checks

__all__ = [
    "RidgeStats",
    "READOUT_KEYS",
    "solve_ridge",
    "solve_ridges",
]

READOUT_KEYS = ("w_out", "b_out")
PRECISIONS = ("float32", "float64")


class RidgeStats(NamedTuple):
    """Sufficient statistics of a ridge readout, summed over steps ``t >= washout``.

    The features are ``z_t = [h_t, (u_t), 1]`` (the last entry is the bias feature), so
    ``xtx[-1, -1]`` is the number of samples. Stats of several sequences add up (sum the
    fields).

    Attributes:
      xtx: ``Z^T Z``, ``(F + 1, F + 1)``.
      xty: ``Z^T Y``, ``(F + 1, O)``.

    Example:
      :func:`rnnjax.reservoir.ridge_stats` accumulates them while the reservoir runs; two
      steps of one feature written out:

      >>> import jax.numpy as jnp
      >>> from rnnjax.reservoir.readouts import RidgeStats
      >>> Z = jnp.array([[0.5, 1.0], [-0.5, 1.0]])          # rows [h_t, 1]
      >>> Y = jnp.array([[2.0], [0.0]])
      >>> stats = RidgeStats(Z.T @ Z, Z.T @ Y)
      >>> stats.xtx.tolist(), stats.xty.tolist(), int(stats.xtx[-1, -1])   # 2 samples
      ([[0.5, 0.0], [0.0, 2.0]], [[1.0], [2.0]], 2)
    """

    xtx: jax.Array
    xty: jax.Array


def x64(precision: str):
    """Enable x64 for the duration of a float64 readout computation only."""
    return jax.enable_x64(True) if precision == "float64" else contextlib.nullcontext()


def accum_dtype(precision: str):
    return jnp.float64 if precision == "float64" else jnp.float32


def features(h: jax.Array, u=None) -> jax.Array:
    """``[h, u]`` along the last axis (``h`` alone when ``u`` is None)."""
    if u is None:
        return h
    return jnp.concatenate([h, u.astype(h.dtype)], axis=-1)


def add_stats(G, Z, H, Y, mask):
    """``G += Z^T Z``, ``Z += Z^T Y`` for features ``H`` ``(C, F)`` (masked rows)."""
    dt = G.dtype
    X = jnp.concatenate([H.astype(dt), jnp.ones((H.shape[0], 1), dt)], axis=1)
    X = X * mask.astype(dt)[:, None]
    return G + X.T @ X, Z + X.T @ Y.astype(dt)


class Moments(NamedTuple):
    """Centred running moments (count, feature mean ``(F,)``, target mean ``(O,)``,
    centred Gram ``(F, F)``, centred cross term ``(F, O)``), merged chunk by chunk
    (Chan, Golub & LeVeque 1979): each chunk is centred on its own mean before its
    product, so the accumulation never carries the mean's large eigenvalue and stays
    accurate in float32."""

    count: jax.Array
    mean_f: jax.Array
    mean_y: jax.Array
    cff: jax.Array
    cfy: jax.Array


def _centred_chunk(n, X, mask):
    """A chunk's rows ``X (C, .)`` where ``mask``, centred on their own mean (the others
    zero), the chunk's mean, the merged count ``n + n_c`` and the merge weight
    ``n_c / (n + n_c)`` (Chan, Golub & LeVeque) for moments of ``n`` rows so far."""
    m = mask.astype(X.dtype)[:, None]
    n_c = jnp.sum(m)
    mean = jnp.sum(X * m, axis=0) / jnp.maximum(n_c, 1.0)
    tot = n + n_c
    w = jnp.where(tot > 0, n_c / jnp.maximum(tot, 1.0), 0.0)
    return (X - mean[None]) * m, mean, tot, w


def zero_moments(F: int, O: int, dtype) -> Moments:
    z = lambda *s: jnp.zeros(s, dtype)  # noqa: E731
    return Moments(z(), z(F), z(O), z(F, F), z(F, O))


def add_moments(mom: Moments, H, Y, mask) -> Moments:
    """Merge the rows of ``H (C, F)``, ``Y (C, O)`` where ``mask`` into ``mom``."""
    dt = mom.cff.dtype
    n = mom.count
    Xc, mf, tot, w = _centred_chunk(n, H.astype(dt), mask)
    Ycc, my, _, _ = _centred_chunk(n, Y.astype(dt), mask)
    df, dy = mf - mom.mean_f, my - mom.mean_y
    cross = n * w  # n n_c / (n + n_c)
    return Moments(
        count=tot,
        mean_f=mom.mean_f + w * df,
        mean_y=mom.mean_y + w * dy,
        cff=mom.cff + Xc.T @ Xc + cross * jnp.outer(df, df),
        cfy=mom.cfy + Xc.T @ Ycc + cross * jnp.outer(df, dy),
    )


class QRMoments(NamedTuple):
    """Centred running moments kept as an R factor (the float32 readout): ``r`` is the
    ``(F + O, F + O)`` upper-triangular factor of the centred ``[features, targets]``
    matrix, so ``r[:F, :F]^T r[:F, :F]`` is the centred Gram and ``r[:F, :F]^T r[:F, F:]``
    the centred cross term. Chunks merge by one QR of ``[r; centred chunk; mean-shift
    row]`` (the Chan et al. update in square-root form). Its condition number is the
    square root of the Gram's, which is what makes a float32 readout usable at small
    ridges."""

    count: jax.Array
    mean_f: jax.Array
    mean_y: jax.Array
    r: jax.Array


def zero_qr_moments(F: int, O: int, dtype) -> QRMoments:
    z = lambda *s: jnp.zeros(s, dtype)  # noqa: E731
    return QRMoments(z(), z(F), z(O), z(F + O, F + O))


def add_qr_moments(mom: QRMoments, H, Y, mask) -> QRMoments:
    """Merge the rows of ``H (C, F)``, ``Y (C, O)`` where ``mask`` into ``mom``."""
    dt = mom.r.dtype
    n = mom.count
    X = jnp.concatenate([H.astype(dt), Y.astype(dt)], axis=1)
    Xc, mc, tot, w = _centred_chunk(n, X, mask)
    mean = jnp.concatenate([mom.mean_f, mom.mean_y])
    shift = jnp.sqrt(n * w) * (mc - mean)
    # valid rows first, then R: XLA:CPU's QR returned NaN on [R; rows zero but the last few]
    Xc = Xc[jnp.argsort(~mask, stable=True)]
    A = jnp.concatenate([Xc, mom.r, shift[None]], axis=0)
    r = jnp.linalg.qr(A, mode="r")
    F = mom.mean_f.shape[0]
    new_mean = mean + w * (mc - mean)
    return QRMoments(tot, new_mean[:F], new_mean[F:], r)


def qr_to_moments(mom: QRMoments) -> Moments:
    F = mom.mean_f.shape[0]
    Rxx, Rxy = mom.r[:F, :F], mom.r[:F, F:]
    return Moments(mom.count, mom.mean_f, mom.mean_y, Rxx.T @ Rxx, Rxx.T @ Rxy)


def svd_parts(mom: QRMoments):
    """``(s, V, U^T R_xy)`` of the SVD ``R_xx = U diag(s) V^T``."""
    F = mom.mean_f.shape[0]
    U, sv, Vt = jnp.linalg.svd(mom.r[:F, :F])
    return sv, Vt.T, U.T @ mom.r[:F, F:]


def svd_weights(sv, V, P, ridge):
    """Ridge weights from the SVD: ``V diag(s / (s^2 + ridge)) U^T R_xy``, dropping
    singular values below ``4 eps max(s)`` when unregularised. Returns
    ``(W, dropped, condition)``."""
    tol = 4 * jnp.finfo(sv.dtype).eps * jnp.max(sv)
    d = sv * sv + ridge
    keep = (sv > tol) | (ridge > 0)
    keep = keep & (d > 0)
    f = jnp.where(keep, sv / jnp.where(keep, d, 1.0), 0.0)
    W = V @ (f[:, None] * P)
    cond = (jnp.max(sv) ** 2 + ridge) / jnp.maximum(jnp.min(jnp.where(keep, d, jnp.inf)), tol * tol)
    return W, jnp.sum(~keep), cond


def solve_qr(mom: QRMoments, ridge):
    sv, V, P = svd_parts(mom)
    W, dropped, cond = svd_weights(sv, V, P, ridge)
    b = mom.mean_y - mom.mean_f @ W
    info = {"condition": cond, "fallback": dropped > 0, "dropped": dropped.astype(jnp.int32)}
    return {"w_out": W, "b_out": b}, info


# one interface over both accumulators: float64 keeps the Gram (one GEMM per chunk),
# float32 the R factor (one QR per chunk); a float64 solve above GRAM_COND_MAX (weights off
# by up to ~cond * eps = 2e-6) is redone from the R factor (see the module docstring)
GRAM_COND_MAX = 1e10


def acc_init(F: int, O: int, dtype, qr: bool = False):
    if jnp.dtype(dtype) == jnp.float64 and not qr:
        return zero_moments(F, O, dtype)
    return zero_qr_moments(F, O, dtype)


def needs_qr(acc, info):
    """Whether a float64 Gram solve should be redone from the R factor."""
    return isinstance(acc, Moments) and info["condition"] > GRAM_COND_MAX


def acc_add(acc, H, Y, mask):
    if isinstance(acc, QRMoments):
        return add_qr_moments(acc, H, Y, mask)
    return add_moments(acc, H, Y, mask)


def acc_solve(acc, ridge):
    if isinstance(acc, QRMoments):
        return solve_qr(acc, ridge)
    return solve_moments(acc, ridge)


def acc_solve_many(acc, ridges, splits=None):
    """Readouts for ``ridges (R,)`` from one decomposition: leaves ``(R, F, O)``. With
    ``splits`` (one ``(a, b)`` column block per ridge) a list of readouts instead."""
    if isinstance(acc, QRMoments):
        parts, weights = svd_parts(acc), svd_weights
    else:
        parts, weights = eig_parts(acc.cff, acc.cfy), eig_weights
    mu, ybar = acc.mean_f, acc.mean_y
    if splits is not None:
        outs = []
        for k, (a, b) in enumerate(splits):
            W = weights(parts[0], parts[1], parts[2][:, a:b], ridges[k])[0]
            outs.append({"w_out": W, "b_out": ybar[a:b] - mu @ W})
        return outs
    W = jax.vmap(lambda r: weights(*parts, r)[0])(ridges)
    return {"w_out": W, "b_out": ybar[None, :] - jnp.einsum("f,rfo->ro", mu, W)}


def acc_to_stats(acc) -> "RidgeStats":
    if isinstance(acc, QRMoments):
        acc = qr_to_moments(acc)
    return moments_to_stats(acc)


def moments_to_stats(mom: Moments) -> "RidgeStats":
    """The uncentred sums ``Z^T Z``, ``Z^T Y`` of ``z = [f, 1]`` from centred moments."""
    n, mu, yb = mom.count, mom.mean_f, mom.mean_y
    S = mom.cff + n * jnp.outer(mu, mu)
    G = jnp.block([[S, (n * mu)[:, None]], [(n * mu)[None, :], n[None, None]]])
    Z = jnp.concatenate([mom.cfy + n * jnp.outer(mu, yb), (n * yb)[None, :]], axis=0)
    return RidgeStats(G, Z)


# --------------------------------------------------------------------------- solves


def centre(G, Z):
    """The centred Gram ``C (F, F)``, cross term ``(F, O)``, feature mean ``(F,)`` and
    target mean ``(O,)`` from the uncentred sums."""
    n = G[-1, -1]
    s, sy = G[:-1, -1], Z[-1]
    mu, ybar = s / n, sy / n
    C = G[:-1, :-1] - jnp.outer(s, mu)
    C = 0.5 * (C + C.T)
    Cy = Z[:-1] - jnp.outer(mu, sy)
    return C, Cy, mu, ybar


def eig_parts(C, Cy):
    """``(e, V, V^T Cy)`` with ``e`` clipped at 0 (the centred Gram is PSD)."""
    e, V = jnp.linalg.eigh(C)
    return jnp.maximum(e, 0.0), V, V.T @ Cy


def eig_weights(e, V, P, ridge):
    """``W (F, O)`` for one ridge value from the eigendecomposition; directions with
    ``e + ridge <= 4 eps max(e)`` (below the eigensolver's absolute accuracy) are dropped.
    Returns ``(W, dropped, condition)``."""
    tol = 4 * jnp.finfo(e.dtype).eps * jnp.max(e)
    d = e + ridge
    keep = d > tol
    f = jnp.where(keep, 1.0 / jnp.where(keep, d, 1.0), 0.0)
    W = V @ (f[:, None] * P)
    cond = (jnp.max(e) + ridge) / jnp.maximum(jnp.min(jnp.where(keep, d, jnp.inf)), tol)
    return W, jnp.sum(~keep), cond


def solve(stats: RidgeStats, ridge):
    """Jittable single-ridge solve. Returns ``(readout, info)``, ``info`` a dict of
    ``condition`` (estimate), ``fallback`` (bool) and ``dropped`` (directions)."""
    return solve_centred(*centre(*stats), ridge)


def solve_centred(C, Cy, mu, ybar, ridge):
    """:func:`solve` from the centred Gram ``C``, cross term ``Cy`` and the means."""
    F = C.shape[0]
    eps = jnp.finfo(C.dtype).eps
    # Jacobi scaling: the same system, with unit diagonal for the factorisation
    dg = jnp.diagonal(C) + ridge
    s = jnp.where(dg > 0, 1.0 / jnp.sqrt(jnp.where(dg > 0, dg, 1.0)), 1.0)
    A = (C + ridge * jnp.eye(F, dtype=C.dtype)) * s[:, None] * s[None, :]
    L = jnp.linalg.cholesky(A)
    dL = jnp.abs(jnp.diagonal(L))
    cond_chol = (jnp.max(dL) / jnp.min(dL)) ** 2
    ok = jnp.all(jnp.isfinite(L)) & (cond_chol < 1.0 / eps)

    def by_cholesky(_):
        W = s[:, None] * jax.scipy.linalg.cho_solve((L, True), s[:, None] * Cy)
        return W, jnp.zeros((), jnp.int32), cond_chol

    def by_eig(_):
        e, V, P = eig_parts(C, Cy)
        W, dropped, cond = eig_weights(e, V, P, ridge)
        return W, dropped.astype(jnp.int32), cond

    W, dropped, cond = jax.lax.cond(ok, by_cholesky, by_eig, None)
    b = ybar - mu @ W
    return {"w_out": W, "b_out": b}, {"condition": cond, "fallback": ~ok, "dropped": dropped}


def solve_moments(mom: Moments, ridge):
    return solve_centred(mom.cff, mom.cfy, mom.mean_f, mom.mean_y, ridge)


def solve_many(stats: RidgeStats, ridges):
    """Jittable: readouts for ``ridges (R,)`` from one eigendecomposition; leaves
    ``(R, F, O)`` and ``(R, O)``."""
    C, Cy, mu, ybar = centre(*stats)
    e, V, P = eig_parts(C, Cy)
    W = jax.vmap(lambda r: eig_weights(e, V, P, r)[0])(ridges)
    return {"w_out": W, "b_out": ybar[None, :] - jnp.einsum("f,rfo->ro", mu, W)}


@jax.jit
def _solve_jit(stats, ridge):
    return solve(stats, ridge)


@jax.jit
def _solve_many_jit(stats, ridges):
    return solve_many(stats, ridges)


def check_solution(readout, info, ridge, what="ridge readout") -> None:
    """Raise on a non-finite solution; warn, with the condition number, when the checked
    Cholesky fell back to the eigendecomposition and dropped directions."""
    w = np.asarray(readout["w_out"])
    b = np.asarray(readout["b_out"])
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
        raise FloatingPointError(
            f"the {what} is not finite (ridge={ridge:g}, condition number "
            f"{float(info['condition']):.3g}): the statistics hold NaN/Inf (a diverging "
            "reservoir or non-finite inputs/targets)"
        )
    if bool(info["fallback"]) and int(info["dropped"]):
        warnings.warn(
            f"the {what} is ill-posed at ridge={ridge:g} in {w.dtype}: condition number "
            f"{float(info['condition']):.3g}; solved by eigendecomposition, dropping "
            f"{int(info['dropped'])} directions below the precision (a larger ridge or "
            "precision='float64' keeps them)",
            RuntimeWarning,
            stacklevel=3,
        )


def check_ridge(ridge) -> float:
    return checks.number("ridge", ridge, 0.0)


def check_stats(stats) -> None:
    if not isinstance(stats, RidgeStats):
        raise TypeError(
            f"stats must be a RidgeStats (from ridge_stats); got {checks.describe(stats)}"
        )
    if not np.all(np.isfinite(np.asarray(stats.xtx))) or not np.all(
        np.isfinite(np.asarray(stats.xty))
    ):
        raise FloatingPointError(
            "stats hold NaN/Inf (a diverging reservoir or non-finite inputs/targets)"
        )
    if float(stats.xtx[-1, -1]) <= 0:
        raise ValueError(f"stats hold no samples (xtx[-1, -1] = {float(stats.xtx[-1, -1])})")


def solve_ridge(stats: RidgeStats, ridge: float):
    r"""Solve the centred ridge problem with an unpenalised bias (see the module doc).

    Args:
      stats: :class:`RidgeStats` (float64 by default from ``ridge_stats``).
      ridge: :math:`\lambda \ge 0`. At 0 the solve is least squares (the minimum-norm one
        when the centred features are rank deficient).

    Returns:
      Readout ``{"w_out": (F, O), "b_out": (O,)}`` in the stats' dtype.

    Raises:
      FloatingPointError: the stats or the solution are not finite.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.reservoir import solve_ridge
      >>> from rnnjax.reservoir.readouts import RidgeStats
      >>> Z = jnp.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])  # one feature and the bias
      >>> y = jnp.array([[1.0], [3.0], [5.0]])                 # y = 2 h + 1
      >>> r = solve_ridge(RidgeStats(Z.T @ Z, Z.T @ y), 0.0)
      >>> round(float(r["w_out"][0, 0]), 4), round(float(r["b_out"][0]), 4)
      (2.0, 1.0)
    """
    check_stats(stats)
    ridge = check_ridge(ridge)
    with x64("float64" if stats.xtx.dtype == jnp.float64 else "float32"):
        readout, info = _solve_jit(stats, ridge)
    check_solution(readout, info, ridge)
    return readout


def solve_ridges(stats: RidgeStats, ridges):
    """Readouts for several ridge values from ONE eigendecomposition of the centred Gram.

    Args:
      stats: :class:`RidgeStats`.
      ridges: ``(R,)`` values ``>= 0``.

    Returns:
      ``{"w_out": (R, F, O), "b_out": (R, O)}``; ``[r]`` equals ``solve_ridge(stats,
      ridges[r])`` (to round-off: the latter may use Cholesky).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.reservoir.readouts import RidgeStats, solve_ridges
      >>> Z = jnp.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
      >>> r = solve_ridges(RidgeStats(Z.T @ Z, Z.T @ Z[:, :1]), [0.0, 2.0])
      >>> [round(float(w), 3) for w in r["w_out"][:, 0, 0]]
      [1.0, 0.5]
    """
    check_stats(stats)
    rs = np.atleast_1d(np.asarray(ridges, np.float64))
    if rs.ndim != 1 or rs.size == 0:
        raise ValueError(f"ridges must be a non-empty 1-d sequence; got {ridges!r}")
    for r in rs:
        check_ridge(float(r))
    with x64("float64" if stats.xtx.dtype == jnp.float64 else "float32"):
        out = _solve_many_jit(stats, jnp.asarray(rs, stats.xtx.dtype))
    if not (np.all(np.isfinite(np.asarray(out["w_out"])))):
        raise FloatingPointError("a ridge readout is not finite")
    return out


# --------------------------------------------------------------------------- apply


def apply(readout, h, u=None):
    """``[h, u] @ w_out + b_out`` in the readout's dtype (jittable)."""
    w = readout["w_out"]
    out = features(h.astype(w.dtype), u) @ w
    return out + jnp.broadcast_to(readout["b_out"], out.shape)

r"""Reservoir matrices: how ``W`` is drawn, stored and multiplied.

Topologies (the ``topology`` field of :class:`rnnjax.reservoir.EchoState`):

- ``"normal"``: dense storage, a fraction ``density`` of the entries non-zero, Gaussian
  before scaling (the classic ESN, Jaeger 2001; ReservoirPy's default).
- ``"uniform"``: as ``"normal"`` with entries ``U(-1, 1)``.
- ``"orthogonal"``: ``Q`` of the QR decomposition of a Gaussian matrix (signs fixed so
  that ``Q`` is Haar distributed), times the spectral radius: every eigenvalue has modulus
  ``spectral_radius``. A linear orthogonal reservoir has memory capacity close to ``N``.
- ``"cycle"``: the simple cycle reservoir (Rodan & Tino 2011): unit ``i`` feeds unit
  ``i + 1 (mod N)`` with one weight ``r``; eigenvalues ``r * exp(2 pi i k / N)``, all of
  modulus ``r`` = ``spectral_radius``.
- ``"jumps"``: the cycle with bidirectional jumps (Rodan & Tino 2012): the cycle (weight
  ``r_c``) plus symmetric links of weight ``r_j`` between units ``k l`` and
  ``(k + 1) l (mod N)``, ``k = 0, 1, ..., N // l - 1`` (``l`` = ``jump_size``). Drawn with
  ``r_c = 1``, ``r_j = jump_weight``, then both scaled so that the spectral radius is
  ``spectral_radius`` (computed numerically: dense LAPACK up to ``N = 2048``, ARPACK on
  the ``O(N)`` product above).
- ``"small_world"``: a Watts-Strogatz graph (Watts & Strogatz 1998), ReservoirPy's
  ``small_world``: the ring lattice joining every unit to its ``neighbours`` nearest units
  (``neighbours / 2`` on each side, both directions), then each lattice edge ``{i, j}``
  (``i = j + k mod N``) rewired with probability ``rewire`` to ``{i, j'}``, ``j'`` drawn
  uniformly among the units not yet linked to ``i``; Gaussian weights (independent in each
  direction), scaled to ``spectral_radius``. The pattern stays symmetric and keeps
  ``N * neighbours`` non-zeros. See :func:`~rnnjax.reservoir.topologies.small_world`.
- ``"cluster"``: ``clusters`` equal diagonal blocks of density ``density`` joined by
  entries of density ``inter_density`` (an Erdos-Renyi clustered graph; ReservoirPy's
  ``cluster``, ``p_in``, ``p_out``); Gaussian weights scaled to ``spectral_radius``.
  See :func:`~rnnjax.reservoir.topologies.cluster`.
- ``"bernoulli"``: a fraction ``density`` of entries non-zero, each ``+1`` with probability
  ``bernoulli_p`` and ``-1`` otherwise, scaled to ``spectral_radius`` (ReservoirPy's
  ``bernoulli``). See :func:`~rnnjax.reservoir.topologies.bernoulli`.
- ``"fast_spectral"``: fast spectral initialisation (Gallicchio, Micheli & Pedrelli 2020,
  ReservoirPy's ``fast_spectral_initialization``): a fraction ``density`` of entries
  ``U(-a, a)``, ``a = sqrt(3) r / sqrt(density N)``, so that each entry has variance
  ``r^2 / N`` and, by the circular law, the spectral radius is close to ``r`` =
  ``spectral_radius`` without any eigenvalue solve (no ``O(N^3)`` step in ``init``).
  See :func:`~rnnjax.reservoir.topologies.fast_spectral`.
- ``"delay"``: the delay line (Rodan & Tino 2011, DLR): unit ``i`` feeds unit ``i + 1``
  for ``i < N - 1`` with weight ``r`` = ``spectral_radius``. ``W`` is nilpotent: its
  spectrum is ``{0}``, so here ``spectral_radius`` sets the edge weight, not a radius.

Random draws and ReservoirPy: rnnjax draws with JAX's counter-based RNG, ReservoirPy with
numpy's, so the same seed gives different matrices; the tests check the structure that is
deterministic (the lattice without rewiring, the block pattern, the value set) and the
statistics (degrees, densities, symmetry, spectral radius) against ReservoirPy's
generators. Sparse entries are drawn independently (a Bernoulli mask, as ``"normal"``),
where ReservoirPy draws an exact number of non-zeros: same expected density. ReservoirPy's
``small_world`` given an integer seed draws both directions' weights from the same seed,
so the matrix comes out symmetric; given a generator (as its spectral-radius scaling
passes) the directions are independent, as here.

Storage and product. Dense topologies store ``w`` ``(N, N)`` (math orientation,
``W @ h``). The structured ones never form ``W``: ``w`` ``(N,)`` holds the edge weights
(``w[i]`` on the edge ``i -> i + 1``; ``w[N-1] = 0`` for the delay line) and ``w_jump``
``(N,)`` the jump weights at the jump sources (zero elsewhere); ``W @ h`` is a roll and a
scale, ``O(N)`` per step, so ``N = 100,000`` runs. :func:`dense_matrix` forms ``W`` for
checks at small ``N``.

Shapes: ``N`` reservoir size, ``B`` any leading batch axes of ``h``.

References:
  Jaeger (2001). The "echo state" approach to analysing and training recurrent neural
  networks. GMD Report 148.
  Rodan & Tino (2011). Minimum complexity echo state network. IEEE TNN 22(1).
  Rodan & Tino (2012). Simple deterministically constructed cycle reservoirs with regular
  jumps. Neural Computation 24(7).
  White, Lee & Sompolinsky (2004). Short-term memory in orthogonal neural networks. PRL 92.
  Watts & Strogatz (1998). Collective dynamics of 'small-world' networks. Nature 393.
  Gallicchio, Micheli & Pedrelli (2020). Fast spectral radius initialization for recurrent
  neural networks. In: Recent Advances in Big Data and Deep Learning, 380-390.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import checks
from rnnjax.reservoir.topologies import (
    _draw_dtype,
    _finish,
    bernoulli,
    cluster,
    fast_spectral,
    small_world,
)

__all__ = [
    "TOPOLOGIES",
    "DENSE",
    "STRUCTURED",
    "draw",
    "recurrent_product",
    "dense_matrix",
    "structured_spectral_radius",
]

DENSE = ("normal", "uniform", "orthogonal", "small_world", "cluster", "bernoulli", "fast_spectral")
STRUCTURED = ("cycle", "jumps", "delay")
TOPOLOGIES = DENSE + STRUCTURED


def _jump_mask(N: int, jump_size: int) -> np.ndarray:
    m = np.zeros(N, bool)
    if 0 < jump_size < N:
        m[np.arange(N // jump_size) * jump_size] = True
    return m


def recurrent_product(topology: str, params: dict, h: jax.Array, jump_size: int = 0) -> jax.Array:
    """``W @ h`` for ``h`` ``(*B, N)`` (batch axes in front), without forming ``W`` for the
    structured topologies.

    Args:
      topology: one of :data:`TOPOLOGIES`.
      params: the reservoir params (``w``, and ``w_jump`` for ``"jumps"``).
      h: ``(*B, N)``.
      jump_size: ``l`` of ``"jumps"``.

    Returns:
      ``(*B, N)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.reservoir.matrices import recurrent_product
      >>> recurrent_product("cycle", {"w": jnp.full((4,), 0.5)}, jnp.arange(4.0)).tolist()
      [1.5, 0.0, 0.5, 1.0]
    """
    w = params["w"]
    if topology in DENSE:
        # W @ h for one example: measured 35x faster on XLA:CPU at N = 2000 than h @ W.T
        # inside a scan (which materialised the transpose every step).
        return w @ h if h.ndim == 1 else h @ w.T
    out = jnp.roll(_lead(w, h.ndim) * h, 1, axis=-1)
    if topology == "jumps":
        wj = _lead(params["w_jump"], h.ndim)
        out = out + jnp.roll(wj * h, jump_size, axis=-1) + wj * jnp.roll(h, -jump_size, axis=-1)
    return out


def _lead(a: jax.Array, ndim: int) -> jax.Array:
    """``a`` with leading unit axes up to ``ndim`` (rank promotion may be set to raise)."""
    return a.reshape((1,) * (ndim - a.ndim) + a.shape)


def dense_matrix(topology: str, params: dict, jump_size: int = 0) -> np.ndarray:
    """``W`` as a dense float64 numpy ``(N, N)`` matrix (for checks at small ``N``).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.reservoir.matrices import dense_matrix
      >>> dense_matrix("delay", {"w": jnp.array([0.5, 0.5, 0.0])}).tolist()
      [[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]
    """
    if topology in DENSE:
        return np.asarray(params["w"], np.float64)
    N = int(np.shape(params["w"])[0])
    eye = jnp.eye(N, dtype=jnp.float32)
    cols = jax.vmap(lambda e: recurrent_product(topology, params, e, jump_size))(eye)
    return np.asarray(cols, np.float64).T


@functools.lru_cache(maxsize=64)
def structured_spectral_radius(N: int, jump_weight: float, jump_size: int) -> float:
    """Spectral radius of the cycle-with-jumps matrix with ``r_c = 1``, ``r_j = jump_weight``
    (float64 on the host: LAPACK up to ``N = 2048``, ARPACK on the ``O(N)`` product above)."""
    mask = _jump_mask(N, jump_size).astype(np.float64) * jump_weight

    def matvec(h):
        out = np.roll(h, 1) + np.roll(mask * h, jump_size) + mask * np.roll(h, -jump_size)
        return out

    if N <= 2048:
        W = np.stack([matvec(e) for e in np.eye(N)], axis=1)
        return float(np.max(np.abs(np.linalg.eigvals(W))))
    from scipy.sparse.linalg import LinearOperator, eigs

    op = LinearOperator((N, N), matvec=matvec, dtype=np.float64)
    vals = eigs(op, k=4, which="LM", return_eigenvectors=False, tol=1e-10, maxiter=N * 20)
    return float(np.max(np.abs(vals)))


@functools.partial(jax.jit, static_argnames=("topology", "N", "dtype", "scale"))
def _dense_draw(key, density, sr, *, topology, N, dtype, scale):
    k_w, k_m = jax.random.split(key)
    dd = _draw_dtype(dtype)
    if topology == "orthogonal":
        a = jax.random.normal(k_w, (N, N), dd)
        q, r = jnp.linalg.qr(a)
        q = q * jnp.sign(jnp.diagonal(r))[None, :]  # Haar measure (Mezzadri 2007)
        return (q * jnp.asarray(sr, dd)).astype(dtype)
    if topology == "normal":
        w = jax.random.normal(k_w, (N, N), dd)
    else:
        w = jax.random.uniform(k_w, (N, N), dd, -1.0, 1.0)
    w = jnp.where(jax.random.bernoulli(k_m, density, (N, N)), w, jnp.zeros((), dd))
    return _finish(w, sr if scale else None, dd, dtype)


def draw(
    key,
    topology: str,
    N: int,
    *,
    spectral_radius,
    density: float = 1.0,
    jump_size: int = 0,
    jump_weight: float = 0.5,
    neighbours: int = 2,
    rewire: float = 0.1,
    clusters: int = 3,
    inter_density: float = 0.01,
    bernoulli_p: float = 0.5,
    dtype=jnp.float32,
) -> dict:
    """Draw ``W`` of one topology: ``{"w": ...}`` (plus ``"w_jump"`` for ``"jumps"``).

    Args:
      key: PRNG key (unused by the deterministic structured topologies).
      topology: one of :data:`TOPOLOGIES`.
      N: reservoir size.
      spectral_radius: target radius (``None``: unscaled; for ``"delay"`` the edge weight).
      density: fraction of non-zero entries (``"normal"``, ``"uniform"``, ``"bernoulli"``,
        ``"fast_spectral"``; inside the blocks of ``"cluster"``).
      jump_size, jump_weight: ``l`` and ``r_j / r_c`` of ``"jumps"``.
      neighbours, rewire: lattice neighbours and rewiring probability of ``"small_world"``.
      clusters, inter_density: blocks and the density between them of ``"cluster"``.
      bernoulli_p: probability of ``+1`` of ``"bernoulli"``.
      dtype: the parameter dtype; drawn in it (never below float32, then cast).

    Returns:
      ``{"w": (N, N) or (N,)}``, and ``{"w_jump": (N,)}`` for ``"jumps"``.

    Example:
      >>> import jax
      >>> from rnnjax.reservoir.matrices import draw
      >>> {k: v.shape for k, v in draw(jax.random.key(0), "jumps", 10, spectral_radius=0.9,
      ...                               jump_size=3).items()}
      {'w': (10,), 'w_jump': (10,)}
    """
    checks.choice("topology", topology, TOPOLOGIES)
    dt = jnp.dtype(dtype)
    sr = spectral_radius
    if topology == "small_world":
        return {
            "w": small_world(
                key, N, neighbours=neighbours, rewire=rewire, spectral_radius=sr, dtype=dt
            )
        }
    if topology == "cluster":
        return {
            "w": cluster(
                key,
                N,
                clusters=clusters,
                density=density,
                inter_density=inter_density,
                spectral_radius=sr,
                dtype=dt,
            )
        }
    if topology == "bernoulli":
        return {
            "w": bernoulli(key, N, p=bernoulli_p, density=density, spectral_radius=sr, dtype=dt)
        }
    if topology == "fast_spectral":
        return {"w": fast_spectral(key, N, spectral_radius=sr, density=density, dtype=dt)}
    if topology in DENSE:
        sr = 1.0 if spectral_radius is None else spectral_radius
        return {
            "w": _dense_draw(
                key,
                density,
                sr,
                topology=topology,
                N=N,
                dtype=dt,
                scale=spectral_radius is not None,
            )
        }
    r = 1.0 if spectral_radius is None else float(spectral_radius)
    w = np.full(N, r, np.float64)
    if topology == "delay":
        w[-1] = 0.0
        return {"w": jnp.asarray(w, dt)}
    if topology == "cycle":
        return {"w": jnp.asarray(w, dt)}
    wj = _jump_mask(N, jump_size).astype(np.float64) * jump_weight
    if spectral_radius is not None:
        rho = structured_spectral_radius(N, jump_weight, jump_size)
        w, wj = w / rho, wj * (r / rho)
    return {"w": jnp.asarray(w, dt), "w_jump": jnp.asarray(wj, dt)}

r"""Random reservoir matrices with structure: small world, clusters, +-1 entries, fast
spectral initialisation (the ``"small_world"``, ``"cluster"``, ``"bernoulli"`` and
``"fast_spectral"`` topologies of :mod:`rnnjax.reservoir.matrices`, which describes them
and how they compare with ReservoirPy's generators).

Each returns a dense ``(N, N)`` matrix in the math orientation (``W @ h``).

References:
  Watts & Strogatz (1998). Collective dynamics of 'small-world' networks. Nature 393.
  Gallicchio, Micheli & Pedrelli (2020). Fast spectral radius initialization for recurrent
  neural networks. In: Recent Advances in Big Data and Deep Learning, 380-390.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnnjax import checks, diagnostics

__all__ = ["small_world", "cluster", "bernoulli", "fast_spectral"]


def _draw_dtype(dtype) -> jnp.dtype:
    """Draw in the parameter dtype, but never below float32 (bfloat16/float16 parameters
    are drawn in float32 and cast: every backend can draw float32)."""
    return jnp.promote_types(jnp.float32, jnp.dtype(dtype))


def _scale_to(w, sr, dd):
    """``w`` times ``sr / rho(w)`` (``rho`` exact, float64 on the host); a zero matrix stays."""
    rho = diagnostics.spectral_radius(w).astype(dd)
    return w * jnp.where(rho > 0, sr / jnp.where(rho > 0, rho, 1.0), 0.0).astype(dd)


def _finish(w, sr, dd, dtype):
    return (w if sr is None else _scale_to(w, jnp.asarray(sr, dd), dd)).astype(dtype)


def _check_n(N):
    return checks.integer("N", N, 1)


def _checked(key, spectral_radius, dtype):
    """The arguments every topology shares, checked as :class:`rnnjax.EchoState` checks
    them: ``(key, radius to scale to, scale?, dtype)``."""
    key = checks.key("key", key)
    if spectral_radius is not None:
        checks.number("spectral_radius", spectral_radius, 0.0, min_open=True)
    dtype = checks.floating_dtype("dtype", dtype)
    sr = 1.0 if spectral_radius is None else spectral_radius
    return key, sr, spectral_radius is not None, dtype


@functools.partial(jax.jit, static_argnames=("N", "neighbours", "dtype", "scale"))
def _small_world(key, rewire, sr, *, N, neighbours, dtype, scale):
    dd = _draw_dtype(dtype)
    k_lo, k_up, k_m, k_c = jax.random.split(key, 4)
    half = neighbours // 2
    units = jnp.arange(N)
    # lattice edge e = (k - 1) N + j joins i = j + k (mod N) and j, k = 1 .. half
    i = ((units[None, :] + jnp.arange(1, half + 1)[:, None]) % N).reshape(-1)
    j = jnp.tile(units, half)
    w = jnp.zeros((N, N), dd)
    w = w.at[i, j].set(jax.random.normal(k_lo, i.shape, dd))
    w = w.at[j, i].set(jax.random.normal(k_up, i.shape, dd))
    move = jax.random.uniform(k_m, i.shape) < rewire

    def rewire_edge(e, w):
        a, b = i[e], j[e]
        free = (w[a] == 0) & (units != a)
        new = jax.random.categorical(jax.random.fold_in(k_c, e), jnp.where(free, 0.0, -jnp.inf))
        go = move[e] & jnp.any(free)
        new = jnp.where(go, new, b)  # a no-op rewrite of the edge when not moving
        wab, wba = w[a, b], w[b, a]
        w = w.at[a, b].set(0).at[b, a].set(0)
        return w.at[a, new].set(wab).at[new, a].set(wba)

    w = jax.lax.fori_loop(0, N * half, rewire_edge, w)
    return _finish(w, sr if scale else None, dd, dtype)


def small_world(
    key,
    N: int,
    *,
    neighbours: int = 2,
    rewire: float = 0.1,
    spectral_radius=None,
    dtype=jnp.float32,
) -> jax.Array:
    """A Watts-Strogatz small-world reservoir matrix ``(N, N)`` (ReservoirPy's
    ``small_world``, ``nb_close_neighbours``, ``proba_rewire``, normal weights).

    The ring lattice links every unit to ``neighbours`` nearest ones (both directions,
    independent ``N(0, 1)`` weights); each lattice edge ``{j + k, j}`` is then moved with
    probability ``rewire`` to ``{j + k, j'}``, ``j'`` uniform among the units not yet
    linked to ``j + k``, in ReservoirPy's order. The pattern stays symmetric with
    ``N * neighbours`` non-zeros; ``rewire=0`` gives the lattice itself.

    Args:
      key: PRNG key.
      N: size.
      neighbours: even number of lattice neighbours per unit, ``< N``.
      rewire: rewiring probability in ``[0, 1]``.
      spectral_radius: scale to this exact radius (``None``: unscaled).
      dtype: float dtype (drawn in at least float32).

    Example:
      >>> import jax, numpy as np
      >>> from rnnjax.reservoir.topologies import small_world
      >>> w = small_world(jax.random.key(0), 8, neighbours=2, rewire=0.0)
      >>> (np.asarray(w) != 0).sum(axis=0).tolist()    # the ring: two links per unit
      [2, 2, 2, 2, 2, 2, 2, 2]
    """
    N = _check_n(N)
    key, sr, scale, dtype = _checked(key, spectral_radius, dtype)
    if N < 3:
        raise ValueError(f"N must be >= 3 for a ring lattice of even degree; got {N}")
    checks.integer("neighbours", neighbours, 2, N - 1)
    if neighbours % 2:
        raise ValueError(f"neighbours must be even (half on each side); got {neighbours}")
    checks.number("rewire", rewire, 0.0, 1.0)
    return _small_world(key, rewire, sr, N=N, neighbours=neighbours, dtype=dtype, scale=scale)


@functools.partial(jax.jit, static_argnames=("N", "clusters", "kind", "dtype", "scale"))
def _masked(key, d_in, d_out, p, sr, *, N, clusters, kind, dtype, scale):
    dd = _draw_dtype(dtype)
    k_w, k_m = jax.random.split(key)
    if kind == "bernoulli":
        w = jnp.where(jax.random.bernoulli(k_w, p, (N, N)), 1.0, -1.0).astype(dd)
    elif kind == "fast_spectral":
        w = jax.random.uniform(k_w, (N, N), dd, -1.0, 1.0)
        # a = 6 r / sqrt(12 d N): entry variance d a^2 / 3 = r^2 / N (Gallicchio et al.)
        w = w * (jnp.sqrt(3.0) * sr / jnp.sqrt(d_in * N) if scale else 1.0).astype(dd)
        scale = False
    else:
        w = jax.random.normal(k_w, (N, N), dd)
    block = jnp.arange(N) // (N // clusters)
    d = jnp.where(block[:, None] == block[None, :], d_in, d_out)
    w = jnp.where(jax.random.uniform(k_m, (N, N)) < d, w, jnp.zeros((), dd))
    return _finish(w, sr if scale else None, dd, dtype)


def cluster(
    key,
    N: int,
    *,
    clusters: int = 3,
    density: float = 0.1,
    inter_density: float = 0.01,
    spectral_radius=None,
    dtype=jnp.float32,
) -> jax.Array:
    """A clustered reservoir matrix ``(N, N)`` (ReservoirPy's ``cluster``, normal weights):
    ``clusters`` diagonal blocks of size ``N / clusters`` with entry density ``density``
    (``p_in``), and density ``inter_density`` (``p_out``) elsewhere; ``N(0, 1)`` weights.

    Args:
      key: PRNG key.
      N: size, a multiple of ``clusters``.
      clusters: number of blocks.
      density, inter_density: non-zero fractions inside and between blocks.
      spectral_radius: scale to this exact radius (``None``: unscaled).
      dtype: float dtype.

    Example:
      >>> import jax, numpy as np
      >>> from rnnjax.reservoir.topologies import cluster
      >>> w = np.asarray(cluster(jax.random.key(0), 6, clusters=2, density=1.0,
      ...                        inter_density=0.0))
      >>> (w != 0).astype(int).tolist()
      [[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1]]
    """
    N = _check_n(N)
    checks.integer("clusters", clusters, 1, N)
    if N % clusters:
        raise ValueError(f"N must be a multiple of clusters; got N={N}, clusters={clusters}")
    checks.number("density", density, 0.0, 1.0)
    checks.number("inter_density", inter_density, 0.0, 1.0)
    key, sr, scale, dtype = _checked(key, spectral_radius, dtype)
    return _masked(
        key,
        density,
        inter_density,
        0.5,
        sr,
        N=N,
        clusters=clusters,
        kind="cluster",
        dtype=dtype,
        scale=scale,
    )


def bernoulli(
    key,
    N: int,
    *,
    p: float = 0.5,
    density: float = 1.0,
    spectral_radius=None,
    dtype=jnp.float32,
) -> jax.Array:
    """A ``+-1`` reservoir matrix ``(N, N)`` (ReservoirPy's ``bernoulli``): a fraction
    ``density`` of entries non-zero, each ``+1`` with probability ``p``, else ``-1``; then
    times ``spectral_radius / rho`` (so the values are ``{0, +c, -c}``).

    Args:
      key: PRNG key.
      N: size.
      p: probability of ``+1``.
      density: non-zero fraction.
      spectral_radius: scale to this exact radius (``None``: the values stay ``+-1``).
      dtype: float dtype.

    Example:
      >>> import jax, numpy as np
      >>> from rnnjax.reservoir.topologies import bernoulli
      >>> np.unique(bernoulli(jax.random.key(0), 10, density=0.5)).tolist()
      [-1.0, 0.0, 1.0]
    """
    N = _check_n(N)
    checks.number("p", p, 0.0, 1.0)
    checks.number("density", density, 0.0, 1.0, min_open=True)  # 0: an all-zero matrix
    key, sr, scale, dtype = _checked(key, spectral_radius, dtype)
    return _masked(
        key,
        density,
        density,
        p,
        sr,
        N=N,
        clusters=1,
        kind="bernoulli",
        dtype=dtype,
        scale=scale,
    )


def fast_spectral(
    key, N: int, *, spectral_radius=None, density: float = 1.0, dtype=jnp.float32
) -> jax.Array:
    """Fast spectral initialisation (Gallicchio, Micheli & Pedrelli 2020; ReservoirPy's
    ``fast_spectral_initialization``): a fraction ``density`` of entries ``U(-a, a)``,
    ``a = 6 r / sqrt(12 density N)``, no eigenvalue solve.

    Each entry has variance ``r^2 / N``, so by the circular law the eigenvalues fill the
    disc of radius ``r``: the spectral radius is ``r`` up to a finite-size deviation
    (measured at ``N = 500``, ``density = 0.1``, ``r = 0.9``, three draws: 0.913-0.935;
    ReservoirPy's: 0.909-0.923).
    ``spectral_radius=None``: ``a = 1`` (ReservoirPy's convention).

    Args:
      key: PRNG key.
      N: size.
      spectral_radius: the expected radius ``r``, or ``None``.
      density: non-zero fraction.
      dtype: float dtype.

    Example:
      >>> import jax
      >>> from rnnjax.diagnostics import spectral_radius
      >>> from rnnjax.reservoir.topologies import fast_spectral
      >>> w = fast_spectral(jax.random.key(0), 400, spectral_radius=0.9, density=0.2)
      >>> abs(float(spectral_radius(w)) - 0.9) < 0.05
      True
    """
    N = _check_n(N)
    checks.number("density", density, 0.0, 1.0, min_open=True)
    key, sr, scale, dtype = _checked(key, spectral_radius, dtype)
    return _masked(
        key,
        density,
        density,
        0.5,
        sr,
        N=N,
        clusters=1,
        kind="fast_spectral",
        dtype=dtype,
        scale=scale,
    )

r"""Hyperparameter sweeps at matrix speed: grids and random search over echo state networks.

Models that share a seed share their base matrices: one unit-radius ``W``, one unit
``W_in`` and one unit bias per seed. A model's spectral radius ``rho``, leak rate ``a``,
input scaling ``s_in`` and bias scaling ``s_b`` only scale them:

.. math::

    h^{(m)}_t = (1 - a_m) h^{(m)}_{t-1} + a_m f\big(s_{in,m} u_t W_{in} + s_{b,m} b
                + \rho_m W h^{(m)}_{t-1}\big)

so all ``M`` models of a seed run through the shared engine
(:func:`rnnjax.engine.run`) as ONE batched product ``W [h^{(1)} ... h^{(M)}]`` per step,
not ``M`` matrix-vector products. Ridge values never re-run anything: each model's
statistics are accumulated once; with more than four ridge values all of them come from
one eigendecomposition per model (:func:`rnnjax.reservoir.solve_ridges`), with up to four
each is a checked Cholesky (cheaper than one eigendecomposition on XLA:CPU). Scores: the one-step NRMSE on the test series
(teacher-forced), and optionally the free-run NRMSE over ``free_run`` steps, for every
model and ridge at once (the free run keeps its own scan: its input is the readout's
output, which is inside the loop).

Dense ``W``: a ``jax.experimental.sparse`` BCOO product was measured in this loop at
``N = 500``, 16 models (``experiments/esn_sparse.py``, two loaded CPU cores): 1.06x the
dense time at density 0.1 (the default), 0.65x at 0.05, 0.49x at 0.02, 0.20x at 0.01; the
one-model harvest: 4.3x, 1.7x, 0.91x, 0.30x. Dense is kept (faster at the default
density); a sparse path for very sparse reservoirs is not built.

Shapes: ``T`` time, ``I`` input size, ``O`` outputs, ``N`` reservoir size, ``S`` seeds,
``G`` configurations per seed, ``R`` ridge values, ``M = S G R`` rows of the table.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax.reservoir.drivers as drivers
import rnnjax.reservoir.readouts as ro
from rnnjax import checks, engine
from rnnjax.reservoir.cell import Drive, DriveState, runtime

__all__ = ["sweep", "random_search", "AXES"]

AXES = ("spectral_radius", "leak_rate", "input_scaling", "bias_scaling")
_CHOLESKY_MAX_RIDGES = 4


def _run_models(cell, p, h0, u, fb_prev, cfg, valid):
    """One seed's ``G`` models over ``u (C, I)`` through the engine: ``(h, H (C, G, N))``."""
    C = u.shape[0]
    G = cfg.shape[0]
    d = drivers.drive(cell, p, u, fb_prev, None, 0, cfg[:, 2], cfg[:, 3])  # (C, G, N)
    sa = jnp.broadcast_to(cfg[None, :, :2].astype(d.dtype), (C, G, 2))
    x = jnp.concatenate([d, sa], axis=-1)
    st, H = engine.run(Drive(cell, per_model=True), p, DriveState(h0), x, valid=valid)
    return st.h, H


@functools.partial(
    jax.jit, static_argnames=("cell", "chunk", "precision", "free_run", "with_input")
)
def _sweep_jit(cell, params, cfg, ridges, data, washout, *, chunk, precision, free_run, with_input):
    """Every model's one-step (and free-run) NRMSE ``(S, G, R)``; ``data`` is what
    :func:`_prepare_data` returns."""
    u_tr, y_tr, fbp_tr, u_te, y_te, fbp_te = data
    accum = ro.accum_dtype(precision)
    dt = u_tr.dtype
    S = jax.tree_util.tree_leaves(params)[0].shape[0]
    G, R = cfg.shape[0], ridges.shape[0]
    T, N, I = u_tr.shape[0], cell.hidden_size, cell.input_size
    O = y_tr.shape[1]
    F = N + (I if with_input else 0)
    C = min(chunk, T)
    n = -(-T // C)
    pad = n * C - T
    cfg = cfg.astype(dt)

    def body(carry, inp):
        h, mom = carry
        c, u_c, y_c, fb_c = inp
        t = c * C + jnp.arange(C)
        valid = jnp.broadcast_to((t < T)[:, None], (C, G)) if pad else None
        h, H = jax.vmap(lambda p, h0: _run_models(cell, p, h0, u_c, fb_c, cfg, valid))(params, h)
        X = jnp.moveaxis(H, 2, 1).reshape(S * G, C, N)  # (S G, C, N)
        if with_input:
            X = jnp.concatenate([X, jnp.broadcast_to(u_c, (S * G, C, I))], axis=-1)
        m = (t >= washout) & (t < T)
        # one model at a time (lax.map): plain GEMMs (or QRs) rather than batched ones,
        # XLA:CPU's batched float64 dot was measured 3x slower than the same products
        # one by one
        mom = jax.lax.map(lambda a: ro.acc_add(a[0], a[1], y_c, m), (mom, X))
        return (h, mom), None

    h0 = jnp.zeros((S, G, N), dt)
    mom0 = jax.tree_util.tree_map(
        lambda a: jnp.broadcast_to(a, (S * G,) + a.shape), ro.acc_init(F, O, accum)
    )
    fb = None if fbp_tr is None else drivers.padded_chunks(fbp_tr, C, n)
    xs = (jnp.arange(n), drivers.padded_chunks(u_tr, C, n), drivers.padded_chunks(y_tr, C, n), fb)
    (h, mom), _ = jax.lax.scan(body, (h0, mom0), xs)
    outs = _solve(mom, ridges)
    W = outs["w_out"].reshape(S, G, R, F, O)
    b = outs["b_out"].reshape(S, G, R, O)

    # one-step test, teacher-forced, from the training's final states
    _, Hte = jax.vmap(lambda p, h0: _run_models(cell, p, h0, u_te, fbp_te, cfg, None))(params, h)
    target = y_te.astype(accum)
    Hm = jnp.moveaxis(Hte, 2, 1).reshape(S * G, u_te.shape[0], N)  # (S G, T', N)

    def score(args):  # one model at a time: only (T', F) features in the readout dtype
        hm, w, bb = args
        f = hm.astype(accum)
        if with_input:
            f = jnp.concatenate([f, u_te.astype(accum)], axis=-1)
        pred = jnp.einsum("tf,rfo->rto", f, w) + bb[:, None, :]
        return jnp.mean(jnp.square(pred - target[None]), axis=(-2, -1))

    err = jax.lax.map(score, (Hm, W.reshape(S * G, R, F, O), b.reshape(S * G, R, O)))
    one_step = jnp.sqrt(err.reshape(S, G, R) / jnp.var(target))  # (S, G, R)
    if not free_run:
        return one_step, None

    free = _free_run(cell, params, cfg, h, W, b, u_tr[-1], u_te, free_run, with_input, accum)
    return one_step, free


def _solve(mom, ridges):
    """Every model's readouts for every ridge value from its statistics ``mom`` (one
    leading model axis): ``{"w_out": (S G, R, F, O), "b_out": (S G, R, O)}``."""
    R = ridges.shape[0]
    if R > _CHOLESKY_MAX_RIDGES:
        return jax.lax.map(lambda a: ro.acc_solve_many(a, ridges), mom)
    # few ridge values: a checked Cholesky per value is cheaper than one
    # eigendecomposition (XLA:CPU's eigh measured 0.7 s against 0.08 s for Cholesky at
    # N = 500 on the shared 2-core machine)

    def per_ridge(a):
        outs = [ro.acc_solve(a, ridges[k])[0] for k in range(R)]
        return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *outs)

    return jax.lax.map(per_ridge, mom)


def _free_run(cell, params, cfg, h, W, b, u_last, u_te, n, with_input, accum):
    """The free-run NRMSE ``(S, G, R)`` over ``n`` steps from the training's final states
    ``h (S, G, N)``: the output is the next input, so the run keeps its own scan."""
    G, R, N, I = cfg.shape[0], W.shape[2], cell.hidden_size, cell.input_size
    dt = u_te.dtype

    def free_seed(p, hs, Wg, bg):
        def step(carry, _):
            hh, u_prev = carry
            feats = hh.astype(accum)
            if with_input:
                feats = jnp.concatenate([feats, u_prev], axis=-1)
            y = jnp.einsum("grf,grfo->gro", feats, Wg) + bg
            u = y.astype(dt)
            d = cfg[:, None, 2:3] * (u @ p["w_in"]) + cfg[:, None, 3:4] * p["b"][None, None, :]
            if cell.feedback_size:
                d = d + u @ p["w_fb"]
            pre = d + cfg[:, None, 0:1] * cell.recurrent_product(p, hh)
            act = jnp.tanh(pre) if cell.activation == "tanh" else pre
            a = cfg[:, None, 1:2]
            return ((1 - a) * hh + a * act, y), y

        hh = jnp.broadcast_to(hs[:, None, :], (G, R, N))
        u0 = jnp.broadcast_to(u_last.astype(accum), (G, R, I))
        _, ys = jax.lax.scan(step, (hh, u0), None, length=n)
        return ys  # (n, G, R, O)

    ys = jax.vmap(free_seed)(params, h, W, b)  # (S, n, G, R, O)
    truth = u_te[:n].astype(accum)
    ferr = jnp.mean(jnp.square(ys - truth[None, :, None, None, :]), axis=(1, -1))
    return jnp.sqrt(ferr / jnp.var(u_te.astype(accum)))


def _values(name, vals, lo, hi=None, lo_open=False):
    vals = list(np.atleast_1d(np.asarray(vals, np.float64)))
    if not vals:
        raise ValueError(f"{name} must be a non-empty sequence; got {vals!r}")
    for v in vals:
        checks.number(name, float(v), lo, hi, min_open=lo_open)
    return vals


def _prepare_data(cell, u_train, y_train, u_test, y_test, washout, free_run):
    dtype = jnp.dtype(cell.param_dtype)
    u_train = drivers.check_series("u_train", u_train, cell.input_size, "I")
    T = u_train.shape[0]
    O = y_train.shape[1] if getattr(y_train, "ndim", 0) == 2 else -1
    y_train = drivers.check_series("y_train", y_train, O, "O", T)
    u_test = drivers.check_series("u_test", u_test, cell.input_size, "I")
    y_test = drivers.check_series("y_test", y_test, O, "O", u_test.shape[0])
    checks.integer("washout", washout, 0)
    if washout >= T:
        raise ValueError(f"washout must be smaller than T = {T}; got {washout}")
    checks.integer("free_run", free_run, 0, u_test.shape[0])
    if free_run and O != cell.input_size:
        raise ValueError(
            f"free_run feeds the output back as input: needs O = I = {cell.input_size}; got O = {O}"
        )
    fbp_tr = fbp_te = None
    if cell.feedback_size:
        if O != cell.feedback_size:
            raise ValueError(f"y_train has O = {O} but cell.feedback_size = {cell.feedback_size}")
        y_tr = jnp.asarray(y_train, dtype)
        fbp_tr = jnp.concatenate([jnp.zeros((1, O), dtype), y_tr[:-1]])
        fbp_te = jnp.concatenate([y_tr[-1:], jnp.asarray(y_test, dtype)[:-1]])
    cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    return cast(u_train), cast(y_train), fbp_tr, cast(u_test), cast(y_test), fbp_te


def _run(cell, data, cfg, ridges, seeds, washout, chunk_size, precision, free_run, include_input):
    checks.integer("chunk_size", chunk_size, 1)
    drivers.check_precision(precision)
    checks.boolean("include_input", include_input)
    unit = dataclasses.replace(cell, spectral_radius=1.0, input_scaling=1.0, bias_scaling=1.0)
    bases = [unit.init(jax.random.key(int(s))) for s in seeds]
    params = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *bases)  # (S, ...)
    with ro.x64(precision):
        one, free = _sweep_jit(
            runtime(unit),
            params,
            jnp.asarray(cfg, data[0].dtype),
            jnp.asarray(ridges, ro.accum_dtype(precision)),
            data,
            washout,
            chunk=chunk_size,
            precision=precision,
            free_run=free_run,
            with_input=include_input,
        )
        one = np.asarray(one, np.float64)
        free = None if free is None else np.asarray(free, np.float64)
    S, G, R = len(seeds), cfg.shape[0], len(ridges)
    table = {
        name: np.broadcast_to(cfg[None, :, None, k], (S, G, R)).reshape(-1)
        for k, name in enumerate(AXES)
    }
    table["ridge"] = np.broadcast_to(np.asarray(ridges)[None, None, :], (S, G, R)).reshape(-1)
    table["seed"] = np.broadcast_to(np.asarray(seeds)[:, None, None], (S, G, R)).reshape(-1)
    table["nrmse"] = one.reshape(-1)
    if free is not None:
        table["nrmse_free"] = free.reshape(-1)
    return table


def sweep(
    cell,
    u_train,
    y_train,
    u_test,
    y_test,
    *,
    spectral_radius: Sequence[float],
    leak_rate: Sequence[float],
    ridge: Sequence[float],
    seeds: Sequence[int],
    input_scaling: Optional[Sequence[float]] = None,
    bias_scaling: Optional[Sequence[float]] = None,
    washout: int = 0,
    chunk_size: int = 1024,
    precision: str = "float64",
    free_run: int = 0,
    include_input: bool = False,
) -> dict:
    """Fit and score a grid of reservoirs in one jitted call (see the module doc).

    The grid is ``seeds x spectral_radius x leak_rate x input_scaling x bias_scaling x
    ridge`` (``M`` models, in that order; ``input_scaling``/``bias_scaling`` default to the
    cell's). Per seed one unit reservoir is built (``cell`` with spectral radius, input and
    bias scaling 1, ``init(jax.random.key(seed))``); a model equals the cell with its
    values ``init``-ed from the same key, fitted by ``fit_ridge`` on the training series
    and scored by the one-step NRMSE (RMSE / population std of the targets) on the test
    series, run on from the training's final state (tests check this model by model).

    Args:
      cell: the :class:`EchoState` whose other hyperparameters all models share.
      u_train, y_train: ``(T, I)``, ``(T, O)``.
      u_test, y_test: ``(T', I)``, ``(T', O)``; the test follows the training series.
      spectral_radius, leak_rate, ridge, seeds, input_scaling, bias_scaling: the axes.
      washout, chunk_size, precision, include_input: as in ``fit_ridge``.
      free_run: if ``> 0``, also score a free run of that many steps from the training's
        final state (output fed back as input, needs ``O == I``): ``ys[k]`` against
        ``u_test[k]`` (next-step tasks, ``y[t] = u[t+1]``, the test continuing the
        training), RMSE / std of ``u_test``, column ``"nrmse_free"``.

    Returns:
      A table as a dict of numpy arrays of length ``M``: ``"spectral_radius"``,
      ``"leak_rate"``, ``"input_scaling"``, ``"bias_scaling"``, ``"ridge"``, ``"seed"``,
      ``"nrmse"`` (and ``"nrmse_free"``).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import reservoir
      >>> u = jnp.sin(jnp.arange(400.0) / 5)[:, None]
      >>> cell = reservoir.EchoState(input_size=1, hidden_size=20)
      >>> table = reservoir.sweep(cell, u[:299], u[1:300], u[299:-1], u[300:], washout=50,
      ...                   spectral_radius=[0.5, 0.9], leak_rate=[0.3, 1.0],
      ...                   ridge=[1e-6, 1e-3], seeds=[0], free_run=20)
      >>> table["nrmse"].shape, table["nrmse_free"].shape
      ((8,), (8,))
    """
    drivers.check_cell(cell)
    axes = {
        "spectral_radius": _values("spectral_radius", spectral_radius, 0.0),
        "leak_rate": _values("leak_rate", leak_rate, 0.0, 1.0, lo_open=True),
        "input_scaling": _values(
            "input_scaling", [cell.input_scaling] if input_scaling is None else input_scaling, 0.0
        ),
        "bias_scaling": _values(
            "bias_scaling", [cell.bias_scaling] if bias_scaling is None else bias_scaling, 0.0
        ),
    }
    ridges = _values("ridge", ridge, 0.0)
    seeds = [checks.integer("seeds", s, 0) for s in np.atleast_1d(seeds).tolist()]
    if not seeds:
        raise ValueError("seeds must be a non-empty sequence")
    cfg = np.array(list(itertools.product(*(axes[a] for a in AXES))), np.float64)
    data = _prepare_data(cell, u_train, y_train, u_test, y_test, washout, free_run)
    return _run(
        cell, data, cfg, ridges, seeds, washout, chunk_size, precision, free_run, include_input
    )


def random_search(
    cell,
    u_train,
    y_train,
    u_test,
    y_test,
    *,
    n_samples: int,
    ranges: Mapping[str, tuple],
    ridge: Sequence[float],
    seeds: Sequence[int] = (0,),
    seed: int = 0,
    washout: int = 0,
    chunk_size: int = 1024,
    precision: str = "float64",
    free_run: int = 0,
    include_input: bool = False,
) -> dict:
    """Random search: ``n_samples`` configurations drawn log-uniformly, run as one sweep.

    Each hyperparameter named in ``ranges`` (any of ``"spectral_radius"``,
    ``"leak_rate"``, ``"input_scaling"``, ``"bias_scaling"``) is drawn log-uniformly in
    ``[lo, hi]`` (``lo > 0``; numpy ``default_rng(seed)``); the others keep the cell's
    value. Every configuration is scored at every ``ridge`` value and seed, exactly as by
    :func:`sweep` (Bergstra & Bengio 2012: random search beats a grid of the same size
    when few hyperparameters matter).

    Returns:
      The table of :func:`sweep` (``n_samples x len(ridge) x len(seeds)`` rows).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import reservoir
      >>> u = jnp.sin(jnp.arange(400.0) / 5)[:, None]
      >>> cell = reservoir.EchoState(input_size=1, hidden_size=20)
      >>> t = reservoir.random_search(cell, u[:299], u[1:300], u[299:-1], u[300:], n_samples=5,
      ...                       ranges={"spectral_radius": (0.1, 1.2), "leak_rate": (0.05, 1.0)},
      ...                       ridge=[1e-6], washout=50)
      >>> t["nrmse"].shape, bool((t["leak_rate"] <= 1.0).all())
      ((5,), True)
    """
    drivers.check_cell(cell)
    n_samples = checks.integer("n_samples", n_samples, 1)
    if not isinstance(ranges, Mapping) or not ranges:
        raise TypeError(
            f"ranges must be a non-empty dict {{name: (lo, hi)}}; got {checks.describe(ranges)}"
        )
    rng = np.random.default_rng(checks.integer("seed", seed, 0))
    cfg = np.tile(
        np.array(
            [cell.spectral_radius or 1.0, cell.leak_rate, cell.input_scaling, cell.bias_scaling],
            np.float64,
        ),
        (n_samples, 1),
    )
    for name, rg in ranges.items():
        checks.choice("ranges key", name, AXES)
        try:
            lo, hi = (float(v) for v in rg)
        except (TypeError, ValueError):
            raise ValueError(f"ranges[{name!r}] must be (lo, hi); got {rg!r}") from None
        checks.number(f"ranges[{name!r}] lo", lo, 0.0, min_open=True)
        checks.number(f"ranges[{name!r}] hi", hi, lo)
        if name == "leak_rate":
            checks.number("ranges['leak_rate'] hi", hi, 0.0, 1.0, min_open=True)
        cfg[:, AXES.index(name)] = np.exp(rng.uniform(np.log(lo), np.log(hi), n_samples))
    ridges = _values("ridge", ridge, 0.0)
    seeds = [checks.integer("seeds", s, 0) for s in np.atleast_1d(seeds).tolist()]
    data = _prepare_data(cell, u_train, y_train, u_test, y_test, washout, free_run)
    return _run(
        cell, data, cfg, ridges, seeds, washout, chunk_size, precision, free_run, include_input
    )

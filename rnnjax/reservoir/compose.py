r"""Composition: deep and hierarchical reservoirs, readouts reading any set of features.

A readout is a ridge regression on features; the features may be the states of one
reservoir or of several, in series (a deep ESN: each reservoir reads the one below) or in
parallel (several reservoirs reading the same input), with or without the input itself.
:func:`harvest_stack` runs reservoirs in series through the engine (any cell:
:class:`~rnnjax.reservoir.EchoState`, :class:`~rnnjax.reservoir.ES2N`,
:class:`~rnnjax.reservoir.IPReservoir`, ...), and :func:`fit_states` fits one readout on
any list of ``(T, F_k)`` feature blocks, concatenated, with the centred solve of
:mod:`rnnjax.reservoir.readouts`. ReservoirPy's ``[r1, r1 >> r2] >> Ridge()`` is
``fit_states(harvest_stack([r1, r2], ...), ys)``.

Shapes: ``T`` time, ``I`` input size, ``N_k`` reservoir ``k``'s size, ``F`` features,
``O`` outputs.

References:
  Gallicchio, Micheli & Pedrelli (2017). Deep reservoir computing: a critical
  experimental analysis. Neurocomputing 268.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

import rnnjax.reservoir.readouts as ro
from rnnjax import checks
from rnnjax.reservoir.preamble import check_precision

__all__ = ["harvest_stack", "fit_states"]


def harvest_stack(cells: Sequence, params: Sequence, us, *, input_to_all: bool = False):
    """Run reservoirs in series (a deep ESN): reservoir ``k`` reads reservoir ``k - 1``'s
    states (reservoir 0 reads ``us``), through :func:`rnnjax.unroll`.

    Args:
      cells: the reservoir cells, bottom first; cell ``k``'s ``input_size`` must equal
        cell ``k - 1``'s ``output_size`` (plus ``I`` with ``input_to_all``).
      params: their parameters, one dict per cell.
      us: inputs ``(T, I)``.
      input_to_all: every reservoir above the first also reads ``us`` (its input is
        ``[states below, us]``).

    Returns:
      A list of the states ``(T, N_k)`` of every reservoir, bottom first.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import reservoir
      >>> r1, r2 = reservoir.EchoState(1, 20), reservoir.EchoState(20, 10)
      >>> hs = reservoir.compose.harvest_stack([r1, r2], [r1.init(jax.random.key(0)),
      ...                         r2.init(jax.random.key(1))], jnp.ones((30, 1)))
      >>> [h.shape for h in hs]
      [(30, 20), (30, 10)]
    """
    from rnnjax.sequence import unroll

    checks.boolean("input_to_all", input_to_all)
    if not isinstance(cells, (list, tuple)) or not cells:
        raise TypeError(f"cells must be a non-empty list of cells; got {checks.describe(cells)}")
    if not isinstance(params, (list, tuple)) or len(params) != len(cells):
        raise ValueError(
            f"params must be a list of {len(cells)} dicts (one per cell); got "
            f"{checks.describe(params)}"
        )
    us = checks.series("us", us, cells[0].input_size, "I = cells[0].input_size")
    size = us.shape[-1]
    for k, cell in enumerate(cells):  # every size checked before anything runs
        want = size + (us.shape[-1] if k and input_to_all else 0)
        if cell.input_size != want:
            raise ValueError(
                f"cells[{k}].input_size must be {want} (the features it reads); got "
                f"{cell.input_size}"
            )
        size = cell.output_size
    out, x = [], us
    for k, (cell, p) in enumerate(zip(cells, params)):
        if k and input_to_all:
            x = jnp.concatenate([x, jnp.asarray(us, x.dtype)], axis=-1)
        _, x = unroll(cell, p, x)
        out.append(x)
    return out


@functools.partial(jax.jit, static_argnames=("precision",))
def _fit_states_jit(Z, ys, washout, ridge, *, precision):
    dt = ro.accum_dtype(precision)
    acc = ro.acc_init(Z.shape[1], ys.shape[1], dt)
    mask = jnp.arange(Z.shape[0]) >= washout
    acc = ro.acc_add(acc, Z, ys, mask)
    out = ro.acc_solve(acc, ridge)
    if isinstance(acc, ro.QRMoments):
        return out

    def by_qr(_):  # the Gram squared a bad condition: solve from the R factor
        return ro.acc_solve(
            ro.acc_add(ro.acc_init(*acc.cfy.shape, dt, qr=True), Z, ys, mask), ridge
        )

    return jax.lax.cond(ro.needs_qr(acc, out[1]), by_qr, lambda _: out, None)


def fit_states(features, ys, *, ridge: float, washout: int = 0, precision: str = "float64"):
    """Fit a ridge readout (with bias) on any features: one ``(T, F)`` array or a list of
    ``(T, F_k)`` blocks (states of several reservoirs, the input, ...) concatenated.

    The solve is the centred, checked one of :func:`rnnjax.reservoir.fit_ridge`.

    Args:
      features: ``(T, F)`` or a list of ``(T, F_k)`` arrays.
      ys: targets ``(T, O)``.
      ridge: the ridge penalty ``>= 0``.
      washout: initial steps left out of the fit.
      precision: ``"float64"`` (default) or ``"float32"``.

    Returns:
      ``{"w_out": (F, O), "b_out": (O,)}``; apply with
      :func:`rnnjax.reservoir.readout_apply` on the same concatenated features.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import reservoir
      >>> u = jnp.sin(jnp.arange(200.0) / 5)[:, None]
      >>> r1, r2 = reservoir.EchoState(1, 20), reservoir.EchoState(20, 10)
      >>> hs = reservoir.compose.harvest_stack([r1, r2], [r1.init(jax.random.key(0)),
      ...                         r2.init(jax.random.key(1))], u[:-1])
      >>> readout = reservoir.compose.fit_states([*hs, u[:-1]], u[1:], ridge=1e-6, washout=20)
      >>> readout["w_out"].shape                        # N_1 + N_2 + I rows
      (31, 1)
    """
    check_precision(precision)
    ridge = ro.check_ridge(ridge)
    blocks = list(features) if isinstance(features, (list, tuple)) else [features]
    if not blocks:
        raise ValueError("features must hold at least one (T, F) array; got an empty list")
    blocks = [
        checks.floating_array(f"features[{k}]", b, 2, " (T, F)") for k, b in enumerate(blocks)
    ]
    T = blocks[0].shape[0]
    for k, b in enumerate(blocks):
        if b.shape[0] != T:
            raise ValueError(
                f"features[{k}] must have T = {T} rows (as features[0]); got {checks.describe(b)}"
            )
    ys = checks.series("ys", ys, ys.shape[1] if getattr(ys, "ndim", 0) == 2 else -1, "O", T)
    checks.integer("washout", washout, 0, T - 1)
    with ro.x64(precision):
        dt = ro.accum_dtype(precision)
        Z = jnp.concatenate([jnp.asarray(b, dt) for b in blocks], axis=1)
        readout, info = _fit_states_jit(Z, jnp.asarray(ys, dt), washout, ridge, precision=precision)
    ro.check_solution(readout, info, ridge)
    return readout

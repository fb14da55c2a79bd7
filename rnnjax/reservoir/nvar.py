r"""Next-generation reservoir computing: the NVAR model (Gauthier et al. 2021).

No recurrent reservoir: the feature vector is built from the input's recent past,

.. math::

    O_{lin}(t) = [u_t, u_{t-s}, \dots, u_{t-(k-1)s}] \in \mathbb{R}^{kI}, \qquad
    O_{nl}(t) = \text{the unique monomials of degree } p \text{ of } O_{lin}(t), \qquad
    z_t = [O_{lin}(t), O_{nl}(t)]

(``k`` = ``delay``, ``s`` = ``stride``, ``p`` = ``order``; ``C(kI + p - 1, p)``
monomials, in lexicographic order of their index tuples ``i_1 <= ... <= i_p``, as
ReservoirPy's ``NVAR``). Inputs before the first step are zero. The readout is the ridge
readout of :mod:`rnnjax.reservoir.readouts` (centred features, unpenalised constant,
checked Cholesky with an eigendecomposition fallback): the monomials are strongly
collinear, and centring is what keeps the solve well conditioned.

Forecasting (Gauthier et al.): the readout predicts the *increment*
``u_{t+1} - u_t`` (``residual=True``), and :meth:`NVAR.forecast` feeds
``u_{t+1} = u_t + W z_t + b`` back for a free run.

Shapes: ``T`` time, ``I`` input size, ``F`` features, ``O`` outputs.

References:
  Gauthier, Bollt, Griffith & Barbosa (2021). Next generation reservoir computing.
  Nature Communications 12, 5564.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax.reservoir.readouts as ro
from rnnjax import checks
from rnnjax.reservoir.freerun import check_readout

__all__ = ["NVAR", "nvar_features"]


@dataclasses.dataclass(frozen=True)
class NVAR:
    """An NVAR feature map (see the module doc).

    Args:
      input_size: ``I``.
      delay: ``k``, number of delayed copies (``k >= 1``; ``k = 1`` is the input alone).
      stride: ``s``, steps between the copies.
      order: ``p``, degree of the monomials (``>= 2``).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.reservoir import NVAR
      >>> m = NVAR(input_size=3, delay=2, stride=1, order=2)
      >>> m.linear_size, m.feature_size
      (6, 27)
      >>> m.features(jnp.ones((10, 3))).shape
      (10, 27)
    """

    input_size: int
    delay: int = 2
    stride: int = 1
    order: int = 2

    def __post_init__(self):
        checks.integer("input_size", self.input_size, 1)
        checks.integer("delay", self.delay, 1)
        checks.integer("stride", self.stride, 1)
        checks.integer("order", self.order, 2)

    @property
    def linear_size(self) -> int:
        """``k I``."""
        return self.delay * self.input_size

    @property
    def monomials(self) -> tuple:
        """The index tuples ``i_1 <= ... <= i_p`` of the monomials, in order."""
        return tuple(itertools.combinations_with_replacement(range(self.linear_size), self.order))

    @property
    def feature_size(self) -> int:
        """``F = kI + C(kI + p - 1, p)``."""
        return self.linear_size + len(self.monomials)

    @property
    def warmup(self) -> int:
        """``(k - 1) s``: steps before every delayed copy holds real data."""
        return (self.delay - 1) * self.stride

    def features(self, us) -> jax.Array:
        """Features ``(T, F)`` of inputs ``(T, I)`` (zeros before the first step)."""
        us = checks.floating_array("us", us, 2, f" (T, {self.input_size})")
        if us.shape[1] != self.input_size:
            raise ValueError(
                f"us must have shape (T, {self.input_size}); got {checks.describe(us)}"
            )
        return _features_jit(self, us)

    def _lin_window(self, window):
        """Linear features from a window ``(W, I)`` whose last row is ``u_t``, with
        ``W = (k - 1) s + 1``."""
        rows = [window[-1 - j * self.stride] for j in range(self.delay)]
        return jnp.concatenate(rows)

    def fit(
        self,
        us,
        ys,
        *,
        ridge: float,
        washout=None,
        residual: bool = False,
        precision: str = "float64",
    ):
        """Fit the ridge readout of the features.

        Args:
          us: ``(T, I)``.
          ys: ``(T, O)`` targets (``ys[t]`` for the features of ``u_t``); with
            ``residual=True`` pass the next inputs ``(T, I)``: the readout is fitted on
            ``ys - us`` (the increment).
          ridge: ``>= 0``.
          washout: steps left out (default ``warmup``: incomplete delay windows).
          residual: fit increments.
          precision: ``"float64"`` (default) or ``"float32"``.

        Returns:
          Readout ``{"w_out": (F, O), "b_out": (O,)}``.
        """
        import rnnjax.reservoir.drivers as drivers

        drivers.check_precision(precision)
        ridge = ro.check_ridge(ridge)
        checks.boolean("residual", residual)
        us = checks.floating_array("us", us, 2, f" (T, {self.input_size})")
        O = ys.shape[1] if getattr(ys, "ndim", 0) == 2 else -1
        ys = drivers.check_series("ys", ys, O, "O", us.shape[0])
        washout = self.warmup if washout is None else checks.integer("washout", washout, 0)
        if washout >= us.shape[0]:
            raise ValueError(f"washout must be smaller than T = {us.shape[0]}; got {washout}")
        if residual and O != self.input_size:
            raise ValueError(f"residual=True needs ys (T, I = {self.input_size}); got O = {O}")
        with ro.x64(precision):
            acc = ro.accum_dtype(precision)
            readout, info = _fit_jit(
                self, jnp.asarray(us, acc), jnp.asarray(ys, acc), washout, ridge, residual=residual
            )
        ro.check_solution(readout, info, ridge, "NVAR readout")
        return readout

    def predict(self, readout, us, *, residual: bool = False):
        """One-step outputs ``(T, O)`` for inputs ``(T, I)`` (``u_t + out`` if residual)."""
        us = checks.floating_array("us", us, 2, f" (T, {self.input_size})")
        check_readout(readout, self.feature_size)
        with ro.x64("float64" if readout["w_out"].dtype == jnp.float64 else "float32"):
            feats = self.features(jnp.asarray(us, readout["w_out"].dtype))
            out = ro.apply(readout, feats)
            if residual:
                out = out + jnp.asarray(us, out.dtype)
            return np.asarray(out)

    def forecast(self, readout, history, n: int, *, residual: bool = True):
        """Free run: ``n`` steps after ``history`` ``(W, I)`` (``W >= warmup + 1``; its
        last row is the last observation). ``ys[0]`` is the prediction of the first
        unseen sample. Returns ``(n, I)`` numpy."""
        checks.integer("n", n, 1)
        history = checks.floating_array("history", history, 2, " (W, I)")
        W = self.warmup + 1
        if history.shape[0] < W or history.shape[1] != self.input_size:
            raise ValueError(
                f"history must have shape (>= {W}, {self.input_size}); got "
                f"{checks.describe(history)}"
            )
        O, _ = check_readout(readout, self.feature_size)
        if O != self.input_size:
            raise ValueError(f"forecast feeds the output back: needs O = I = {self.input_size}")
        with ro.x64("float64" if readout["w_out"].dtype == jnp.float64 else "float32"):
            dt = readout["w_out"].dtype
            return np.asarray(
                _forecast_jit(self, readout, jnp.asarray(history[-W:], dt), n=n, residual=residual)
            )


def _monomials(nvar: NVAR, lin):
    idx = np.asarray(nvar.monomials, np.int32)  # (M, p)
    return jnp.prod(lin[..., idx], axis=-1)


@functools.partial(jax.jit, static_argnames=("nvar",))
def _features_jit(nvar, us):
    T = us.shape[0]
    padded = jnp.concatenate([jnp.zeros((nvar.warmup,) + us.shape[1:], us.dtype), us])
    lin = jnp.concatenate(
        [
            padded[nvar.warmup - j * nvar.stride : nvar.warmup - j * nvar.stride + T]
            for j in range(nvar.delay)
        ],
        axis=1,
    )
    return jnp.concatenate([lin, _monomials(nvar, lin)], axis=1)


@functools.partial(jax.jit, static_argnames=("nvar", "residual"))
def _fit_jit(nvar, us, ys, washout, ridge, *, residual):
    Fz = _features_jit(nvar, us)
    target = ys - us if residual else ys
    m = jnp.arange(us.shape[0]) >= washout
    F, O = Fz.shape[1], target.shape[1]
    # the monomials are badly conditioned (cond ~1e8 on Lorenz-63): solve from the R
    # factor of the centred [features, targets] (an SVD of R), never from the Gram, whose
    # condition is the square (1e-2 off the SVD least-squares weights at ridge 1e-9)
    acc = ro.add_qr_moments(ro.zero_qr_moments(F, O, us.dtype), Fz, target, m)
    return ro.solve_qr(acc, ridge)


@functools.partial(jax.jit, static_argnames=("nvar", "n", "residual"))
def _forecast_jit(nvar, readout, window, *, n, residual):
    """The free run keeps its own scan: each output becomes the next step's input."""

    def step(win, _):
        lin = nvar._lin_window(win)
        z = jnp.concatenate([lin, _monomials(nvar, lin)])
        out = ro.apply(readout, z)
        u = win[-1] + out if residual else out
        return jnp.concatenate([win[1:], u[None]], axis=0), u

    _, ys = jax.lax.scan(step, window, None, length=n)
    return ys


def nvar_features(us, *, delay: int = 2, stride: int = 1, order: int = 2) -> jax.Array:
    """Functional form of :meth:`NVAR.features`: ``(T, I) -> (T, F)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.reservoir import nvar_features
      >>> nvar_features(jnp.arange(3.0)[:, None], delay=2).tolist()[-1]
      [2.0, 1.0, 4.0, 2.0, 1.0]
    """
    us = checks.floating_array("us", us, 2, " (T, I)")
    return NVAR(us.shape[1], delay, stride, order).features(us)

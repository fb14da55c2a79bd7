"""Diagnostics of recurrent networks: spectra of recurrent matrices and gradients through time.

- :func:`spectral_radius`, :func:`largest_singular_value`: small, general functions on
  one matrix (any recurrent matrix: an echo state reservoir, a ``w_hh`` block); both
  work under ``jit`` and ``vmap`` on every backend.
- :func:`pascanu_bound`: the sufficient condition for vanishing gradients of Pascanu,
  Mikolov & Bengio (2013), ``sigma_max(W_hh) < 1 / gamma``.
- :func:`gradient_norms_through_time`: ``||dL/ds_t||`` for every step ``t`` of one
  sequence, the loss taken at the last step, for any cell, in one jitted call.

Shapes: ``T`` time, ``I`` input size, ``H`` hidden size, ``N`` reservoir size.

References:
  Jaeger (2001). The "echo state" approach to analysing and training recurrent neural
  networks. GMD Report 148. (spectral radius < 1 as the practical echo state heuristic;
  largest singular value < 1 as a sufficient condition for the echo state property)
  Pascanu, Mikolov & Bengio (2013). On the difficulty of training recurrent neural
  networks. ICML. (the vanishing-gradient bound)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import engine

__all__ = [
    "spectral_radius",
    "largest_singular_value",
    "PascanuBound",
    "pascanu_bound",
    "NONLINEARITY_GAMMA",
    "gradient_norms_through_time",
]


def _check_square(name: str, w) -> None:
    if not hasattr(w, "shape") or w.ndim != 2 or w.shape[0] != w.shape[1]:
        got = f"shape {tuple(w.shape)}" if hasattr(w, "shape") else type(w).__name__
        raise ValueError(f"{name} must be a square matrix of shape (N, N); got {got}")


def _host_spectral_radius(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, np.float64)
    if w.size == 0:
        return np.zeros((), np.float64)
    return np.max(np.abs(np.linalg.eigvals(w))).astype(np.float64)


def spectral_radius(w: jax.Array) -> jax.Array:
    """The spectral radius ``max |eig(w)|`` of a square matrix, computed exactly.

    Computed in float64 on the host through :func:`jax.pure_callback` (because
    ``jnp.linalg.eigvals`` exists only on CPU), so this works inside ``jit``, ``vmap``
    (one call per matrix) and ``jax.eval_shape`` on any backend. All eigenvalues come
    from LAPACK (``numpy.linalg.eigvals``, ``O(N^3)``, about 1-2 s at ``N = 2000``).
    Not ARPACK (``scipy.sparse.linalg.eigs(k=1, which="LM")``, ReservoirPy's route): on a
    random N = 2000 reservoir it was measured to return an eigenvalue 1% below the
    largest, because the circular law packs many eigenvalues near the spectral edge. Not
    power iteration either, which does not converge on the complex conjugate pairs that
    dominate random real matrices.

    Args:
      w: ``(N, N)`` real matrix.

    Returns:
      A float32 scalar (float64 when x64 is enabled).

    References:
      Jaeger (2001), GMD Report 148.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.diagnostics import spectral_radius
      >>> float(spectral_radius(jnp.array([[0.0, 2.0], [-2.0, 0.0]])))  # eigenvalues +-2i
      2.0
    """
    _check_square("w", w)
    out = jax.ShapeDtypeStruct((), jnp.result_type(float))
    return jax.pure_callback(
        lambda m: _host_spectral_radius(m).astype(out.dtype), out, w, vmap_method="sequential"
    )


def largest_singular_value(w: jax.Array) -> jax.Array:
    """The largest singular value (operator 2-norm) of a matrix, ``sigma_max(w)``.

    ``sigma_max(W) < 1`` is a sufficient condition for the echo state property of a
    tanh reservoir (Jaeger 2001); it bounds the spectral radius from above.

    Args:
      w: ``(M, N)`` real matrix.

    Returns:
      A scalar of ``w``'s dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.diagnostics import largest_singular_value
      >>> float(largest_singular_value(jnp.diag(jnp.array([3.0, -4.0]))))
      4.0
    """
    if not hasattr(w, "shape") or w.ndim != 2:
        got = f"shape {tuple(w.shape)}" if hasattr(w, "shape") else type(w).__name__
        raise ValueError(f"w must be a matrix of shape (M, N); got {got}")
    return jnp.linalg.norm(w, ord=2)


# --------------------------------------------------------------------------- Pascanu bound

NONLINEARITY_GAMMA = {"tanh": 1.0, "sigmoid": 0.25, "relu": 1.0, "identity": 1.0}
"""``gamma``, the bound on the derivative of the nonlinearity: ``|phi'(x)| <= gamma``."""


class PascanuBound(NamedTuple):
    """The vanishing-gradient bound of Pascanu, Mikolov & Bengio (2013).

    Attributes:
      sigma_max: largest singular value of the recurrent matrix.
      gamma: the bound on the nonlinearity's derivative (1 for tanh, 1/4 for sigmoid).
      eta: ``gamma * sigma_max``, the bound on ``||dh_t / dh_{t-1}||``: for a loss at
        step ``T``, ``||dL/dh_t|| <= eta ** (T - t) * ||dL/dh_T||``.
      vanishing: ``sigma_max < 1 / gamma`` (i.e. ``eta < 1``): vanishing gradients are
        then guaranteed (sufficient, not necessary).

    Example:
      >>> import jax.numpy as jnp, rnnjax as rj
      >>> b = rj.pascanu_bound(0.5 * jnp.eye(4), "tanh")
      >>> round(float(b.sigma_max), 3), round(float(b.gamma), 3), bool(b.vanishing)
      (0.5, 1.0, True)
    """

    sigma_max: jax.Array
    gamma: jax.Array
    eta: jax.Array
    vanishing: jax.Array


def pascanu_bound(w_hh: jax.Array, nonlinearity: str = "tanh") -> PascanuBound:
    r"""The sufficient condition for vanishing gradients of Pascanu et al. (2013).

    For :math:`h_t = \phi(W^\top h_{t-1} + U^\top x_t + b)` with :math:`|\phi'| \le \gamma`,

    .. math::

        \Big\| \frac{\partial h_t}{\partial h_{t-1}} \Big\|
        \le \|W\|_2 \, \gamma = \eta, \qquad
        \Big\| \frac{\partial L}{\partial h_t} \Big\|
        \le \eta^{T - t} \Big\| \frac{\partial L}{\partial h_T} \Big\|,

    so ``sigma_max(W) < 1 / gamma`` makes the gradient vanish exponentially in ``T - t``.

    Args:
      w_hh: ``(H, H)`` recurrent matrix (for a gated cell, the block of one gate).
      nonlinearity: ``"tanh"`` (gamma 1), ``"sigmoid"`` (gamma 1/4), ``"relu"`` or
        ``"identity"`` (gamma 1), or a float ``gamma``.

    Returns:
      A :class:`PascanuBound` of scalars.

    References:
      Pascanu, Mikolov & Bengio (2013). On the difficulty of training recurrent neural
      networks. ICML, section 3.1.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.diagnostics import pascanu_bound
      >>> b = pascanu_bound(0.5 * jnp.eye(3), "sigmoid")
      >>> float(b.eta), bool(b.vanishing)
      (0.125, True)
    """
    _check_square("w_hh", w_hh)
    if isinstance(nonlinearity, str):
        if nonlinearity not in NONLINEARITY_GAMMA:
            raise ValueError(
                f"nonlinearity must be one of {sorted(NONLINEARITY_GAMMA)} or a positive float "
                f"gamma; got {nonlinearity!r}"
            )
        gamma = NONLINEARITY_GAMMA[nonlinearity]
    elif (
        isinstance(nonlinearity, (int, float))
        and not isinstance(nonlinearity, bool)
        and nonlinearity > 0
    ):
        gamma = float(nonlinearity)
    else:
        raise ValueError(
            f"nonlinearity must be one of {sorted(NONLINEARITY_GAMMA)} or a positive float gamma; "
            f"got {nonlinearity!r}"
        )
    sigma = largest_singular_value(w_hh)
    gamma = jnp.asarray(gamma, sigma.dtype)
    eta = gamma * sigma
    return PascanuBound(sigma_max=sigma, gamma=gamma, eta=eta, vanishing=eta < 1)


# --------------------------------------------------------------------------- gradients in time


def _default_loss(state) -> jax.Array:
    return jnp.sum(jax.tree_util.tree_leaves(state)[0])


@dataclasses.dataclass(frozen=True)
class _Perturbed:
    """``cell`` with a perturbation added to the state after each step, read from the
    input: ``x' = [x, e_h, e_c, ...]`` (one slice per state field). Its derivative with
    respect to ``e_t`` (at zero) is ``dL/ds_t``, so the engine's one backward pass gives
    every step's state gradient."""

    cell: Any

    @property
    def input_size(self) -> int:
        sizes = [leaf.shape[-1] for leaf in jax.tree_util.tree_leaves(self.cell.initial_state())]
        return self.cell.input_size + sum(sizes)

    @property
    def output_size(self) -> int:
        return self.cell.output_size

    def initial_state(self, dtype=None):
        return self.cell.initial_state(dtype)

    def project(self, params, x):
        return x

    def recur(self, params, state, xe):
        I = self.cell.input_size
        x = xe[..., :I]
        new, y = self.cell.recur(params, state, self.cell.project(params, x))
        leaves, treedef = jax.tree_util.tree_flatten(new)
        out, start = [], I
        for leaf in leaves:
            out.append(leaf + xe[..., start : start + leaf.shape[-1]].astype(leaf.dtype))
            start += leaf.shape[-1]
        return jax.tree_util.tree_unflatten(treedef, out), y


@functools.partial(jax.jit, static_argnames=("cell", "loss_fn"))
def _grad_norms_jit(cell, params, xs, state, loss_fn):
    T = xs.shape[0]
    sizes = [leaf.shape[-1] for leaf in jax.tree_util.tree_leaves(state)]
    eps = jnp.zeros((T, sum(sizes)), xs.dtype)
    wrapped = _Perturbed(cell)
    config = engine.ScanConfig(backward="reference")

    def loss_of(eps):
        final, _ = engine.run(
            wrapped, params, state, jnp.concatenate([xs, eps], axis=1), config=config
        )
        return loss_fn(final)

    grads = jax.grad(loss_of)(eps)
    parts = jnp.split(grads, np.cumsum(sizes)[:-1].tolist(), axis=1)
    treedef = jax.tree_util.tree_structure(state)
    return jax.tree_util.tree_unflatten(treedef, [jnp.linalg.norm(g, axis=1) for g in parts])


def gradient_norms_through_time(
    cell: Any,
    params: Any,
    xs: jax.Array,
    loss_fn: Optional[Callable] = None,
    state: Any = None,
):
    r"""``||dL/ds_t||`` for every step ``t`` of one sequence, the loss at the last step.

    ``s_t`` is the state after step ``t`` (``t = 0, ..., T - 1``) and
    ``L = loss_fn(s_{T-1})``; ``dL/ds_t`` is the total derivative through every later
    step (what backpropagation through time sends back to step ``t``). All ``T``
    gradients come from ONE backward pass: a zero perturbation ``e_t`` is added to the
    state after each step and ``dL/de_t = dL/ds_t``. Jitted (``cell`` and ``loss_fn``
    are static: pass the same function object to reuse the compilation); batch it with
    :func:`jax.vmap`.

    Args:
      cell: any rnnjax cell (``SimpleRNN``, ``LSTM``, ``GRU``, ``EchoState``, ...).
      params: the cell's params.
      xs: ``(T, I)`` inputs.
      loss_fn: ``state -> scalar``, the loss on the final state; default the sum of the
        state's first field (``h``, the output of every rnnjax cell), i.e. a fixed
        linear readout.
      state: initial state (default ``cell.initial_state(xs.dtype)``).

    Returns:
      A state-shaped NamedTuple of ``(T,)`` norms, one per state field: e.g.
      ``LSTMState(h=||dL/dh_t||, c=||dL/dc_t||)``, ``SimpleRNNState(h=...)``.

    References:
      Bengio, Simard & Frasconi (1994). Learning long-term dependencies with gradient
      descent is difficult. IEEE Trans. Neural Networks.
      Pascanu, Mikolov & Bengio (2013). On the difficulty of training recurrent neural
      networks. ICML.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.diagnostics import gradient_norms_through_time
      >>> cell = rj.SimpleRNN(2, 8)
      >>> g = gradient_norms_through_time(cell, cell.init(jax.random.key(0)), jnp.ones((5, 2)))
      >>> g.h.shape
      (5,)
    """
    if not (hasattr(cell, "step") and hasattr(cell, "initial_state")):
        raise TypeError(f"cell must be an rnnjax cell (with step and initial_state); got {cell!r}")
    if not hasattr(xs, "ndim") or xs.ndim != 2 or xs.shape[0] < 1:
        got = f"shape {tuple(xs.shape)}" if hasattr(xs, "shape") else type(xs).__name__
        raise ValueError(f"xs must be one sequence of shape (T, I) with T >= 1; got {got}")
    size = getattr(cell, "input_size", None)
    if size is not None and xs.shape[1] != size:
        raise ValueError(
            f"xs must have shape (T, I) with I = cell.input_size = {size}; got {tuple(xs.shape)}"
        )
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"xs must be floating point; got dtype {xs.dtype}")
    if loss_fn is None:
        loss_fn = _default_loss
    elif not callable(loss_fn):
        raise TypeError(f"loss_fn must be a callable state -> scalar or None; got {loss_fn!r}")
    if state is None:
        state = cell.initial_state(xs.dtype)
    return _grad_norms_jit(cell, params, xs, state, loss_fn)

r"""The delta rule (DeltaNet; Schlag et al. 2021, Yang et al. 2024).

.. math::

    S_t = (I - \beta_t k_t k_t^\top) S_{t-1} + \beta_t k_t v_t^\top,
    \qquad o_t = \text{scale}\; S_t^\top q_t

``S``: ``(dk, dv)`` per head; ``beta``: ``(T, *B, h)`` in ``[0, 2]``. With unit-norm keys
the transition's eigenvalue along ``k_t`` is ``1 - beta_t``: ``beta`` in ``(0, 1)`` is the
original rule (the cells use a sigmoid), ``(0, 2)`` allows negative eigenvalues (Grazzi et
al. 2025, ``2 * sigmoid``). A concrete ``beta`` outside ``[0, 2]`` is refused.

The chunkwise form is the WY / UT representation: within a chunk the corrected values
``beta_t (v_t - S_{t-1}^T k_t)`` solve ``(I + tril(diag(beta) K K^T, -1)) U = ...`` (see
:func:`rnnjax.ops.dplr.transition_chunk`).
"""

from __future__ import annotations

import jax.numpy as jnp

from rnnjax.ops import _common as cm
from rnnjax.ops import dplr

__all__ = ["step", "recurrent", "chunk"]


def step(state, q, k, v, beta, *, scale=None):
    r"""One step of the delta rule, without masks.

    Args:
      state: ``(*B, h, dk, dv)``.
      q, k: ``(*B, h, dk)``; v: ``(*B, h, dv)``; beta: ``(*B, h)``.
      scale: the query scale; ``None`` is ``dk ** -0.5``.

    Returns:
      ``(state, o)``: the new state (the state's dtype) and ``o`` ``(*B, h, dv)`` (the inputs'
      dtype).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> delta_rule = OPERATORS["delta_rule"]  # the module (rnnjax.ops.delta_rule is the public function)
      >>> S = jnp.zeros((2, 4, 3))
      >>> k = jnp.ones((2, 4)) / 2.0
      >>> S, o = delta_rule.step(S, k, k, jnp.ones((2, 3)), jnp.full((2,), 0.5))
      >>> o[0].tolist()  # S = 0.5 k v^T, o = S^T q / 2 with |k| = 1
      [0.25, 0.25, 0.25]
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    dt, out = state.dtype, jnp.result_type(q, k, v)
    k, beta = k.astype(dt), beta.astype(dt)[..., None]
    err = v.astype(dt) - jnp.einsum("...i,...iv->...v", k, state)
    state = state + k[..., None] * (beta * err)[..., None, :]
    o = scale * jnp.einsum("...i,...iv->...v", q.astype(dt), state)
    return state, o.astype(out)


def recurrent(q, k, v, beta, *, state, reset_state=None, valid=None, resets=None, scale=None):
    """The delta rule as a ``lax.scan`` of :func:`step` with the masks.

    Args:
      q, k: ``(T, *B, h, dk)``; v: ``(T, *B, h, dv)``; beta: ``(T, *B, h)`` in ``[0, 2]``.
      state: ``(*B, h, dk, dv)``, the state before step 0.
      reset_state: the state a reset puts back (default: ``state``).
      valid: bool ``(T, *B)``: a false step changes nothing and its output is 0.
      resets: bool ``(T, *B)``: the state is put back to ``reset_state`` before the step.
      scale: the query scale; ``None`` is ``dk ** -0.5``.

    Returns:
      ``(o, final_state)``: ``o`` ``(T, *B, h, dv)`` and the state after the last valid step.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> delta_rule = OPERATORS["delta_rule"]  # the module (rnnjax.ops.delta_rule is the public function)
      >>> x = jnp.ones((5, 2, 4)) / 2.0
      >>> o, S = delta_rule.recurrent(x, x, jnp.ones((5, 2, 3)), jnp.full((5, 2), 0.5),
      ...                             state=jnp.zeros((2, 4, 3)))
      >>> o.shape, S.shape
      ((5, 2, 3), (2, 4, 3))
    """
    dplr.check_beta("beta", beta, 2.0)

    def f(S, *x):
        return step(S, *x, scale=scale)

    xs = (q, k, v, beta)
    return cm.scan(f, xs, state=state, reset_state=reset_state, valid=valid, resets=resets)


def chunk(q, k, v, beta, *, state, reset_state=None, valid=None, resets=None, chunk=64, scale=None):
    """The delta rule, chunkwise (same arguments and results as :func:`recurrent`).

    Args:
      chunk: the chunk length ``C`` (a positive int); ``T`` is padded to a multiple of it.
      Others: as :func:`recurrent`.

    Returns:
      ``(o, final_state)`` as :func:`recurrent`, equal to it up to rounding.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> delta_rule = OPERATORS["delta_rule"]  # the module (rnnjax.ops.delta_rule is the public function)
      >>> x = jnp.ones((5, 2, 4)) / 2.0
      >>> args = (x, x, jnp.ones((5, 2, 3)), jnp.full((5, 2), 0.5))
      >>> o, S = delta_rule.chunk(*args, state=jnp.zeros((2, 4, 3)), chunk=2)
      >>> o2, S2 = delta_rule.recurrent(*args, state=jnp.zeros((2, 4, 3)))
      >>> bool(jnp.allclose(o, o2, atol=1e-5)), bool(jnp.allclose(S, S2, atol=1e-5))
      (True, True)
    """
    dplr.check_beta("beta", beta, 2.0)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    b = beta[..., None]
    return dplr.transition_chunk(
        q,
        k,
        v * b,
        -b * k,
        None,
        None,
        state=state,
        reset_state=reset_state,
        valid=valid,
        resets=resets,
        chunk=chunk,
        scale=scale,
    )

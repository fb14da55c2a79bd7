r"""Kimi Delta Attention (KDA, the recurrent layer of Kimi Linear): a per-channel decay, then
the delta rule.

.. math::

    S_t = (I - \beta_t k_t k_t^\top) \operatorname{diag}(e^{g^k_t}) S_{t-1}
          + \beta_t k_t v_t^\top,
    \qquad o_t = \text{scale}\; S_t^\top q_t

``S``: ``(dk, dv)`` per head; ``gk``: ``(T, *B, h, dk)``, a log-decay per key channel
(``<= 0`` for a decay; not checked); ``beta``: ``(T, *B, h)`` in ``[0, 2]`` (``(0, 1)`` in
the paper, ``(0, 2)`` with negative eigenvalues). A concrete ``beta`` outside ``[0, 2]`` is
refused. The order (decay, then delta) is fla's ``naive_recurrent_kda``.

The chunkwise form is the WY / UT representation with per-channel decays accumulated from
each segment's start (see :func:`rnnjax.ops.dplr.transition_chunk`); the ``(C, C, dk)``
pairwise decays are formed one chunk at a time (exact and overflow-free).
"""

from __future__ import annotations

import jax.numpy as jnp

from rnnjax.ops import _common as cm
from rnnjax.ops import dplr

__all__ = ["step", "recurrent", "chunk"]


def step(state, q, k, v, gk, beta, *, scale=None):
    r"""One step of KDA, without masks.

    Args:
      state: ``(*B, h, dk, dv)``.
      q, k, gk: ``(*B, h, dk)``; v: ``(*B, h, dv)``; beta: ``(*B, h)``.
      scale: the query scale; ``None`` is ``dk ** -0.5``.

    Returns:
      ``(state, o)``: the new state (the state's dtype) and ``o`` ``(*B, h, dv)`` (the inputs'
      dtype).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> kda = OPERATORS["kda"]  # the module (rnnjax.ops.kda is the public function)
      >>> S = jnp.ones((1, 2, 1))
      >>> k = jnp.array([[0.0, 1.0]])
      >>> gk = jnp.log(jnp.array([[0.5, 0.25]]))
      >>> S, o = kda.step(S, k, k, jnp.zeros((1, 1)), gk, jnp.ones((1,)), scale=1.0)
      >>> S[0, :, 0].tolist()  # channel 0 decayed by 0.5; channel 1 overwritten with v = 0
      [0.5, 0.0]
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    dt, out = state.dtype, jnp.result_type(q, k, v)
    k, beta = k.astype(dt), beta.astype(dt)[..., None]
    state = jnp.exp(gk.astype(dt))[..., None] * state
    err = v.astype(dt) - jnp.einsum("...i,...iv->...v", k, state)
    state = state + k[..., None] * (beta * err)[..., None, :]
    o = scale * jnp.einsum("...i,...iv->...v", q.astype(dt), state)
    return state, o.astype(out)


def recurrent(q, k, v, gk, beta, *, state, reset_state=None, valid=None, resets=None, scale=None):
    """KDA as a ``lax.scan`` of :func:`step` with the masks.

    Args:
      q, k, gk: ``(T, *B, h, dk)`` (``gk``: log-decays); v: ``(T, *B, h, dv)``;
        beta: ``(T, *B, h)`` in ``[0, 2]``.
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
      >>> kda = OPERATORS["kda"]  # the module (rnnjax.ops.kda is the public function)
      >>> x = jnp.ones((5, 2, 4)) / 2.0
      >>> o, S = kda.recurrent(x, x, jnp.ones((5, 2, 3)), -0.1 * x, jnp.full((5, 2), 0.5),
      ...                      state=jnp.zeros((2, 4, 3)))
      >>> o.shape, S.shape
      ((5, 2, 3), (2, 4, 3))
    """
    dplr.check_beta("beta", beta, 2.0)

    def f(S, *x):
        return step(S, *x, scale=scale)

    xs = (q, k, v, gk, beta)
    return cm.scan(f, xs, state=state, reset_state=reset_state, valid=valid, resets=resets)


def chunk(
    q, k, v, gk, beta, *, state, reset_state=None, valid=None, resets=None, chunk=64, scale=None
):
    """KDA, chunkwise (same arguments and results as :func:`recurrent`).

    Args:
      chunk: the chunk length ``C`` (a positive int); ``T`` is padded to a multiple of it.
      Others: as :func:`recurrent`.

    Returns:
      ``(o, final_state)`` as :func:`recurrent`, equal to it up to rounding.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> kda = OPERATORS["kda"]  # the module (rnnjax.ops.kda is the public function)
      >>> x = jnp.ones((5, 2, 4)) / 2.0
      >>> args = (x, x, jnp.ones((5, 2, 3)), -0.1 * x, jnp.full((5, 2), 0.5))
      >>> o, S = kda.chunk(*args, state=jnp.zeros((2, 4, 3)), chunk=2)
      >>> o2, S2 = kda.recurrent(*args, state=jnp.zeros((2, 4, 3)))
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
        -b * jnp.exp(gk) * k,
        None,
        gk,
        state=state,
        reset_state=reset_state,
        valid=valid,
        resets=resets,
        chunk=chunk,
        scale=scale,
    )

r"""The gated delta rule (Gated DeltaNet; Yang et al. 2025, the recurrent layer of Qwen3-Next).

.. math::

    S_t = e^{g_t} (I - \beta_t k_t k_t^\top) S_{t-1} + \beta_t k_t v_t^\top,
    \qquad o_t = \text{scale}\; S_t^\top q_t

``S``: ``(dk, dv)`` per head; ``g``: ``(T, *B, h)``, a log-decay per head (``<= 0`` for a
decay; not checked); ``beta``: ``(T, *B, h)`` in ``[0, 2]`` (``(0, 1)`` in the paper,
``(0, 2)`` with negative eigenvalues, Grazzi et al. 2025). A concrete ``beta`` outside
``[0, 2]`` is refused. The decay is applied first, then the delta update, as in fla's
``naive_recurrent_gated_delta_rule``.

The chunkwise form is the WY / UT representation with the decays accumulated from each
segment's start (see :func:`rnnjax.ops.dplr.transition_chunk`).
"""

from __future__ import annotations

import jax.numpy as jnp

from rnnjax.ops import _common as cm
from rnnjax.ops import dplr

__all__ = ["step", "recurrent", "chunk"]


def step(state, q, k, v, g, beta, *, scale=None):
    r"""One step of the gated delta rule, without masks.

    Args:
      state: ``(*B, h, dk, dv)``.
      q, k: ``(*B, h, dk)``; v: ``(*B, h, dv)``; g, beta: ``(*B, h)``.
      scale: the query scale; ``None`` is ``dk ** -0.5``.

    Returns:
      ``(state, o)``: the new state (the state's dtype) and ``o`` ``(*B, h, dv)`` (the inputs'
      dtype).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> gated_delta_rule = OPERATORS["gated_delta_rule"]  # the module (rnnjax.ops.gated_delta_rule is the public function)
      >>> S = jnp.ones((1, 2, 1))
      >>> k = jnp.array([[1.0, 0.0]])
      >>> S, o = gated_delta_rule.step(S, k, k, jnp.zeros((1, 1)), jnp.log(jnp.full((1,), 0.5)),
      ...                              jnp.full((1,), 1.0), scale=1.0)
      >>> S[0, :, 0].tolist()  # decayed to 0.5, then the k direction is overwritten with v = 0
      [0.0, 0.5]
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    dt, out = state.dtype, jnp.result_type(q, k, v)
    k, beta = k.astype(dt), beta.astype(dt)[..., None]
    state = jnp.exp(g.astype(dt))[..., None, None] * state
    err = v.astype(dt) - jnp.einsum("...i,...iv->...v", k, state)
    state = state + k[..., None] * (beta * err)[..., None, :]
    o = scale * jnp.einsum("...i,...iv->...v", q.astype(dt), state)
    return state, o.astype(out)


def recurrent(q, k, v, g, beta, *, state, reset_state=None, valid=None, resets=None, scale=None):
    """The gated delta rule as a ``lax.scan`` of :func:`step` with the masks.

    Args:
      q, k: ``(T, *B, h, dk)``; v: ``(T, *B, h, dv)``; g: ``(T, *B, h)`` log-decays;
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
      >>> gated_delta_rule = OPERATORS["gated_delta_rule"]  # the module (rnnjax.ops.gated_delta_rule is the public function)
      >>> x = jnp.ones((5, 2, 4)) / 2.0
      >>> o, S = gated_delta_rule.recurrent(x, x, jnp.ones((5, 2, 3)), jnp.full((5, 2), -0.1),
      ...                                   jnp.full((5, 2), 0.5), state=jnp.zeros((2, 4, 3)))
      >>> o.shape, S.shape
      ((5, 2, 3), (2, 4, 3))
    """
    dplr.check_beta("beta", beta, 2.0)

    def f(S, *x):
        return step(S, *x, scale=scale)

    xs = (q, k, v, g, beta)
    return cm.scan(f, xs, state=state, reset_state=reset_state, valid=valid, resets=resets)


def chunk(
    q, k, v, g, beta, *, state, reset_state=None, valid=None, resets=None, chunk=64, scale=None
):
    """The gated delta rule, chunkwise (same arguments and results as :func:`recurrent`).

    Args:
      chunk: the chunk length ``C`` (a positive int); ``T`` is padded to a multiple of it.
      Others: as :func:`recurrent`.

    Returns:
      ``(o, final_state)`` as :func:`recurrent`, equal to it up to rounding.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> gated_delta_rule = OPERATORS["gated_delta_rule"]  # the module (rnnjax.ops.gated_delta_rule is the public function)
      >>> x = jnp.ones((5, 2, 4)) / 2.0
      >>> args = (x, x, jnp.ones((5, 2, 3)), jnp.full((5, 2), -0.1), jnp.full((5, 2), 0.5))
      >>> o, S = gated_delta_rule.chunk(*args, state=jnp.zeros((2, 4, 3)), chunk=2)
      >>> o2, S2 = gated_delta_rule.recurrent(*args, state=jnp.zeros((2, 4, 3)))
      >>> bool(jnp.allclose(o, o2, atol=1e-5)), bool(jnp.allclose(S, S2, atol=1e-5))
      (True, True)
    """
    dplr.check_beta("beta", beta, 2.0)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    b = beta[..., None]
    a = -(b * jnp.exp(g)[..., None]) * k
    return dplr.transition_chunk(
        q,
        k,
        v * b,
        a,
        None,
        g,
        state=state,
        reset_state=reset_state,
        valid=valid,
        resets=resets,
        chunk=chunk,
        scale=scale,
    )

r"""The gated delta rule (Gated DeltaNet, Yang et al. 2025; the recurrent layer of
Qwen3-Next),

.. math::

    S_t = e^{g_t} (I - \beta_t k_t k_t^\top) S_{t-1} + \beta_t k_t v_t^\top,
    \qquad o_t = \text{scale}\; S_t^\top q_t .

Layout (time-major): ``q, k`` ``(T, *B, h, dk)``, ``v`` ``(T, *B, h, dv)``, ``g``
``(T, *B, h)`` (log-decays, normally ``<= 0``), ``beta`` ``(T, *B, h)`` in ``[0, 2]`` (as
in the delta rule: ``(0, 1)``, or ``(0, 2)`` with negative eigenvalues), state
``S`` ``(*B, h, dk, dv)``, masks bool ``(T, *B)``; ``scale`` defaults to ``dk ** -0.5``. The
decay comes first, then the delta update (fla's ``naive_recurrent_gated_delta_rule``).
Public entry point: :func:`rnnjax.ops.gated_delta_rule`.

Example:
  >>> import jax.numpy as jnp
  >>> from rnnjax.ops import OPERATORS
  >>> gdn = OPERATORS["gated_delta_rule"]                # the module
  >>> S = jnp.ones((1, 2, 1))
  >>> k = jnp.array([[1.0, 0.0]])
  >>> S, o = gdn.step(S, k, k, jnp.zeros((1, 1)), jnp.log(jnp.full(1, 0.5)), jnp.ones(1))
  >>> S[0, :, 0].tolist()          # decayed to 0.5, then the k direction overwritten with 0
  [0.0, 0.5]
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

import rnnjax.ops._common as cm
import rnnjax.ops.delta_rule as delta_rule
import rnnjax.ops.dplr as dplr

__all__ = ["step", "recurrent", "chunk"]


def step(state, q, k, v, g, beta, *, scale=None):
    """One step: the decay ``exp(g)`` (``(*B, h)``), then the delta rule's step
    (``OPERATORS["delta_rule"].step``). Returns ``(state, o)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> x = jnp.ones((2, 3))  # (h, d)
      >>> S, o = OPERATORS["gated_delta_rule"].step(jnp.zeros((2, 3, 3)), x, x, x, jnp.full(2, -0.1), jnp.full(2, 0.5))
      >>> o.shape
      (2, 3)
    """
    state = jnp.exp(g.astype(state.dtype))[..., None, None] * state
    return delta_rule.step(state, q, k, v, beta, scale=scale)


def recurrent(q, k, v, g, beta, *, state, reset_state=None, valid=None, resets=None, scale=None):
    """``lax.scan`` of :func:`step` with the masks. Returns ``(o, final_state)``.

    Example:
      >>> import jax.numpy as jnp, rnnjax as rj
      >>> x, s0 = jnp.ones((5, 2, 3)), jnp.zeros((2, 3, 3))  # (T, h, d), (h, dk, dv)
      >>> rj.ops.OPERATORS["gated_delta_rule"].recurrent(x, x, x, jnp.full((5, 2), -0.1), jnp.full((5, 2), 0.5), state=s0)[0].shape
      (5, 2, 3)
    """
    dplr.check_beta("beta", beta, 2.0)
    f = functools.partial(step, scale=scale)
    masks = dict(reset_state=reset_state, valid=valid, resets=resets)
    return cm.scan(f, (q, k, v, g, beta), state=state, **masks)


def chunk(
    q, k, v, g, beta, *, state, reset_state=None, valid=None, resets=None, chunk=64, scale=None
):
    """The chunkwise form, equal to :func:`recurrent`. Returns ``(o, final_state)``.

    Example:
      >>> import jax.numpy as jnp, rnnjax as rj
      >>> op, x = rj.ops.OPERATORS["gated_delta_rule"], jnp.ones((5, 2, 3))  # (T, h, d)
      >>> args = (x, x, x, jnp.full((5, 2), -0.1), jnp.full((5, 2), 0.5))
      >>> o, S = op.chunk(*args, state=jnp.zeros((2, 3, 3)), chunk=2)
      >>> bool(jnp.allclose(o, op.recurrent(*args, state=jnp.zeros((2, 3, 3)))[0], atol=1e-5))
      True
    """
    masks = dict(reset_state=reset_state, valid=valid, resets=resets)
    return delta_rule.decayed_chunk(
        q, k, v, g, beta, state=state, **masks, chunk=chunk, scale=scale
    )

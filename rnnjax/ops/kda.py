r"""Kimi Delta Attention (KDA, the recurrent layer of Kimi Linear): a decay per key channel,
then the delta rule,

.. math::

    S_t = (I - \beta_t k_t k_t^\top) \operatorname{diag}(e^{g^k_t}) S_{t-1}
          + \beta_t k_t v_t^\top,
    \qquad o_t = \text{scale}\; S_t^\top q_t .

Layout (time-major): ``q, k, gk`` ``(T, *B, h, dk)`` (``gk``: log-decays, normally
``<= 0``), ``v`` ``(T, *B, h, dv)``, ``beta`` ``(T, *B, h)`` in ``[0, 2]`` (as in
the delta rule), state ``S`` ``(*B, h, dk, dv)``, masks bool ``(T, *B)``;
``scale`` defaults to ``dk ** -0.5``. The order (decay, then delta) is fla's
``naive_recurrent_kda``. The chunk form builds the ``(C, C, dk)`` pairwise decays one chunk
at a time (exact, no positive exponent). Public entry point: :func:`rnnjax.ops.kda`.

Example:
  >>> import jax.numpy as jnp
  >>> from rnnjax.ops import OPERATORS
  >>> kda = OPERATORS["kda"]                             # the module
  >>> S = jnp.ones((1, 2, 1))
  >>> k = jnp.array([[0.0, 1.0]])
  >>> gk = jnp.log(jnp.array([[0.5, 0.25]]))
  >>> S, o = kda.step(S, k, k, jnp.zeros((1, 1)), gk, jnp.ones(1))
  >>> S[0, :, 0].tolist()          # channel 0 decayed by 0.5, channel 1 overwritten with 0
  [0.5, 0.0]
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

import rnnjax.ops._common as cm
import rnnjax.ops.delta_rule as delta_rule
import rnnjax.ops.dplr as dplr

__all__ = ["step", "recurrent", "chunk"]


def step(state, q, k, v, gk, beta, *, scale=None):
    """One step: the decay ``exp(gk)`` (``(*B, h, dk)``) of the key channels, then
    the delta rule's step
    (``OPERATORS["delta_rule"].step``). Returns ``(state, o)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> x = jnp.ones((2, 3))  # (h, d)
      >>> S, o = OPERATORS["kda"].step(jnp.zeros((2, 3, 3)), x, x, x, -0.1 * x, jnp.full(2, 0.5))
      >>> o.shape
      (2, 3)
    """
    state = jnp.exp(gk.astype(state.dtype))[..., None] * state
    return delta_rule.step(state, q, k, v, beta, scale=scale)


def recurrent(q, k, v, gk, beta, *, state, reset_state=None, valid=None, resets=None, scale=None):
    """``lax.scan`` of :func:`step` with the masks. Returns ``(o, final_state)``.

    Example:
      >>> import jax.numpy as jnp, rnnjax as rj
      >>> x, s0 = jnp.ones((5, 2, 3)), jnp.zeros((2, 3, 3))  # (T, h, d), (h, dk, dv)
      >>> rj.ops.OPERATORS["kda"].recurrent(x, x, x, -0.1 * x, jnp.full((5, 2), 0.5), state=s0)[0].shape
      (5, 2, 3)
    """
    dplr.check_beta("beta", beta, 2.0)
    f = functools.partial(step, scale=scale)
    masks = dict(reset_state=reset_state, valid=valid, resets=resets)
    return cm.scan(f, (q, k, v, gk, beta), state=state, **masks)


def chunk(
    q, k, v, gk, beta, *, state, reset_state=None, valid=None, resets=None, chunk=64, scale=None
):
    """The chunkwise form, equal to :func:`recurrent`. Returns ``(o, final_state)``.

    Example:
      >>> import jax.numpy as jnp, rnnjax as rj
      >>> op, x = rj.ops.OPERATORS["kda"], jnp.ones((5, 2, 3))  # (T, h, d)
      >>> args = (x, x, x, -0.1 * x, jnp.full((5, 2), 0.5))
      >>> o, S = op.chunk(*args, state=jnp.zeros((2, 3, 3)), chunk=2)
      >>> bool(jnp.allclose(o, op.recurrent(*args, state=jnp.zeros((2, 3, 3)))[0], atol=1e-5))
      True
    """
    masks = dict(reset_state=reset_state, valid=valid, resets=resets)
    return delta_rule.decayed_chunk(
        q, k, v, gk, beta, state=state, **masks, chunk=chunk, scale=scale
    )

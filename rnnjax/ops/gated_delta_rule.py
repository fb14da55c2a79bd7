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

from rnnjax.ops import _common as cm
from rnnjax.ops import delta_rule, dplr

__all__ = ["step", "recurrent", "chunk"]


def step(state, q, k, v, g, beta, *, scale=None):
    """One step: the decay ``exp(g)`` (``(*B, h)``), then the delta rule's step
    (``OPERATORS["delta_rule"].step``). Returns ``(state, o)``."""
    state = jnp.exp(g.astype(state.dtype))[..., None, None] * state
    return delta_rule.step(state, q, k, v, beta, scale=scale)


def recurrent(q, k, v, g, beta, *, state, reset_state=None, valid=None, resets=None, scale=None):
    """``lax.scan`` of :func:`step` with the masks. Returns ``(o, final_state)``."""
    dplr.check_beta("beta", beta, 2.0)
    f = functools.partial(step, scale=scale)
    masks = dict(reset_state=reset_state, valid=valid, resets=resets)
    return cm.scan(f, (q, k, v, g, beta), state=state, **masks)


def chunk(
    q, k, v, g, beta, *, state, reset_state=None, valid=None, resets=None, chunk=64, scale=None
):
    """The chunkwise form, equal to :func:`recurrent`. Returns ``(o, final_state)``."""
    masks = dict(reset_state=reset_state, valid=valid, resets=resets)
    return delta_rule.decayed_chunk(
        q, k, v, g, beta, state=state, **masks, chunk=chunk, scale=scale
    )

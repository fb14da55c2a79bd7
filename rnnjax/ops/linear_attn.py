"""Linear attention (Katharopoulos et al. 2020), fla's ``linear_attn``: a matrix state
with no decay,

.. math::

    S_t = S_{t-1} + k_t v_t^\\top, \\qquad o_t = \\text{scale}\\; S_t^\\top q_t .

Layout (time-major): ``q, k`` ``(T, *B, h, dk)``, ``v`` ``(T, *B, h, dv)``, state ``S``
``(*B, h, dk, dv)``, masks ``valid``/``resets`` bool ``(T, *B)``; ``scale`` defaults to
``dk ** -0.5``. The public entry point is :func:`rnnjax.ops.linear_attn`; these functions
are what the engine and cells call (masks as in :mod:`rnnjax.ops._common`).

Example:
  >>> import jax.numpy as jnp
  >>> from rnnjax.ops import OPERATORS
  >>> la = OPERATORS["linear_attn"]                  # the module
  >>> q = k = jnp.ones((5, 2, 1, 4)); v = jnp.ones((5, 2, 1, 3))   # (T, B, h, d)
  >>> S0 = jnp.zeros((2, 1, 4, 3))                                    # (B, h, dk, dv)
  >>> o, S = la.chunk(q, k, v, state=S0, chunk=2)
  >>> o.shape, S.shape, float(o[4, 0, 0, 0])    # 5 steps of (q . k) * scale = 4 * 0.5
  ((5, 2, 1, 3), (2, 1, 4, 3), 10.0)
"""

from __future__ import annotations

from rnnjax.ops import _diagonal as dg

__all__ = ["step", "recurrent", "chunk"]


def step(state, q, k, v, *, scale=None):
    """One step: ``q, k`` ``(*B, h, dk)``, ``v`` ``(*B, h, dv)``, ``state``
    ``(*B, h, dk, dv)``. Returns ``(state, o)``, ``o`` ``(*B, h, dv)``."""
    return dg.step(state, q, k, v, None, scale=dg.default_scale(scale, q))


def recurrent(q, k, v, *, state, reset_state=None, valid=None, resets=None, scale=None):
    """``lax.scan`` of :func:`step` with the masks. Returns ``(o, final_state)``."""
    return dg.recurrent(
        q,
        k,
        v,
        None,
        state=state,
        reset_state=reset_state,
        valid=valid,
        resets=resets,
        scale=dg.default_scale(scale, q),
    )


def chunk(q, k, v, *, state, reset_state=None, valid=None, resets=None, chunk=64, scale=None):
    """The chunkwise form, equal to :func:`recurrent`. Returns ``(o, final_state)``."""
    return dg.chunk(
        q,
        k,
        v,
        None,
        state=state,
        reset_state=reset_state,
        valid=valid,
        resets=resets,
        chunk=chunk,
        scale=dg.default_scale(scale, q),
    )

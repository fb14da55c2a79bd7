"""Gated linear attention (Yang et al. 2024, fla's ``gla``): a log-decay per key channel,

.. math::

    S_t = \\operatorname{diag}(e^{g^k_t})\\, S_{t-1} + k_t v_t^\\top, \\qquad
    o_t = \\text{scale}\\; S_t^\\top q_t .

Layout (time-major): ``q, k`` ``(T, *B, h, dk)``, ``v`` ``(T, *B, h, dv)``, ``gk``
``(T, *B, h, dk)`` (log-decays, normally ``<= 0``), state ``S`` ``(*B, h, dk, dv)``, masks
bool ``(T, *B)``; ``scale`` defaults to ``dk ** -0.5``. The chunk form builds the
``(C, C, dk)`` pairwise decays of one chunk at a time (exact and overflow-free, memory
``O(B h C^2 dk)``). Public entry point: :func:`rnnjax.ops.gla`.

Example:
  >>> import jax.numpy as jnp
  >>> from rnnjax.ops import OPERATORS
  >>> gla = OPERATORS["gla"]                         # the module
  >>> q = k = jnp.ones((3, 1, 2)); v = jnp.ones((3, 1, 1))           # (T, h, d)
  >>> gk = jnp.log(jnp.array([[[0.5, 1.0]]] * 3))                    # (T, h, dk)
  >>> o, S = gla.chunk(q, k, v, gk, state=jnp.zeros((1, 2, 1)), chunk=2, scale=1.0)
  >>> o[:, 0, 0].tolist(), S[0, :, 0].tolist()
  ([2.0, 3.5, 4.75], [1.75, 3.0])
"""

from __future__ import annotations

from rnnjax.ops import _diagonal as dg

__all__ = ["step", "recurrent", "chunk"]


def step(state, q, k, v, gk, **options):
    """One step: ``q, k, gk`` ``(*B, h, dk)``, ``v`` ``(*B, h, dv)``,
    ``state`` ``(*B, h, dk, dv)`` (keyword ``scale``). Returns ``(state, o)``."""
    return dg.step(state, q, k, v, gk, **options)


def recurrent(q, k, v, gk, **options):
    """``lax.scan`` of :func:`step` with the masks (keywords ``state`` (required),
    ``reset_state``, ``valid``, ``resets``, ``scale``). Returns ``(o, final_state)``."""
    return dg.recurrent(q, k, v, gk, **options)


def chunk(q, k, v, gk, **options):
    """The chunkwise form, equal to :func:`recurrent` (keywords as :func:`recurrent` and
    ``chunk=64``). Returns ``(o, final_state)``."""
    return dg.chunk(q, k, v, gk, **options)

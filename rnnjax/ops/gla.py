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

import rnnjax.ops._diagonal as dg

__all__ = ["step", "recurrent", "chunk"]


def step(state, q, k, v, gk, **options):
    """One step: ``q, k, gk`` ``(*B, h, dk)``, ``v`` ``(*B, h, dv)``,
    ``state`` ``(*B, h, dk, dv)`` (keyword ``scale``). Returns ``(state, o)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> S, o = OPERATORS["gla"].step(jnp.ones((1, 2, 1)), jnp.ones((1, 2)), jnp.ones((1, 2)),
      ...                              jnp.ones((1, 1)), jnp.log(jnp.array([[0.5, 1.0]])))
      >>> S.ravel().tolist()                          # channel 0 halves, channel 1 keeps
      [1.5, 2.0]
    """
    return dg.step(state, q, k, v, gk, **options)


def recurrent(q, k, v, gk, **options):
    """``lax.scan`` of :func:`step` with the masks (keywords ``state`` (required),
    ``reset_state``, ``valid``, ``resets``, ``scale``). Returns ``(o, final_state)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> x, gk = jnp.ones((4, 1, 2)), jnp.log(jnp.full((4, 1, 2), 0.5))  # (T, h, d)
      >>> o, S = OPERATORS["gla"].recurrent(x, x, x[..., :1], gk, state=jnp.zeros((1, 2, 1)))
      >>> S.ravel().tolist()                          # 1/8 + 1/4 + 1/2 + 1 per channel
      [1.875, 1.875]
    """
    return dg.recurrent(q, k, v, gk, **options)


def chunk(q, k, v, gk, **options):
    """The chunkwise form, equal to :func:`recurrent` (keywords as :func:`recurrent` and
    ``chunk=64``). Returns ``(o, final_state)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> q, k, v, gk = jax.random.normal(jax.random.key(0), (4, 7, 2, 3, 4))  # (T, B, h, d)
      >>> gk = jax.nn.log_sigmoid(gk)
      >>> valid = jnp.arange(7)[:, None] < jnp.array([7, 2])        # lengths 7 and 2
      >>> o, S = OPERATORS["gla"].chunk(q, k, v, gk, state=jnp.zeros((2, 3, 4, 4)),
      ...                               valid=valid, chunk=4)
      >>> bool((o[2:, 1] == 0).all()), S.shape
      (True, (2, 3, 4, 4))
    """
    return dg.chunk(q, k, v, gk, **options)

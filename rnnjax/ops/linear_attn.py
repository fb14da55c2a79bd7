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

import rnnjax.ops._diagonal as dg

__all__ = ["step", "recurrent", "chunk"]


def step(state, q, k, v, **options):
    """One step: ``q, k`` ``(*B, h, dk)``, ``v`` ``(*B, h, dv)``,
    ``state`` ``(*B, h, dk, dv)`` (keyword ``scale``). Returns ``(state, o)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> S, o = OPERATORS["linear_attn"].step(jnp.zeros((1, 4, 2)), jnp.ones((1, 4)),
      ...                                      jnp.ones((1, 4)), jnp.ones((1, 2)))
      >>> o.tolist()                                  # (q . k) v * 4 ** -0.5
      [[2.0, 2.0]]
    """
    return dg.step(state, q, k, v, None, **options)


def recurrent(q, k, v, **options):
    """``lax.scan`` of :func:`step` with the masks (keywords ``state`` (required),
    ``reset_state``, ``valid``, ``resets``, ``scale``). Returns ``(o, final_state)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> x = jnp.ones((3, 1, 1))                     # (T, h, d)
      >>> o, S = OPERATORS["linear_attn"].recurrent(
      ...     x, x, x, state=jnp.zeros((1, 1, 1)), valid=jnp.array([True, False, True]))
      >>> o[:, 0, 0].tolist()                         # step 1 is skipped
      [1.0, 0.0, 2.0]
    """
    return dg.recurrent(q, k, v, None, **options)


def chunk(q, k, v, **options):
    """The chunkwise form, equal to :func:`recurrent` (keywords as :func:`recurrent` and
    ``chunk=64``). Returns ``(o, final_state)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> x = jnp.ones((5, 1, 1))                     # (T, h, d)
      >>> o, S = OPERATORS["linear_attn"].chunk(x, x, x, state=jnp.zeros((1, 1, 1)), chunk=2,
      ...                                       resets=jnp.array([0, 0, 1, 0, 0], bool))
      >>> o[:, 0, 0].tolist(), S.ravel().tolist()     # a new segment at step 2
      ([1.0, 2.0, 1.0, 2.0, 3.0], [3.0])
    """
    return dg.chunk(q, k, v, None, **options)

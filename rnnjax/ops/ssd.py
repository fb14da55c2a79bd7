"""Mamba-2's state-space duality (SSD, Dao and Gu 2024): per head a scalar decay
:math:`e^{\\Delta_t A}`,

.. math::

    H_t = e^{\\Delta_t A}\\, H_{t-1} + B_t (\\Delta_t x_t)^\\top, \\qquad y_t = H_t^\\top C_t ,

which is :mod:`rnnjax.ops.simple_gla` with ``q = C``, ``k = B``, ``v = dt * x``,
``g = dt * A`` and ``scale = 1``. Mamba-2's skip term ``D * x``, the ``softplus`` and bias
of ``dt`` and ``A = -exp(A_log)`` are the caller's.

Layout (time-major; Mamba-2's ``(b, l, h, p)`` is batch-first): ``x`` ``(T, *B, h, p)``,
``dt`` ``(T, *B, h)`` (step sizes, normally ``> 0``), ``A`` ``(h,)`` (normally ``< 0``),
``B, C`` ``(T, *B, g, n)`` with ``g`` groups dividing ``h`` (head ``i`` uses group
``i // (h // g)``, as Mamba-2), state ``H`` ``(*B, h, n, p)``, masks bool ``(T, *B)``.
Public entry point: :func:`rnnjax.ops.ssd`.

Example:
  >>> import jax.numpy as jnp
  >>> from rnnjax.ops import OPERATORS
  >>> ssd = OPERATORS["ssd"]                         # the module
  >>> x = jnp.ones((3, 1, 1)); dt = jnp.ones((3, 1)); A = jnp.log(jnp.array([0.5]))
  >>> Bm = Cm = jnp.ones((3, 1, 1))                            # (T, g, n)
  >>> y, H = ssd.chunk(x, dt, A, Bm, Cm, state=jnp.zeros((1, 1, 1)), chunk=2)
  >>> y[:, 0, 0].tolist()
  [1.0, 1.5, 1.75]
"""

from __future__ import annotations

import jax.numpy as jnp

import rnnjax.ops._common as cm
import rnnjax.ops._diagonal as dg

__all__ = ["step", "recurrent", "chunk"]


def _as_gla(x, dt, A, B, C):
    """``(q, k, v, g)`` of simple GLA; groups of ``B, C`` repeated to the heads."""
    rep = x.shape[-2] // B.shape[-2]
    if rep != 1:
        B, C = jnp.repeat(B, rep, axis=-2), jnp.repeat(C, rep, axis=-2)
    return C, B, x * dt[..., None].astype(x.dtype), dt * cm.bcast_lead(A, dt.ndim)


def step(state, x, dt, A, B, C, *, scale=1.0):
    """One step: ``x`` ``(*B, h, p)``, ``dt`` ``(*B, h)``, ``A`` ``(h,)``, ``B, C``
    ``(*B, g, n)``, ``state`` ``(*B, h, n, p)``. Returns ``(state, y)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> one = jnp.ones((2, 1))                      # (h, p) and (g, n): 2 heads, 1 group
      >>> H, y = OPERATORS["ssd"].step(jnp.zeros((2, 1, 1)), one, jnp.array([0.5, 2.0]),
      ...                              -jnp.ones(2), one[:1], one[:1])
      >>> y.ravel().tolist()                          # dt * x per head
      [0.5, 2.0]
    """
    return dg.step(state, *_as_gla(x, dt, A, B, C), scale=scale)


def recurrent(x, dt, A, B, C, *, scale=1.0, **options):
    """``lax.scan`` of :func:`step` with the masks (keywords ``state`` (required),
    ``reset_state``, ``valid``, ``resets``). Returns ``(y, final_state)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> x, dt, A = jnp.ones((3, 1, 1)), jnp.ones((3, 1)), jnp.log(jnp.array([0.5]))
      >>> y, H = OPERATORS["ssd"].recurrent(x, dt, A, x, x, state=jnp.zeros((1, 1, 1)))
      >>> H.ravel().tolist()                          # 1/4 + 1/2 + 1
      [1.75]
    """
    return dg.recurrent(*_as_gla(x, dt, A, B, C), scale=scale, **options)


def chunk(x, dt, A, B, C, *, scale=1.0, **options):
    """The chunkwise form (Mamba-2's SSD algorithm), equal to :func:`recurrent` (keywords
    as :func:`recurrent` and ``chunk=64``). Returns ``(y, final_state)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> x, Bm, Cm = jax.random.normal(jax.random.key(0), (3, 10, 4, 2))  # (T, h, p)
      >>> dt = jax.nn.softplus(jax.random.normal(jax.random.key(1), (10, 4)))
      >>> args = (x, dt, -jnp.arange(1.0, 5.0), Bm[:, :2], Cm[:, :2])        # 2 groups
      >>> y, H = OPERATORS["ssd"].chunk(*args, state=jnp.zeros((4, 2, 2)), chunk=4)
      >>> y2, H2 = OPERATORS["ssd"].recurrent(*args, state=jnp.zeros((4, 2, 2)))
      >>> bool(jnp.allclose(y, y2, atol=1e-5)), bool(jnp.allclose(H, H2, atol=1e-5))
      (True, True)
    """
    return dg.chunk(*_as_gla(x, dt, A, B, C), scale=scale, **options)

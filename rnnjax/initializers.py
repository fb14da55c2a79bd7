"""Weight initialisers for recurrent cells.

Every initialiser has the signature of :mod:`jax.nn.initializers`,
``init(key, shape, dtype) -> array``, and a cell field accepts either one of the
names in :data:`KERNEL_INITIALIZERS` / :data:`RECURRENT_INITIALIZERS` or such a
callable, so a cell stays hashable (a valid static argument of ``jit``).

Fused gate matrices are laid out ``(fan_in, G * H)``: ``G`` gate blocks of ``H``
columns side by side. Recurrent initialisers are applied **per gate block**, so an
orthogonal LSTM recurrent matrix is four orthogonal ``H x H`` blocks, not one
``H x 4H`` semi-orthogonal matrix.

References:
  Saxe, McClelland & Ganguli (2014). Exact solutions to the nonlinear dynamics of
  learning in deep linear neural networks. (orthogonal initialisation)
  Glorot & Bengio (2010). Understanding the difficulty of training deep feedforward
  neural networks.
  Jozefowicz, Zaremba & Sutskever (2015). An empirical exploration of recurrent
  network architectures. (forget-gate bias 1)
  Tallec & Ollivier (2018). Can recurrent neural networks warp time? (chrono)
"""

from __future__ import annotations

from typing import Callable, Union

import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, tuple, jnp.dtype], jax.Array]
InitSpec = Union[str, Initializer]

__all__ = [
    "glorot_uniform",
    "torch_uniform",
    "orthogonal",
    "gaussian",
    "chrono_bias",
    "resolve",
    "per_gate",
    "KERNEL_INITIALIZERS",
    "RECURRENT_INITIALIZERS",
]


def glorot_uniform(key, shape, dtype=jnp.float32):
    """Glorot/Xavier uniform over the whole ``(fan_in, fan_out)`` matrix.

    Example:
      >>> import jax
      >>> from rnnjax.initializers import glorot_uniform
      >>> w = glorot_uniform(jax.random.key(0), (3, 5))
      >>> w.shape, bool((abs(w) <= (6 / 8) ** 0.5).all())
      ((3, 5), True)
    """
    return jax.nn.initializers.glorot_uniform()(key, shape, dtype)


def torch_uniform(key, shape, dtype=jnp.float32):
    """PyTorch's RNN default: ``U(-1/sqrt(H), 1/sqrt(H))`` with ``H = shape[-1]``.

    Applied per gate block (see :func:`per_gate`), ``shape[-1]`` is the hidden size.

    Example:
      >>> import jax
      >>> from rnnjax.initializers import torch_uniform
      >>> w = torch_uniform(jax.random.key(0), (3, 16))
      >>> bool((abs(w) <= 0.25).all())                      # U(-1/sqrt(16), 1/sqrt(16))
      True
    """
    bound = 1.0 / jnp.sqrt(shape[-1])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def orthogonal(key, shape, dtype=jnp.float32):
    """A (semi-)orthogonal matrix (Saxe et al. 2014); square blocks are orthogonal.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.initializers import orthogonal
      >>> w = orthogonal(jax.random.key(0), (4, 4))
      >>> bool(jnp.allclose(w @ w.T, jnp.eye(4), atol=1e-5))
      True
    """
    return jax.nn.initializers.orthogonal()(key, shape, dtype)


def gaussian(key, shape, dtype=jnp.float32):
    """``N(0, 1/fan_in)``: the Gaussian recurrent initialisation of the early RNN papers.

    Example:
      >>> import jax
      >>> from rnnjax.initializers import gaussian
      >>> w = gaussian(jax.random.key(0), (400, 400))
      >>> round(float(w.std() * 20), 1)                     # std 1/sqrt(fan_in)
      1.0
    """
    return jax.random.normal(key, shape, dtype) / jnp.sqrt(shape[0]).astype(dtype)


KERNEL_INITIALIZERS = {
    "glorot_uniform": glorot_uniform,
    "uniform": torch_uniform,
    "orthogonal": orthogonal,
    "gaussian": gaussian,
}
RECURRENT_INITIALIZERS = dict(KERNEL_INITIALIZERS)


def resolve(spec: InitSpec, table: dict, name: str) -> Initializer:
    """Turn a cell's init field (a name or a callable) into a callable.

    Raises:
      ValueError: ``spec`` is a string not in ``table``, or neither a string nor callable.

    Example:
      >>> from rnnjax import initializers
      >>> initializers.resolve("orthogonal", initializers.RECURRENT_INITIALIZERS, "recurrent_init")
      <function orthogonal at ...>
    """
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec in table:
        return table[spec]
    raise ValueError(
        f"{name} must be one of {sorted(table)} or a callable (key, shape, dtype) -> array; "
        f"got {spec!r}"
    )


def per_gate(init: Initializer, key, fan_in: int, hidden: int, gates: int, dtype):
    """Initialise a fused ``(fan_in, gates * hidden)`` matrix one gate block at a time.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.initializers import orthogonal, per_gate
      >>> w = per_gate(orthogonal, jax.random.key(0), 4, 4, 3, jnp.float32)   # (H, 3H)
      >>> w.shape, bool(jnp.allclose(w[:, 4:8] @ w[:, 4:8].T, jnp.eye(4), atol=1e-5))
      ((4, 12), True)
    """
    keys = jax.random.split(key, gates)
    return jnp.concatenate([init(k, (fan_in, hidden), dtype) for k in keys], axis=1)


def chrono_bias(key, hidden: int, t_max: float, dtype=jnp.float32):
    """Chrono initialisation of a gate bias (Tallec & Ollivier 2018).

    ``b ~ log(U(1, t_max - 1))``: a unit's characteristic forgetting time is spread
    over ``[1, t_max]``. The LSTM uses ``b_f = b`` and ``b_i = -b``; the GRU uses it for
    its keep (update) gate ``z``.

    Args:
      key: PRNG key.
      hidden: number of units ``H``.
      t_max: the longest dependency expected, in steps; must be > 2.

    Returns:
      An array of shape ``(H,)``.

    Example:
      >>> import jax
      >>> from rnnjax.initializers import chrono_bias
      >>> b = chrono_bias(jax.random.key(0), 4, t_max=100.0)     # (H,)
      >>> b.shape, bool((b >= 0).all()), bool((b <= jax.numpy.log(99.0)).all())
      ((4,), True, True)
    """
    if not t_max > 2:
        raise ValueError(f"chrono t_max must be > 2 time steps; got {t_max!r}")
    u = jax.random.uniform(key, (hidden,), jnp.float32, 1.0, t_max - 1.0)
    return jnp.log(u).astype(dtype)

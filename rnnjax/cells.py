"""Functional recurrent cells: one time step of one example.

A cell is a frozen dataclass of hyperparameters (hashable, so it can be a static
argument of ``jit``); its parameters live outside it in a plain ``dict`` of arrays.
Cells are written for ONE example; batch them with :func:`jax.vmap` (or use
:func:`rnnjax.unroll_batch`).

Every cell splits its step into the part that depends only on the input and the part
that recurs::

    cell.step(params, state, x) == cell.recur(params, state, cell.project(params, x))

so the sequence driver can compute ``project`` for all time steps at once, or inside
the loop, whichever is faster on the backend.

Shapes: ``I`` input size, ``H`` hidden size, ``P`` LSTM projection size, ``G`` number of
gates. Fused weights are ``(fan_in, G * H)`` (gate blocks side by side) so that
``x @ w_ih`` is one matrix product for all gates.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnnjax import initializers as inits

__all__ = [
    "SimpleRNN",
    "SimpleRNNState",
    "LSTM",
    "LSTMState",
    "GRU",
    "GRUState",
]


class SimpleRNNState(NamedTuple):
    """State of :class:`SimpleRNN`: the hidden vector ``h`` of shape ``(H,)``."""

    h: jax.Array


class LSTMState(NamedTuple):
    """State of :class:`LSTM`: output ``h`` of shape ``(P or H,)``, cell ``c`` of shape ``(H,)``."""

    h: jax.Array
    c: jax.Array


class GRUState(NamedTuple):
    """State of :class:`GRU`: the hidden vector ``h`` of shape ``(H,)``."""

    h: jax.Array


def _lead(b: jax.Array, ndim: int) -> jax.Array:
    """``b`` with leading unit axes up to ``ndim`` (explicit broadcasting: rank promotion
    may be set to raise)."""
    return b.reshape((1,) * (ndim - b.ndim) + b.shape)


def _check_size(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")


def _check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1); got {value!r}")


@dataclasses.dataclass(frozen=True)
class _Cell:
    """Shared fields and checks of the gated and plain cells."""

    input_size: int
    hidden_size: int
    kernel_init: inits.InitSpec = "glorot_uniform"
    recurrent_init: inits.InitSpec = "orthogonal"
    param_dtype: Any = jnp.float32

    gates = 1  # number of fused gate blocks; a class attribute, not a field

    def __post_init__(self):
        _check_size("input_size", self.input_size)
        _check_size("hidden_size", self.hidden_size)
        inits.resolve(self.kernel_init, inits.KERNEL_INITIALIZERS, "kernel_init")
        inits.resolve(self.recurrent_init, inits.RECURRENT_INITIALIZERS, "recurrent_init")

    @property
    def output_size(self) -> int:
        """Size of the output ``y`` of one step."""
        return self.hidden_size

    @property
    def state_size(self) -> int:
        """Size of the recurrent vector ``h`` (the ``fan_in`` of ``w_hh``)."""
        return self.hidden_size

    def _init_weights(self, key) -> dict:
        k_ih, k_hh = jax.random.split(key)
        kernel = inits.resolve(self.kernel_init, inits.KERNEL_INITIALIZERS, "kernel_init")
        recurrent = inits.resolve(
            self.recurrent_init, inits.RECURRENT_INITIALIZERS, "recurrent_init"
        )
        H, G, dt = self.hidden_size, self.gates, self.param_dtype
        return {
            "w_ih": inits.per_gate(kernel, k_ih, self.input_size, H, G, dt),
            "w_hh": inits.per_gate(recurrent, k_hh, self.state_size, H, G, dt),
            "b": jnp.zeros((G * H,), dt),
        }

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """The input part of a step: ``x @ w_ih + b``, shape ``(G * H,)`` (or ``(..., G * H)``)."""
        y = x @ params["w_ih"]
        return y + _lead(params["b"], y.ndim)

    def step(self, params: dict, state, x: jax.Array):
        """One time step: ``(state, x) -> (state', y)``. ``x``: ``(I,)``, ``y``: ``(output_size,)``."""
        return self.recur(params, state, self.project(params, x))


@dataclasses.dataclass(frozen=True)
class SimpleRNN(_Cell):
    r"""Elman recurrent cell (``torch.nn.RNN``).

    .. math::

        h_t = \phi(W_{ih}^\top x_t + W_{hh}^\top h_{t-1} + b), \qquad y_t = h_t

    with :math:`\phi` = ``tanh`` or ``relu``.

    Params: ``w_ih`` ``(I, H)``, ``w_hh`` ``(H, H)``, ``b`` ``(H,)`` (PyTorch's
    ``bias_ih + bias_hh``). State: :class:`SimpleRNNState` ``(h,)``.

    Args:
      input_size: ``I``.
      hidden_size: ``H``.
      nonlinearity: ``"tanh"`` (default) or ``"relu"``.
      kernel_init: input-weight initialiser, a name from
        :data:`rnnjax.initializers.KERNEL_INITIALIZERS` or a callable.
      recurrent_init: recurrent-weight initialiser (default orthogonal).
      param_dtype: dtype of the parameters.

    Example:
      >>> import jax, rnnjax as rj
      >>> cell = rj.SimpleRNN(input_size=3, hidden_size=4)
      >>> params = cell.init(jax.random.key(0))
      >>> state, y = cell.step(params, cell.initial_state(), jax.numpy.ones(3))
      >>> y.shape
      (4,)
    """

    nonlinearity: str = "tanh"

    def __post_init__(self):
        super().__post_init__()
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {self.nonlinearity!r}")

    def init(self, key) -> dict:
        """Parameters ``{"w_ih": (I, H), "w_hh": (H, H), "b": (H,)}``."""
        return self._init_weights(key)

    def initial_state(self, dtype=jnp.float32) -> SimpleRNNState:
        """The zero state."""
        return SimpleRNNState(h=jnp.zeros((self.hidden_size,), dtype))

    def recur(self, params, state: SimpleRNNState, xp):
        """The recurrent part of a step, given ``xp = project(params, x)``."""
        pre = xp + state.h @ params["w_hh"]
        h = jnp.tanh(pre) if self.nonlinearity == "tanh" else jax.nn.relu(pre)
        return SimpleRNNState(h=h), h


@dataclasses.dataclass(frozen=True)
class LSTM(_Cell):
    r"""Long short-term memory cell (``torch.nn.LSTM``), gate order (i, f, g, o).

    .. math::

        \begin{aligned}
        i_t &= \sigma(W_{ii}^\top x_t + W_{hi}^\top h_{t-1} + b_i) \\
        f_t &= \sigma(W_{if}^\top x_t + W_{hf}^\top h_{t-1} + b_f) \\
        g_t &= \tanh(W_{ig}^\top x_t + W_{hg}^\top h_{t-1} + b_g) \\
        o_t &= \sigma(W_{io}^\top x_t + W_{ho}^\top h_{t-1} + b_o) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t &= o_t \odot \tanh(c_t) \quad (\text{or } W_{hr}^\top (o_t \odot \tanh(c_t))
              \text{ with a projection}), \qquad y_t = h_t
        \end{aligned}

    Params: ``w_ih`` ``(I, 4H)``, ``w_hh`` ``(P or H, 4H)``, ``b`` ``(4H,)`` (PyTorch's
    ``bias_ih + bias_hh``), and with ``proj_size = P > 0`` also ``w_hr`` ``(H, P)``.
    Gate blocks are ``[i | f | g | o]``, each ``H`` columns. State: :class:`LSTMState`
    ``(h, c)`` with ``h`` of size ``P`` (or ``H``) and ``c`` of size ``H``.

    Args:
      input_size: ``I``.
      hidden_size: ``H``.
      proj_size: ``P``; 0 (default) for no projection, else ``0 < P < H`` as in PyTorch.
      forget_bias: initial forget-gate bias (default 1.0, Jozefowicz et al. 2015).
      chrono_t_max: if set, chrono initialisation (Tallec & Ollivier 2018) replaces
        ``forget_bias``: ``b_f ~ log U(1, t_max - 1)`` and ``b_i = -b_f``.
      kernel_init, recurrent_init, param_dtype: as in :class:`SimpleRNN`.

    Example:
      >>> import jax, rnnjax as rj
      >>> cell = rj.LSTM(input_size=3, hidden_size=4)
      >>> params = cell.init(jax.random.key(0))
      >>> state, y = cell.step(params, cell.initial_state(), jax.numpy.ones(3))
      >>> state.c.shape
      (4,)
    """

    proj_size: int = 0
    forget_bias: float = 1.0
    chrono_t_max: Optional[float] = None

    gates = 4

    def __post_init__(self):
        super().__post_init__()
        _check_size("proj_size", self.proj_size, minimum=0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size must be smaller than hidden_size={self.hidden_size}; "
                f"got {self.proj_size}"
            )
        if self.chrono_t_max is not None and not self.chrono_t_max > 2:
            raise ValueError(f"chrono_t_max must be > 2 time steps; got {self.chrono_t_max!r}")

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    @property
    def state_size(self) -> int:
        return self.proj_size or self.hidden_size

    def init(self, key) -> dict:
        """Parameters ``{"w_ih", "w_hh", "b"}`` (and ``"w_hr"`` with a projection)."""
        k_w, k_b, k_r = jax.random.split(key, 3)
        params = self._init_weights(k_w)
        H, dt = self.hidden_size, self.param_dtype
        if self.chrono_t_max is not None:
            b_f = inits.chrono_bias(k_b, H, self.chrono_t_max, dt)
            b = params["b"].at[H : 2 * H].set(b_f).at[:H].set(-b_f)
        else:
            b = params["b"].at[H : 2 * H].set(self.forget_bias)
        params["b"] = b
        if self.proj_size:
            kernel = inits.resolve(self.kernel_init, inits.KERNEL_INITIALIZERS, "kernel_init")
            params["w_hr"] = kernel(k_r, (H, self.proj_size), dt)
        return params

    def initial_state(self, dtype=jnp.float32) -> LSTMState:
        """The zero state."""
        return LSTMState(
            h=jnp.zeros((self.state_size,), dtype), c=jnp.zeros((self.hidden_size,), dtype)
        )

    def recur(self, params, state: LSTMState, xp):
        """The recurrent part of a step, given ``xp = project(params, x)``."""
        z = xp + state.h @ params["w_hh"]
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * state.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        if self.proj_size:
            h = h @ params["w_hr"]
        return LSTMState(h=h, c=c), h


@dataclasses.dataclass(frozen=True)
class GRU(_Cell):
    r"""Gated recurrent unit, gate order (r, z, n) as in ``torch.nn.GRU``.

    With ``reset_after=True`` (default; the cuDNN / PyTorch form):

    .. math::

        \begin{aligned}
        r_t &= \sigma(W_{ir}^\top x_t + W_{hr}^\top h_{t-1} + b_r) \\
        z_t &= \sigma(W_{iz}^\top x_t + W_{hz}^\top h_{t-1} + b_z) \\
        n_t &= \tanh(W_{in}^\top x_t + b_{in} + r_t \odot (W_{hn}^\top h_{t-1} + b_{hn})) \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}, \qquad y_t = h_t
        \end{aligned}

    With ``reset_after=False`` (Cho et al. 2014) the candidate is
    :math:`n_t = \tanh(W_{in}^\top x_t + W_{hn}^\top (r_t \odot h_{t-1}) + b_n)`.

    Params: ``w_ih`` ``(I, 3H)``, ``w_hh`` ``(H, 3H)``, ``b`` ``(3H,)`` with blocks
    ``[r | z | n]``, and with ``reset_after=True`` also ``b_hn`` ``(H,)``. ``b``'s ``r``
    and ``z`` blocks are PyTorch's ``bias_ih + bias_hh``; its ``n`` block is ``b_in``.
    State: :class:`GRUState` ``(h,)``.

    Args:
      input_size: ``I``.
      hidden_size: ``H``.
      reset_after: where the reset gate acts (see above).
      chrono_t_max: if set, chrono initialisation of the keep gate:
        ``b_z ~ log U(1, t_max - 1)``.
      kernel_init, recurrent_init, param_dtype: as in :class:`SimpleRNN`.

    Example:
      >>> import jax, rnnjax as rj
      >>> cell = rj.GRU(input_size=3, hidden_size=4, reset_after=False)
      >>> params = cell.init(jax.random.key(0))
      >>> sorted(params)
      ['b', 'w_hh', 'w_ih']
    """

    reset_after: bool = True
    chrono_t_max: Optional[float] = None

    gates = 3

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.reset_after, bool):
            raise TypeError(f"reset_after must be a bool; got {self.reset_after!r}")
        if self.chrono_t_max is not None and not self.chrono_t_max > 2:
            raise ValueError(f"chrono_t_max must be > 2 time steps; got {self.chrono_t_max!r}")

    def init(self, key) -> dict:
        """Parameters ``{"w_ih", "w_hh", "b"}`` (and ``"b_hn"`` when ``reset_after``)."""
        k_w, k_b = jax.random.split(key)
        params = self._init_weights(k_w)
        H = self.hidden_size
        if self.chrono_t_max is not None:
            b_z = inits.chrono_bias(k_b, H, self.chrono_t_max, self.param_dtype)
            params["b"] = params["b"].at[H : 2 * H].set(b_z)
        if self.reset_after:
            params["b_hn"] = jnp.zeros((H,), self.param_dtype)
        return params

    def initial_state(self, dtype=jnp.float32) -> GRUState:
        """The zero state."""
        return GRUState(h=jnp.zeros((self.hidden_size,), dtype))

    def recur(self, params, state: GRUState, xp):
        """The recurrent part of a step, given ``xp = project(params, x)``."""
        H = self.hidden_size
        h = state.h
        if self.reset_after:
            hp = h @ params["w_hh"]
            r = jax.nn.sigmoid(xp[..., :H] + hp[..., :H])
            z = jax.nn.sigmoid(xp[..., H : 2 * H] + hp[..., H : 2 * H])
            n = jnp.tanh(xp[..., 2 * H :] + r * (hp[..., 2 * H :] + _lead(params["b_hn"], hp.ndim)))
        else:
            w_hh = params["w_hh"]
            rz = jax.nn.sigmoid(xp[..., : 2 * H] + h @ w_hh[:, : 2 * H])
            r, z = rz[..., :H], rz[..., H:]
            n = jnp.tanh(xp[..., 2 * H :] + (r * h) @ w_hh[:, 2 * H :])
        h = (1.0 - z) * n + z * h
        return GRUState(h=h), h

"""Flax linen modules around rnnjax's functional layers.

``rnnjax.linen.LSTM`` (and ``GRU``, ``RNN``, ``EchoState``) drops an rnnjax recurrent
network into a linen model in one line::

    state, ys = rnnjax.linen.LSTM(128, num_layers=2, bidirectional=True)(xs, length)

Each module builds the functional network of :mod:`rnnjax.layers` (a
:class:`rnnjax.Stacked` of :class:`rnnjax.Recurrent` or :class:`rnnjax.Bidirectional`
layers) and runs it with ``apply_batch``: the recurrence is a plain ``jax.lax.scan``
(no lifted ``nn.scan``), with :func:`rnnjax.unroll`'s exact length semantics
(padded outputs exactly zero, final state at the true length, padding-aware reverse).
Parameters are one plain dict per layer, ``params["layer_<l>"]``, made by
``self.param`` with the functional layer's own ``init``, so ``variables["params"]``
holds exactly what the functional network takes::

    net = module.functional(input_size)
    params = tuple(variables["params"][f"layer_{l}"] for l in range(module.num_layers))
    net.apply_batch(params, xs, length)   # == module.apply(variables, xs, length)

Dropout (between layers, on each layer's inputs, variational recurrent dropout, and
zoneout) draws from the module's ``'dropout'`` RNG stream and is off when
``deterministic=True``.

Shapes: ``B`` batch (any number of leading axes), ``T`` time, ``I`` input, ``H``
hidden.

References:
  Gal & Ghahramani (2016). A theoretically grounded application of dropout in recurrent
  neural networks.
  Zaremba, Sutskever & Vinyals (2014). Recurrent neural network regularization.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnjax import cells
from rnnjax import initializers as inits
from rnnjax import layers as rl

__all__ = ["RNN", "LSTM", "GRU", "EchoState", "Recurrent", "build_network"]

_RATES = ("dropout", "input_dropout", "recurrent_dropout", "zoneout")


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool; got {value!r}")


def _merged_size(merge, out_size: int, dtype) -> int:
    """Feature size of ``merge(ys_forward, ys_backward)`` for per-direction size ``out_size``."""
    if merge == "concat":
        return 2 * out_size
    if merge in ("sum", "mean"):
        return out_size
    y = jax.ShapeDtypeStruct((1, out_size), dtype)
    shape = jax.eval_shape(merge, y, y).shape
    if len(shape) != 2 or shape[0] != 1:
        raise ValueError(
            f"merge must map two (T, {out_size}) arrays to a (T, F) array; got output "
            f"shape {shape} for T=1"
        )
    return shape[1]


def build_network(
    make_cell: Callable[[int], Any],
    input_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    merge: Union[str, Callable] = "concat",
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    zoneout: float = 0.0,
    dtype=jnp.float32,
    config=None,
) -> rl.Stacked:
    """The functional network behind the linen and NNX modules.

    Args:
      make_cell: ``input_size -> cell``, e.g. ``lambda i: rnnjax.LSTM(i, 128)``.
      input_size: ``I`` of the first layer.
      num_layers: number of stacked layers.
      bidirectional: each layer is a :class:`rnnjax.Bidirectional`.
      merge: how the two directions are merged (see :class:`rnnjax.Bidirectional`).
      dropout: dropout rate on the outputs of every layer but the last.
      input_dropout: variational dropout rate on each layer's inputs.
      recurrent_dropout: variational dropout rate on the fed-back hidden vector.
      zoneout: zoneout probability of every state unit.
      dtype: dtype used to trace a callable ``merge`` for its output size.
      config: the :class:`rnnjax.ScanConfig` of every layer (default ``ScanConfig()``).

    Returns:
      A :class:`rnnjax.Stacked` of ``num_layers`` :class:`rnnjax.Recurrent` or
      :class:`rnnjax.Bidirectional` layers.

    Example:
      >>> import rnnjax as rj
      >>> from rnnjax.linen import build_network
      >>> net = build_network(lambda i: rj.GRU(i, 4), 3, num_layers=2, bidirectional=True)
      >>> type(net).__name__, len(net.layers), net.output_size
      ('Stacked', 2, 8)
    """
    _check_int("num_layers", num_layers, 1)
    _check_bool("bidirectional", bidirectional)
    layers, size = [], input_size
    for _ in range(num_layers):
        layer = rl.Recurrent(
            make_cell(size),
            input_dropout=input_dropout,
            recurrent_dropout=recurrent_dropout,
            zoneout=zoneout,
            config=config,
        )
        size = layer.output_size
        if bidirectional:
            layer = rl.Bidirectional(layer, merge=merge)
            size = _merged_size(merge, size, dtype)
        layers.append(layer)
    return rl.Stacked(layers, dropout=dropout)


def broadcast_state(state, batch_shape) -> Any:
    """Broadcast every leaf of an unbatched state to leading axes ``batch_shape``."""
    batch_shape = tuple(batch_shape)
    return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, batch_shape + a.shape), state)


def stochastic(module) -> bool:
    """Whether any dropout or zoneout rate of ``module`` is non-zero."""
    return any(getattr(module, r) for r in _RATES)


class _Base(nn.Module):
    """Shared fields and ``__call__`` of the recurrent modules."""

    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    merge: Union[str, Callable] = "concat"
    dropout: float = 0.0
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    time_major: bool = False
    deterministic: Optional[bool] = None
    param_dtype: Any = jnp.float32
    dtype: Any = None
    config: Any = None

    @nn.nowrap
    def make_cell(self, input_size: int):  # pragma: no cover - overridden
        raise NotImplementedError

    @nn.nowrap
    def _declare(self, net: rl.Stacked) -> tuple:
        """Declare the per-layer variables; returns the functional network's params."""
        return tuple(self.param(f"layer_{i}", layer.init) for i, layer in enumerate(net.layers))

    @nn.nowrap
    def functional(self, input_size: int) -> rl.Stacked:
        """The functional :class:`rnnjax.Stacked` network this module runs for inputs of
        size ``input_size``; its params are ``tuple(params[f"layer_{l}"] ...)``."""
        return build_network(
            self.make_cell,
            input_size,
            self.num_layers,
            self.bidirectional,
            self.merge,
            self.dropout,
            self.input_dropout,
            self.recurrent_dropout,
            self.zoneout,
            self.param_dtype,
            self.config,
        )

    @nn.nowrap
    def initial_state(self, batch_shape=(), dtype=None):
        """The zero state for a batch of shape ``batch_shape``: a tuple with one entry per
        layer (the cell's state, or a :class:`rnnjax.BidirectionalState`), each leaf of
        shape ``(*B, size)``. Needs neither a key nor an input."""
        # the state does not depend on the input size: build the network for size 1
        return broadcast_state(self.functional(1).initial_state(dtype), batch_shape)

    @nn.compact
    def __call__(
        self,
        xs: jax.Array,
        length: Optional[jax.Array] = None,
        state: Any = None,
        *,
        resets: Optional[jax.Array] = None,
        deterministic: Optional[bool] = None,
    ):
        """Run the network over a batch of sequences.

        Args:
          xs: ``(*B, T, I)``, or ``(T, *B, I)`` with ``time_major=True``.
          length: optional integers of shape ``B``: the true lengths; later steps are
            padding and never change an output, state or gradient.
          state: optional initial state shaped like :meth:`initial_state` ``(B)``.
          resets: optional bool segment starts laid out like ``xs`` without the feature
            axis (see :func:`rnnjax.unroll`).
          deterministic: ``True`` turns dropout off (zoneout takes its expectation).
            Give it here or as the module field, exactly one of the two (Flax's
            ``nn.merge_param`` rule, as for ``nn.Dropout``); needed only when a dropout or
            zoneout rate is set. With ``False`` the masks come from the ``'dropout'`` RNG
            stream (``apply(..., rngs={"dropout": key})``).

        Returns:
          ``(state, ys)``: the per-layer final states (a tuple of ``num_layers``) and the
          last layer's outputs ``(*B, T, F)`` (or ``(T, *B, F)``), exactly zero at
          padded steps.
        """
        if not hasattr(xs, "shape") or not hasattr(xs, "ndim") or xs.ndim < 3:
            raise ValueError(
                "xs must be an array of shape (*B, T, I) (or (T, *B, I) with "
                f"time_major=True) with at least one batch axis; got "
                f"{getattr(xs, 'shape', type(xs).__name__)}"
            )
        net = self.functional(int(xs.shape[-1]))
        params = self._declare(net)
        key = None
        if stochastic(self):
            if not nn.merge_param("deterministic", self.deterministic, deterministic):
                key = self.make_rng("dropout")
        return net.apply_batch(
            params, xs, length, state, resets=resets, key=key, time_major=self.time_major
        )


class _Recurrent(_Base):
    """The trainable cells: initialiser fields and the cell's keyword arguments."""

    kernel_init: inits.InitSpec = "glorot_uniform"
    recurrent_init: inits.InitSpec = "orthogonal"

    @nn.nowrap
    def _cell_kwargs(self) -> dict:
        return dict(
            kernel_init=self.kernel_init,
            recurrent_init=self.recurrent_init,
            param_dtype=self.param_dtype,
            dtype=self.dtype,
        )


class RNN(_Recurrent):
    """Elman RNN layers (:class:`rnnjax.SimpleRNN`) as a linen module.

    Attributes:
      hidden_size: ``H``.
      num_layers: number of stacked layers (default 1).
      bidirectional: run every layer in both directions (padding-aware).
      merge: ``"concat"`` (default), ``"sum"``, ``"mean"`` or a callable
        ``(ys_forward, ys_backward) -> ys`` merging the two directions.
      dropout: dropout rate between layers.
      input_dropout: variational dropout rate on each layer's inputs.
      recurrent_dropout: variational (one mask per sequence) dropout rate on the
        fed-back hidden vector.
      zoneout: zoneout probability (expectation when deterministic).
      time_major: inputs and outputs are ``(T, *B, F)``.
      deterministic: default of the ``__call__`` argument.
      kernel_init, recurrent_init, param_dtype, dtype: passed to the cells (``dtype``:
        compute dtype of the matrix products; the state stays float32).
      config: a :class:`rnnjax.ScanConfig` for every layer.
      nonlinearity: ``"tanh"`` or ``"relu"``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax.linen as rl
      >>> rnn = rl.RNN(4, num_layers=2)
      >>> xs = jnp.ones((3, 5, 2))
      >>> variables = rnn.init(jax.random.key(0), xs)
      >>> state, ys = rnn.apply(variables, xs, jnp.array([5, 2, 0]))
      >>> ys.shape
      (3, 5, 4)
    """

    nonlinearity: str = "tanh"

    @nn.nowrap
    def make_cell(self, input_size: int):
        """The cell of a layer with ``input_size`` inputs."""
        return cells.SimpleRNN(
            input_size, self.hidden_size, nonlinearity=self.nonlinearity, **self._cell_kwargs()
        )


class LSTM(_Recurrent):
    """LSTM layers (:class:`rnnjax.LSTM`, gate order (i, f, g, o)) as a linen module.

    Attributes: those of :class:`RNN` (but ``nonlinearity``), and

      proj_size: LSTM projection size ``P`` (0: none).
      forget_bias: initial forget-gate bias (default 1.0).
      chrono_t_max: chrono initialisation of the gate biases, if set.

    Example:
      A 2-layer bidirectional LSTM over padded sequences:

      >>> import jax, jax.numpy as jnp, rnnjax.linen as rl
      >>> lstm = rl.LSTM(8, num_layers=2, bidirectional=True, dropout=0.1)
      >>> xs, length = jnp.ones((2, 6, 3)), jnp.array([6, 4])
      >>> variables = lstm.init(jax.random.key(0), xs, length, deterministic=True)
      >>> (s0, s1), ys = lstm.apply(variables, xs, length, deterministic=False,
      ...                           rngs={"dropout": jax.random.key(1)})
      >>> ys.shape, s1.backward.c.shape
      ((2, 6, 16), (2, 8))
    """

    proj_size: int = 0
    forget_bias: float = 1.0
    chrono_t_max: Optional[float] = None

    @nn.nowrap
    def make_cell(self, input_size: int):
        """The cell of a layer with ``input_size`` inputs."""
        return cells.LSTM(
            input_size,
            self.hidden_size,
            proj_size=self.proj_size,
            forget_bias=self.forget_bias,
            chrono_t_max=self.chrono_t_max,
            **self._cell_kwargs(),
        )


class GRU(_Recurrent):
    """GRU layers (:class:`rnnjax.GRU`, gate order (r, z, n)) as a linen module.

    Attributes: those of :class:`RNN` (but ``nonlinearity``), and

      reset_after: ``True`` (default, cuDNN/PyTorch/Flax form) or ``False`` (Cho et al.).
      chrono_t_max: chrono initialisation of the update-gate bias, if set.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax.linen as rl
      >>> gru = rl.GRU(4, time_major=True)
      >>> xs = jnp.ones((7, 2, 3))                         # (T, B, I)
      >>> variables = gru.init(jax.random.key(0), xs)
      >>> (state,), ys = gru.apply(variables, xs)
      >>> ys.shape, state.h.shape
      ((7, 2, 4), (2, 4))
    """

    reset_after: bool = True
    chrono_t_max: Optional[float] = None

    @nn.nowrap
    def make_cell(self, input_size: int):
        """The cell of a layer with ``input_size`` inputs."""
        return cells.GRU(
            input_size,
            self.hidden_size,
            reset_after=self.reset_after,
            chrono_t_max=self.chrono_t_max,
            **self._cell_kwargs(),
        )


class EchoState(_Base):
    """Echo state reservoir layers (:class:`rnnjax.esn.EchoState`) as a linen module.

    The reservoir weights are fixed: they live in the ``'reservoir'`` variable
    collection (``variables["reservoir"]["layer_<l>"]``, one plain dict per layer, made
    by the cell's own ``init`` from the ``'params'`` RNG stream), not in ``'params'``, so
    a train step that differentiates ``variables["params"]`` trains only what follows
    the reservoir (a readout such as ``nn.Dense``), and a checkpoint of ``variables``
    keeps the reservoir. The module outputs the reservoir states ``(*B, T, N)``; fit a
    ridge readout on them with :mod:`rnnjax.esn` or train a dense one with optax.

    Attributes:
      hidden_size: ``N``, the reservoir size.
      num_layers, bidirectional, merge, dropout, input_dropout, recurrent_dropout,
        zoneout, time_major, deterministic, param_dtype: as in :class:`RNN`.
      spectral_radius, leak_rate, input_scaling, bias_scaling, density, input_density,
        activation: the reservoir's hyperparameters (see :class:`rnnjax.esn.EchoState`).

    References:
      Jaeger (2001). The "echo state" approach to analysing and training recurrent
      neural networks.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax.linen as rl
      >>> esn = rl.EchoState(20, leak_rate=0.3)
      >>> xs = jnp.ones((2, 8, 1))
      >>> variables = esn.init(jax.random.key(0), xs)
      >>> sorted(variables), sorted(variables["reservoir"]["layer_0"])
      (['reservoir'], ['b', 'w', 'w_fb', 'w_in'])
      >>> (state,), hs = esn.apply(variables, xs, jnp.array([8, 5]))
      >>> hs.shape
      (2, 8, 20)
    """

    spectral_radius: Optional[float] = 0.95
    leak_rate: float = 1.0
    input_scaling: float = 1.0
    bias_scaling: float = 0.0
    density: float = 0.1
    input_density: float = 1.0
    activation: str = "tanh"

    @nn.nowrap
    def make_cell(self, input_size: int):
        """The reservoir of a layer with ``input_size`` inputs."""
        from rnnjax.esn import EchoState as _EchoStateCell

        return _EchoStateCell(
            input_size,
            self.hidden_size,
            spectral_radius=self.spectral_radius,
            leak_rate=self.leak_rate,
            input_scaling=self.input_scaling,
            bias_scaling=self.bias_scaling,
            density=self.density,
            input_density=self.input_density,
            activation=self.activation,
            param_dtype=self.param_dtype,
        )

    @nn.nowrap
    def _declare(self, net: rl.Stacked) -> tuple:
        return tuple(
            self.variable(
                "reservoir", f"layer_{i}", lambda l=layer: l.init(self.make_rng("params"))
            ).value
            for i, layer in enumerate(net.layers)
        )


class Recurrent(_Recurrent):
    """Layers of any rnnjax cell class as a linen module (a new cell needs no new module).

    The attributes are those of :class:`RNN` (but ``nonlinearity``), and:

    Attributes:
      cell: the cell class, called as
        ``cell(input_size, hidden_size, **options, kernel_init=..., recurrent_init=...,
        param_dtype=..., dtype=...)``, e.g. :class:`rnnjax.MinGRU`,
        :class:`rnnjax.MinLSTM`, :class:`rnnjax.LRU`.
      options: the cell's other hyperparameters as ``(name, value)`` pairs (hashable).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj, rnnjax.linen as rl
      >>> net = rl.Recurrent(8, cell=rj.MinGRU, num_layers=2,
      ...                    config=rj.ScanConfig(method="parallel"))
      >>> xs = jnp.ones((2, 5, 3))
      >>> variables = net.init(jax.random.key(0), xs)
      >>> _, ys = net.apply(variables, xs, jnp.array([5, 2]))
      >>> ys.shape
      (2, 5, 8)
    """

    cell: Any = None
    options: tuple = ()

    @nn.nowrap
    def make_cell(self, input_size: int):
        """The cell of a layer with ``input_size`` inputs."""
        if not callable(self.cell):
            raise TypeError(
                f"cell must be an rnnjax cell class (e.g. rnnjax.MinGRU); got {self.cell!r}"
            )
        # initialisers the cell class does not declare (MinGRU has no recurrent weights,
        # the LRU draws its own) are left out; set to another value they are an error
        names = {f.name for f in dataclasses.fields(self.cell)}
        kw = self._cell_kwargs()
        for k in [k for k in kw if k not in names]:
            if kw.pop(k) != getattr(_Recurrent, k):
                raise ValueError(f"{k} is not a field of {self.cell.__name__}; leave it unset")
        return self.cell(input_size, self.hidden_size, **dict(self.options), **kw)

"""Flax linen modules around rnnjax's functional layers.

:class:`Recurrent` runs any rnnjax cell, given as an instance, in a linen model (as
Flax's ``nn.RNN(cell)``); ``LSTM``, ``GRU``, ``RNN`` and ``EchoState`` are thin
factories over it, so that a network is one line::

    state, ys = rnnjax.linen.LSTM(128, num_layers=2, bidirectional=True)(xs, length)
    state, ys = rnnjax.linen.Recurrent(rnnjax.MinGRU(64, 128), num_layers=2)(xs, length)

:class:`rnnjax.nnx.Recurrent` takes the same cell with the same options. The module
builds the functional network of :mod:`rnnjax.layers` (a :class:`rnnjax.Stacked` of
:class:`rnnjax.Recurrent` or :class:`rnnjax.Bidirectional` layers) and runs it with
``apply_batch``: the recurrence is a plain ``jax.lax.scan`` (no lifted ``nn.scan``),
with :func:`rnnjax.unroll`'s exact length semantics (padded outputs exactly zero, final
state at the true length, padding-aware reverse). Parameters are one plain dict per
layer, ``params["layer_<l>"]``, made by ``self.param`` with the functional layer's own
``init``, so ``variables["params"]`` holds exactly what the functional network takes::

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
import numbers
import warnings
from typing import Any, Callable, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnjax import _flax_common as common
from rnnjax import cells, checks
from rnnjax import layers as rl
from rnnjax._flax_common import broadcast_state, build_network, stochastic
from rnnjax.reservoir import EchoState as _EchoStateCell

__all__ = ["Recurrent", "RNN", "LSTM", "GRU", "EchoState", "build_network"]

# the fields, in order, of the deprecated Recurrent(hidden_size, ..., cell=CellClass)
_OLD_FIELDS = (
    "hidden_size",
    "num_layers",
    "bidirectional",
    "merge",
    "dropout",
    "input_dropout",
    "recurrent_dropout",
    "zoneout",
    "time_major",
    "deterministic",
    "param_dtype",
    "dtype",
    "config",
    "kernel_init",
    "recurrent_init",
    "cell",
    "options",
)
_OLD_CELL_DEFAULTS = {
    "kernel_init": "glorot_uniform",
    "recurrent_init": "orthogonal",
    "param_dtype": jnp.float32,
    "dtype": None,
}


def _from_cell_class(args, kwargs) -> dict:
    """The arguments of ``Recurrent(cell_instance, ...)`` for the deprecated
    ``Recurrent(hidden_size, cell=CellClass, options=..., kernel_init=..., ...)``."""
    old = dict(zip(_OLD_FIELDS, args))
    twice = sorted(set(old) & set(kwargs))
    if twice:
        raise TypeError(f"Recurrent got multiple values for {', '.join(twice)}")
    old.update(kwargs)
    cls, hidden = old.pop("cell", None), old.pop("hidden_size")
    warnings.warn(
        f"rnnjax.linen.Recurrent(hidden_size, cell=CellClass, options=...) is deprecated; "
        f"pass a cell instance: rnnjax.linen.Recurrent({getattr(cls, '__name__', 'Cell')}"
        f"(input_size, {hidden}, ...), ...) (the input size is taken from the inputs)",
        DeprecationWarning,
        stacklevel=3,
    )
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(
            f"cell must be an rnnjax cell class with hidden_size={hidden!r} (deprecated) or "
            f"a cell instance without hidden_size; got {cls!r}"
        )
    declared = {f.name for f in dataclasses.fields(cls)}
    kw = dict(old.pop("options", ()))
    # initialisers the cell class does not declare (MinGRU has no recurrent weights, the
    # LRU draws its own) are left out; set to another value they are an error
    for k, default in _OLD_CELL_DEFAULTS.items():
        value = old.pop(k, default)
        if k in declared:
            kw[k] = value
        elif value is not default and value != default:
            raise ValueError(f"{k} is not a field of {cls.__name__}; leave it unset")
    return dict(old, cell=cls(hidden, hidden, **kw))


class _AcceptsCellClass(type):
    """Turns the deprecated ``Recurrent(hidden_size, cell=CellClass, ...)`` into
    ``Recurrent(CellClass(hidden_size, hidden_size, ...), ...)``, with a warning."""

    def __call__(cls, *args, **kwargs):
        if "hidden_size" in kwargs or (args and isinstance(args[0], numbers.Integral)):
            args, kwargs = (), _from_cell_class(args, kwargs)
        return super().__call__(*args, **kwargs)


class Recurrent(nn.Module, metaclass=_AcceptsCellClass):
    __doc__ = (
        """Layers of any rnnjax cell as a linen module (a new cell needs no new module).

    The linen counterpart of :class:`rnnjax.nnx.Recurrent`, with the same cell instance
    and the same options. As Flax's linen cells, the module takes its input size from the
    inputs at ``init``: the first layer runs ``cell`` rebuilt for the feature size of
    ``xs`` (the cell itself where that is its ``input_size``).

    Attributes:"""
        + common.OPTIONS_DOC
        + """
      deterministic: default of the ``__call__`` argument.

    The deprecated ``Recurrent(hidden_size, cell=CellClass, options=...)`` (a cell class
    with its hyperparameters) still works and warns.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj, rnnjax.linen as rl
      >>> net = rl.Recurrent(rj.MinGRU(3, 8), num_layers=2,
      ...                    config=rj.ScanConfig(method="parallel"))
      >>> xs = jnp.ones((2, 5, 3))
      >>> variables = net.init(jax.random.key(0), xs)
      >>> _, ys = net.apply(variables, xs, jnp.array([5, 2]))
      >>> ys.shape
      (2, 5, 8)
    """
    )

    cell: Any
    num_layers: int = 1
    bidirectional: bool = False
    merge: Union[str, Callable] = "concat"
    dropout: float = 0.0
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    time_major: bool = False
    deterministic: Optional[bool] = None
    config: Any = None
    trainable: bool = True

    def __post_init__(self):
        common.check_options(
            self.cell, self.num_layers, self.time_major, self.deterministic, self.trainable
        )
        super().__post_init__()

    @nn.nowrap
    def functional(self, input_size: Optional[int] = None) -> rl.Stacked:
        """The functional :class:`rnnjax.Stacked` network this module runs for inputs of
        size ``input_size`` (default: the cell's); its params are
        ``tuple(params[f"layer_{l}"] ...)``."""
        return common.network(self, self.cell.input_size if input_size is None else input_size)

    @nn.nowrap
    def initial_state(self, batch_shape=(), dtype=None):
        """The zero state for a batch of shape ``batch_shape``: a tuple with one entry per
        layer (the cell's state, or a :class:`rnnjax.BidirectionalState`), each leaf of
        shape ``(*B, size)``. Needs neither a key nor an input."""
        return broadcast_state(self.functional().initial_state(dtype), batch_shape)

    @nn.nowrap
    def _collection(self) -> str:
        return "params" if self.trainable else "reservoir"

    @nn.nowrap
    def _declare(self, net: rl.Stacked) -> tuple:
        """Declare the per-layer variables; returns the functional network's params."""
        if self.trainable:
            return tuple(self.param(f"layer_{i}", l.init) for i, l in enumerate(net.layers))
        return tuple(
            self.variable(
                "reservoir", f"layer_{i}", lambda l=layer: l.init(self.make_rng("params"))
            ).value
            for i, layer in enumerate(net.layers)
        )

    @nn.nowrap
    def _check_feature_size(self, net: rl.Stacked, xs) -> None:
        """After ``init``, inputs of another feature size than the params were made for
        are a ``ValueError`` naming ``xs`` (not a shape error deep inside Flax)."""
        if not self.has_variable(self._collection(), "layer_0"):
            return
        got = self.get_variable(self._collection(), "layer_0")
        want = jax.eval_shape(net.layers[0].init, jax.random.key(0))
        shape = lambda t: jax.tree_util.tree_map(jnp.shape, t)  # noqa: E731
        if shape(got) != jax.tree_util.tree_map(lambda a: a.shape, want):
            raise ValueError(
                f"xs must have the feature size this module was initialised with; got "
                f"{checks.describe(xs)}: inputs of size {xs.shape[-1]} need layer_0 "
                f"params of shapes {shape(want)}, the module holds {shape(got)}"
            )

    @nn.compact
    @common.call_doc(
        """
        deterministic: ``True`` turns dropout off (zoneout takes its expectation). Give
          it here or as the module field, exactly one of the two (Flax's
          ``nn.merge_param`` rule, as for ``nn.Dropout``); needed only when a dropout or
          zoneout rate is set. With ``False`` the masks come from the ``'dropout'`` RNG
          stream (``apply(..., rngs={"dropout": key})``).
        """
    )
    def __call__(
        self,
        xs: jax.Array,
        length: Optional[jax.Array] = None,
        state: Any = None,
        *,
        resets: Optional[jax.Array] = None,
        deterministic: Optional[bool] = None,
    ):
        if not hasattr(xs, "shape") or not hasattr(xs, "ndim") or xs.ndim < 3:
            raise ValueError(
                "xs must be an array of shape (*B, T, I) (or (T, *B, I) with "
                f"time_major=True) with at least one batch axis; got "
                f"{getattr(xs, 'shape', type(xs).__name__)}"
            )
        net = self.functional(int(xs.shape[-1]))
        self._check_feature_size(net, xs)
        params = self._declare(net)
        key = None
        if stochastic(self):
            if not nn.merge_param("deterministic", self.deterministic, deterministic):
                key = self.make_rng("dropout")
        return net.apply_batch(
            params, xs, length, state, resets=resets, key=key, time_major=self.time_major
        )


common.show_constructor(Recurrent)


def _factory(cell_class, **defaults):
    """A thin factory over :class:`Recurrent` for ``cell_class`` (see
    :func:`rnnjax._flax_common.cell_factory`). Its modules are of a subclass of
    :class:`Recurrent` named after it, so that Flax names an unnamed one as it always
    has (``LSTM_0``) and saved variables keep their paths."""

    def wrap(stub):
        named = type(
            stub.__name__,
            (Recurrent,),
            {"__module__": __name__, "__doc__": f"The :class:`Recurrent` of {stub.__name__}."},
        )
        factory = common.cell_factory(named, cell_class, ("hidden_size",), **defaults)(stub)
        named.__qualname__ = f"{stub.__name__}.module"  # found by pickle
        factory.module = named
        return factory

    return wrap


@_factory(cells.SimpleRNN)
def RNN():
    """Elman RNN layers (:class:`rnnjax.SimpleRNN`) as a linen module.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax.linen as rl
      >>> rnn = rl.RNN(4, num_layers=2)
      >>> xs = jnp.ones((3, 5, 2))
      >>> variables = rnn.init(jax.random.key(0), xs)
      >>> state, ys = rnn.apply(variables, xs, jnp.array([5, 2, 0]))
      >>> ys.shape
      (3, 5, 4)
    """


@_factory(cells.LSTM)
def LSTM():
    """LSTM layers (:class:`rnnjax.LSTM`, gate order (i, f, g, o)) as a linen module.

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


@_factory(cells.GRU)
def GRU():
    """GRU layers (:class:`rnnjax.GRU`, gate order (r, z, n)) as a linen module.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax.linen as rl
      >>> gru = rl.GRU(4, time_major=True)
      >>> xs = jnp.ones((7, 2, 3))                         # (T, B, I)
      >>> variables = gru.init(jax.random.key(0), xs)
      >>> (state,), ys = gru.apply(variables, xs)
      >>> ys.shape, state.h.shape
      ((7, 2, 4), (2, 4))
    """


@_factory(_EchoStateCell, trainable=False)
def EchoState():
    """Echo state reservoir layers (:class:`rnnjax.EchoState`) as a linen module.

    The reservoir weights are fixed (``trainable=False``): they live in the
    ``'reservoir'`` variable collection (``variables["reservoir"]["layer_<l>"]``, one
    plain dict per layer, made by the cell's own ``init`` from the ``'params'`` RNG
    stream), not in ``'params'``, so a train step that differentiates
    ``variables["params"]`` trains only what follows the reservoir (a readout such as
    ``nn.Dense``), and a checkpoint of ``variables`` keeps the reservoir. The module
    outputs the reservoir states ``(*B, T, N)``; fit a ridge readout on them with
    :mod:`rnnjax.reservoir` or train a dense one with optax.

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

"""Flax NNX modules around rnnjax's functional layers.

:class:`Recurrent` runs any rnnjax cell, given as an instance, as an ``nnx.Module`` (as
Flax's ``nnx.RNN(cell)``); ``LSTM``, ``GRU``, ``RNN`` and ``EchoState`` are thin factories
over it. :class:`rnnjax.linen.Recurrent` takes the same cell with the same options. The
module runs the functional network of :mod:`rnnjax.layers` (a :class:`rnnjax.Stacked` of
:class:`rnnjax.Recurrent` or :class:`rnnjax.Bidirectional` layers; see
:func:`rnnjax.linen.build_network`) with ``apply_batch``: a plain ``jax.lax.scan``, with
:func:`rnnjax.unroll`'s exact length semantics. Parameters are ``nnx.Param`` variables
(:class:`Reservoir` variables where fixed), one per array, under ``layer_<l>`` in the
same nested layout as the functional layer's params (``layer_0/forward/w_ih``, ...), so
:meth:`Recurrent.layer_params` gives exactly the tuple that the functional network takes.
Initialisation draws from the ``params`` stream of an ``nnx.Rngs``; dropout from a fork
of its ``dropout`` stream (falling back to ``default``), and is on unless
``deterministic`` (``model.eval()`` / ``model.train()`` switch it, as for
``nnx.Dropout``). The modules work under ``nnx.jit`` and with ``nnx.Optimizer``.
Shapes and references: as in :mod:`rnnjax.linen`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import jax
from flax import nnx

from rnnjax import _flax_common as common
from rnnjax import cells, reservoir
from rnnjax import layers as rl

__all__ = ["Recurrent", "RNN", "LSTM", "GRU", "EchoState", "Reservoir"]


class Reservoir(nnx.Variable):
    """Fixed weights of a :class:`Recurrent` with ``trainable=False`` (an echo state
    reservoir): an ``nnx.Variable`` that is not an ``nnx.Param``, so ``nnx.grad`` and
    ``nnx.Optimizer(..., wrt=nnx.Param)`` leave it alone, while ``nnx.state`` (and a
    checkpoint of it) keeps it.

    Example:
      >>> import jax.numpy as jnp, rnnjax.nnx as rn
      >>> from flax import nnx
      >>> esn = rn.EchoState(1, 20, rngs=nnx.Rngs(0))
      >>> type(esn.layer_0["w"]).__name__, len(nnx.state(esn, nnx.Param))
      ('Reservoir', 0)
    """


common.show_constructor(Reservoir)


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


class Recurrent(nnx.Module):
    __doc__ = (
        """Layers of any rnnjax cell as an NNX module (a new cell needs no new module).

    The NNX counterpart of :class:`rnnjax.linen.Recurrent`, with the same cell instance
    and the same options. The parameters are made at construction, for the cell's own
    ``input_size``.

    Args:"""
        + common.OPTIONS_DOC
        + """
      deterministic: dropout off (default ``False``, as ``nnx.Dropout``; ``eval()``
        sets it).
      rngs: ``nnx.Rngs``; ``params`` for initialisation, ``dropout`` for dropout.

    Example:
      >>> import jax.numpy as jnp, rnnjax as rj, rnnjax.nnx as rn
      >>> from flax import nnx
      >>> net = rn.Recurrent(rj.MinGRU(3, 8), num_layers=2, rngs=nnx.Rngs(0),
      ...                    config=rj.ScanConfig(method="parallel"))
      >>> _, ys = net(jnp.ones((2, 5, 3)), jnp.array([5, 2]))
      >>> ys.shape
      (2, 5, 8)
    """
    )

    def __init__(
        self,
        cell: Any,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        merge: Union[str, Callable] = "concat",
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        time_major: bool = False,
        deterministic: bool = False,
        config: Any = None,
        trainable: bool = True,
        rngs: nnx.Rngs,
    ):
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs must be an nnx.Rngs; got {type(rngs).__name__}")
        common.check_options(cell, num_layers, time_major, deterministic, trainable)
        self.cell, self.num_layers, self.config = cell, num_layers, config
        self.bidirectional, self.merge, self.time_major = bidirectional, merge, time_major
        self.dropout, self.input_dropout = dropout, input_dropout
        self.recurrent_dropout, self.zoneout = recurrent_dropout, zoneout
        self.deterministic, self.trainable = deterministic, trainable
        self.stochastic = common.stochastic(self)
        self.net = common.network(self, cell.input_size)
        kind = nnx.Param if trainable else Reservoir
        for i, layer in enumerate(self.net.layers):
            values = layer.init(rngs.params())
            setattr(self, f"layer_{i}", nnx.data(jax.tree_util.tree_map(kind, values)))
        self.rngs = rngs["dropout"].fork() if self.stochastic else nnx.data(None)

    @property
    def input_size(self) -> int:
        """``I`` of the first layer (the cell's)."""
        return self.net.input_size

    @property
    def output_size(self):
        """The feature size of the outputs."""
        return self.net.output_size

    def functional(self) -> rl.Stacked:
        """The functional :class:`rnnjax.Stacked` network this module runs."""
        return self.net

    def layer_params(self) -> tuple:
        """The current parameters as the functional network takes them: a tuple of one
        plain dict of arrays per layer."""
        return tuple(
            jax.tree_util.tree_map(
                lambda v: v[...], getattr(self, f"layer_{i}"), is_leaf=_is_variable
            )
            for i in range(self.num_layers)
        )

    def initial_state(self, batch_shape=(), dtype=None):
        """The zero state for a batch of shape ``batch_shape`` (a tuple with one entry per
        layer, leaves ``(*B, size)``). Needs neither a key nor an input."""
        return common.broadcast_state(self.net.initial_state(dtype), batch_shape)

    def set_view(self, deterministic: Optional[bool] = None):
        """Used by ``nnx.view``: ``deterministic=True`` turns dropout off."""
        if deterministic is not None:
            self.deterministic = deterministic

    def _dropout_key(self, deterministic, rngs):
        if not self.stochastic or (self.deterministic if deterministic is None else deterministic):
            return None
        source = self.rngs if rngs is None else rngs
        if isinstance(source, nnx.Rngs):
            return source["dropout"]()
        if isinstance(source, nnx.RngStream):
            return source()
        if isinstance(source, jax.Array):
            return source
        raise TypeError(
            "rngs must be an nnx.Rngs, nnx.RngStream or a key when dropout is on; "
            f"got {type(source).__name__}"
        )

    @common.call_doc(
        """
        deterministic: overrides the module's ``deterministic`` for this call.
        rngs: overrides the module's dropout stream for this call (an ``nnx.Rngs``, an
          ``nnx.RngStream`` or a key).
        """
    )
    def __call__(self, xs, length=None, state=None, *, resets=None, deterministic=None, rngs=None):
        key = self._dropout_key(deterministic, rngs)
        return self.net.apply_batch(
            self.layer_params(),
            xs,
            length,
            state,
            resets=resets,
            key=key,
            time_major=self.time_major,
        )


common.show_constructor(Recurrent)


def _factory(cell_class, **defaults):
    """A thin factory over :class:`Recurrent` for ``cell_class`` (see
    :func:`rnnjax._flax_common.cell_factory`)."""
    return common.cell_factory(Recurrent, cell_class, ("input_size", "hidden_size"), **defaults)


@_factory(cells.SimpleRNN)
def RNN():
    """Elman RNN layers (:class:`rnnjax.SimpleRNN`) as an NNX module.

    Example:
      >>> import jax.numpy as jnp, rnnjax.nnx as rn
      >>> from flax import nnx
      >>> rnn = rn.RNN(2, 4, num_layers=2, rngs=nnx.Rngs(0))
      >>> state, ys = rnn(jnp.ones((3, 5, 2)), jnp.array([5, 2, 0]))
      >>> ys.shape
      (3, 5, 4)
    """


@_factory(cells.LSTM)
def LSTM():
    """LSTM layers (:class:`rnnjax.LSTM`, gate order (i, f, g, o)) as an NNX module.

    Example:
      A 2-layer bidirectional LSTM over padded sequences, trained one step:

      >>> import jax, jax.numpy as jnp, optax, rnnjax.nnx as rn
      >>> from flax import nnx
      >>> lstm = rn.LSTM(3, 8, num_layers=2, bidirectional=True, dropout=0.1,
      ...                rngs=nnx.Rngs(0))
      >>> xs, length = jnp.ones((2, 6, 3)), jnp.array([6, 4])
      >>> opt = nnx.Optimizer(lstm, optax.adam(1e-3), wrt=nnx.Param)
      >>> @nnx.jit
      ... def train_step(model, opt, xs, length):
      ...     loss_fn = lambda m: jnp.mean(m(xs, length)[1] ** 2)
      ...     loss, grads = nnx.value_and_grad(loss_fn)(model)
      ...     opt.update(model, grads)
      ...     return loss
      >>> loss = train_step(lstm, opt, xs, length)
      >>> lstm.eval()
      >>> (s0, s1), ys = lstm(xs, length)
      >>> ys.shape, s1.backward.c.shape
      ((2, 6, 16), (2, 8))
    """


@_factory(cells.GRU)
def GRU():
    """GRU layers (:class:`rnnjax.GRU`, gate order (r, z, n)) as an NNX module.

    Example:
      >>> import jax.numpy as jnp, rnnjax.nnx as rn
      >>> from flax import nnx
      >>> gru = rn.GRU(3, 4, time_major=True, rngs=nnx.Rngs(0))
      >>> (state,), ys = gru(jnp.ones((7, 2, 3)))          # (T, B, I)
      >>> ys.shape, state.h.shape
      ((7, 2, 4), (2, 4))
    """


@_factory(reservoir.EchoState, trainable=False)
def EchoState():
    """Echo state reservoir layers (:class:`rnnjax.EchoState`) as an NNX module.

    The reservoir weights are fixed (``trainable=False``): :class:`Reservoir` variables,
    not ``nnx.Param``, so ``nnx.grad`` and ``nnx.Optimizer(..., wrt=nnx.Param)`` train
    only what follows the reservoir (a readout such as ``nnx.Linear``), and
    ``nnx.state`` keeps the reservoir. The module outputs the reservoir states
    ``(*B, T, N)``.

    References:
      Jaeger (2001). The "echo state" approach to analysing and training recurrent
      neural networks.

    Example:
      >>> import jax.numpy as jnp, rnnjax.nnx as rn
      >>> from flax import nnx
      >>> esn = rn.EchoState(1, 20, leak_rate=0.3, rngs=nnx.Rngs(0))
      >>> (state,), hs = esn(jnp.ones((2, 8, 1)), jnp.array([8, 5]))
      >>> hs.shape, sorted(esn.layer_params()[0])
      ((2, 8, 20), ['b', 'w', 'w_fb', 'w_in'])
    """

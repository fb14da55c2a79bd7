"""Flax NNX modules around rnnjax's functional layers.

``rnnjax.nnx.LSTM`` (and ``GRU``, ``RNN``, and :class:`Recurrent` for any cell) is an
``nnx.Module`` that runs the
functional network of :mod:`rnnjax.layers` (a :class:`rnnjax.Stacked` of
:class:`rnnjax.Recurrent` or :class:`rnnjax.Bidirectional` layers; see
:func:`rnnjax.linen.build_network`) with ``apply_batch``: a plain ``jax.lax.scan``, with
:func:`rnnjax.unroll`'s exact length semantics. Parameters are ``nnx.Param`` variables,
one per array, under ``layer_<l>`` in the same nested layout as the functional layer's
params (``layer_0/forward/w_ih``, ...), so :meth:`LSTM.layer_params` gives exactly the
tuple that the functional network takes. Initialisation draws from the ``params``
stream of an ``nnx.Rngs``; dropout from a fork of its ``dropout`` stream (falling back
to ``default``), and is on unless ``deterministic`` (``model.eval()`` / ``model.train()``
switch it, as for ``nnx.Dropout``). The modules work under ``nnx.jit`` and with
``nnx.Optimizer``.

Shapes: ``B`` batch (any number of leading axes), ``T`` time, ``I`` input, ``H``
hidden.

References:
  Gal & Ghahramani (2016). A theoretically grounded application of dropout in recurrent
  neural networks.
  Zaremba, Sutskever & Vinyals (2014). Recurrent neural network regularization.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
from flax import nnx

from rnnjax import cells
from rnnjax import initializers as inits
from rnnjax import layers as rl
from rnnjax.linen import broadcast_state, build_network

__all__ = ["RNN", "LSTM", "GRU", "Recurrent"]


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


class _Recurrent(nnx.Module):
    """Shared construction and ``__call__`` of :class:`RNN`, :class:`LSTM`, :class:`GRU`."""

    def __init__(
        self,
        make_cell: Callable[[int], Any],
        input_size: int,
        num_layers: int,
        bidirectional: bool,
        merge: Union[str, Callable],
        dropout: float,
        input_dropout: float,
        recurrent_dropout: float,
        zoneout: float,
        time_major: bool,
        deterministic: bool,
        param_dtype: Any,
        rngs: nnx.Rngs,
        config: Any = None,
    ):
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs must be an nnx.Rngs; got {type(rngs).__name__}")
        if not isinstance(time_major, bool):
            raise TypeError(f"time_major must be a bool; got {time_major!r}")
        if not isinstance(deterministic, bool):
            raise TypeError(f"deterministic must be a bool; got {deterministic!r}")
        self.net = build_network(
            make_cell,
            input_size,
            num_layers,
            bidirectional,
            merge,
            dropout,
            input_dropout,
            recurrent_dropout,
            zoneout,
            param_dtype,
            config=config,
        )
        self.num_layers = num_layers
        self.time_major = time_major
        self.deterministic = deterministic
        self.stochastic = bool(dropout or input_dropout or recurrent_dropout or zoneout)
        for i, layer in enumerate(self.net.layers):
            values = layer.init(rngs.params())
            setattr(self, f"layer_{i}", nnx.data(jax.tree_util.tree_map(nnx.Param, values)))
        self.rngs = rngs["dropout"].fork() if self.stochastic else nnx.data(None)

    @property
    def input_size(self) -> int:
        return self.net.input_size

    @property
    def output_size(self):
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

    def initial_state(self, batch_shape=(), dtype=jnp.float32):
        """The zero state for a batch of shape ``batch_shape`` (a tuple with one entry per
        layer, leaves ``(*B, size)``). Needs neither a key nor an input."""
        return broadcast_state(self.net.initial_state(dtype), batch_shape)

    def set_view(self, deterministic: Optional[bool] = None):
        """Used by ``nnx.view``: ``deterministic=True`` turns dropout off."""
        if deterministic is not None:
            self.deterministic = deterministic

    def __call__(
        self,
        xs: jax.Array,
        length: Optional[jax.Array] = None,
        state: Any = None,
        *,
        deterministic: Optional[bool] = None,
        rngs: Union[nnx.Rngs, nnx.RngStream, jax.Array, None] = None,
    ):
        """Run the network over a batch of sequences.

        Args:
          xs: ``(*B, T, I)``, or ``(T, *B, I)`` with ``time_major=True``.
          length: optional integers of shape ``B``: the true lengths; later steps are
            padding and never change an output, state or gradient.
          state: optional initial state shaped like :meth:`initial_state` ``(B)``.
          deterministic: overrides the module's ``deterministic`` for this call.
          rngs: overrides the module's dropout stream for this call (an ``nnx.Rngs``, an
            ``nnx.RngStream`` or a key).

        Returns:
          ``(state, ys)``: the per-layer final states (a tuple of ``num_layers``) and the
          last layer's outputs ``(*B, T, F)`` (or ``(T, *B, F)``), exactly zero at
          padded steps.
        """
        det = self.deterministic if deterministic is None else deterministic
        key = None
        if self.stochastic and not det:
            source = self.rngs if rngs is None else rngs
            if isinstance(source, nnx.Rngs):
                key = source["dropout"]()
            elif isinstance(source, nnx.RngStream):
                key = source()
            elif isinstance(source, jax.Array):
                key = source
            else:
                raise TypeError(
                    "rngs must be an nnx.Rngs, nnx.RngStream or a key when dropout is on; "
                    f"got {type(source).__name__}"
                )
        return self.net.apply_batch(
            self.layer_params(), xs, length, state, key=key, time_major=self.time_major
        )


_SHARED_ARGS = """
    Args:
      input_size: ``I``.
      hidden_size: ``H``.
      num_layers: number of stacked layers (default 1).
      bidirectional: run every layer in both directions (padding-aware).
      merge: ``"concat"`` (default), ``"sum"``, ``"mean"`` or a callable
        ``(ys_forward, ys_backward) -> ys`` merging the two directions.
      dropout: dropout rate between layers.
      input_dropout: variational dropout rate on each layer's inputs.
      recurrent_dropout: variational (one mask per sequence) dropout rate on the
        fed-back hidden vector.
      zoneout: zoneout probability (its expectation when deterministic).
      time_major: inputs and outputs are ``(T, *B, F)``.
      deterministic: dropout off (default ``False``, as ``nnx.Dropout``; ``eval()``
        sets it).
      kernel_init, recurrent_init, param_dtype: passed to the cells.
      rngs: ``nnx.Rngs``; ``params`` for initialisation, ``dropout`` for dropout."""


class RNN(_Recurrent):
    __doc__ = (
        """Elman RNN layers (:class:`rnnjax.SimpleRNN`) as an NNX module.
"""
        + _SHARED_ARGS
        + """
      nonlinearity: ``"tanh"`` or ``"relu"``.

    Example:
      >>> import jax.numpy as jnp, rnnjax.nnx as rn
      >>> from flax import nnx
      >>> rnn = rn.RNN(2, 4, num_layers=2, rngs=nnx.Rngs(0))
      >>> state, ys = rnn(jnp.ones((3, 5, 2)), jnp.array([5, 2, 0]))
      >>> ys.shape
      (3, 5, 4)
"""
    )

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
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
        nonlinearity: str = "tanh",
        kernel_init: inits.InitSpec = "glorot_uniform",
        recurrent_init: inits.InitSpec = "orthogonal",
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        def make_cell(i):
            return cells.SimpleRNN(
                i,
                hidden_size,
                nonlinearity=nonlinearity,
                kernel_init=kernel_init,
                recurrent_init=recurrent_init,
                param_dtype=param_dtype,
            )

        super().__init__(
            make_cell,
            input_size,
            num_layers,
            bidirectional,
            merge,
            dropout,
            input_dropout,
            recurrent_dropout,
            zoneout,
            time_major,
            deterministic,
            param_dtype,
            rngs,
        )


class LSTM(_Recurrent):
    __doc__ = (
        """LSTM layers (:class:`rnnjax.LSTM`, gate order (i, f, g, o)) as an NNX module.
"""
        + _SHARED_ARGS
        + """
      proj_size: LSTM projection size ``P`` (0: none).
      forget_bias: initial forget-gate bias (default 1.0).
      chrono_t_max: chrono initialisation of the gate biases, if set.

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
    )

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
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
        proj_size: int = 0,
        forget_bias: float = 1.0,
        chrono_t_max: Optional[float] = None,
        kernel_init: inits.InitSpec = "glorot_uniform",
        recurrent_init: inits.InitSpec = "orthogonal",
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        def make_cell(i):
            return cells.LSTM(
                i,
                hidden_size,
                proj_size=proj_size,
                forget_bias=forget_bias,
                chrono_t_max=chrono_t_max,
                kernel_init=kernel_init,
                recurrent_init=recurrent_init,
                param_dtype=param_dtype,
            )

        super().__init__(
            make_cell,
            input_size,
            num_layers,
            bidirectional,
            merge,
            dropout,
            input_dropout,
            recurrent_dropout,
            zoneout,
            time_major,
            deterministic,
            param_dtype,
            rngs,
        )


class GRU(_Recurrent):
    __doc__ = (
        """GRU layers (:class:`rnnjax.GRU`, gate order (r, z, n)) as an NNX module.
"""
        + _SHARED_ARGS
        + """
      reset_after: ``True`` (default, cuDNN/PyTorch/Flax form) or ``False`` (Cho et al.).
      chrono_t_max: chrono initialisation of the update-gate bias, if set.

    Example:
      >>> import jax.numpy as jnp, rnnjax.nnx as rn
      >>> from flax import nnx
      >>> gru = rn.GRU(3, 4, time_major=True, rngs=nnx.Rngs(0))
      >>> (state,), ys = gru(jnp.ones((7, 2, 3)))          # (T, B, I)
      >>> ys.shape, state.h.shape
      ((7, 2, 4), (2, 4))
"""
    )

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
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
        reset_after: bool = True,
        chrono_t_max: Optional[float] = None,
        kernel_init: inits.InitSpec = "glorot_uniform",
        recurrent_init: inits.InitSpec = "orthogonal",
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        def make_cell(i):
            return cells.GRU(
                i,
                hidden_size,
                reset_after=reset_after,
                chrono_t_max=chrono_t_max,
                kernel_init=kernel_init,
                recurrent_init=recurrent_init,
                param_dtype=param_dtype,
            )

        super().__init__(
            make_cell,
            input_size,
            num_layers,
            bidirectional,
            merge,
            dropout,
            input_dropout,
            recurrent_dropout,
            zoneout,
            time_major,
            deterministic,
            param_dtype,
            rngs,
        )


_CELL_PROTOCOL = ("init", "step", "initial_state", "input_size", "output_size")


class Recurrent(_Recurrent):
    """Layers of any rnnjax cell as an NNX module (a new cell needs no new module): the
    NNX counterpart of :class:`rnnjax.linen.Recurrent`.

    The first layer runs ``cell`` itself; a deeper layer runs the same cell with the
    previous layer's output size as its ``input_size`` (``dataclasses.replace``).

    Args:
      cell: a cell instance, e.g. ``rnnjax.MinGRU(3, 8)``, ``rnnjax.LRU(3, 8)``,
        ``rnnjax.LSTM(3, 8, proj_size=4)`` or a user's cell following the protocol
        (``init``, ``step``, ``initial_state``, ``input_size``, ``output_size``);
        with ``num_layers > 1`` a dataclass with an ``input_size`` field.
      num_layers: number of stacked layers (default 1).
      bidirectional: run every layer in both directions (padding-aware).
      merge: how the two directions are merged (as for :class:`LSTM`).
      dropout: dropout rate between layers.
      input_dropout: variational dropout rate on each layer's inputs.
      recurrent_dropout: variational dropout rate on the fed-back hidden vector.
      zoneout: zoneout probability (its expectation when deterministic).
      time_major: inputs and outputs are ``(T, *B, F)``.
      deterministic: dropout off (``eval()`` sets it).
      config: the :class:`rnnjax.ScanConfig` of every layer (default ``ScanConfig()``).
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
        rngs: nnx.Rngs,
    ):
        if isinstance(cell, type) or not all(hasattr(cell, a) for a in _CELL_PROTOCOL):
            missing = [a for a in _CELL_PROTOCOL if not hasattr(cell, a)]
            raise TypeError(
                "cell must be a cell instance (e.g. rnnjax.MinGRU(3, 8)) with "
                f"{', '.join(_CELL_PROTOCOL)}; got {cell!r}"
                + (" (a class: instantiate it)" if isinstance(cell, type) else "")
                + (
                    f", which lacks {', '.join(missing)}"
                    if missing and not isinstance(cell, type)
                    else ""
                )
            )
        stacked = (
            isinstance(num_layers, int) and not isinstance(num_layers, bool) and num_layers > 1
        )
        if stacked and not (
            dataclasses.is_dataclass(cell)
            and "input_size" in {f.name for f in dataclasses.fields(cell)}
        ):
            raise TypeError(
                f"num_layers={num_layers} needs a dataclass cell with an input_size field (to "
                f"build the deeper layers); got {type(cell).__name__}"
            )

        def make_cell(i):
            return cell if i == cell.input_size else dataclasses.replace(cell, input_size=i)

        self.cell = cell
        super().__init__(
            make_cell,
            cell.input_size,
            num_layers,
            bidirectional,
            merge,
            dropout,
            input_dropout,
            recurrent_dropout,
            zoneout,
            time_major,
            deterministic,
            getattr(cell, "param_dtype", jnp.float32),
            rngs,
            config=config,
        )


def _show_constructor_arguments(cls) -> None:
    """``nnx.Module``'s metaclass hides ``__init__`` behind ``(*args, **kwargs)``: give the
    class the constructor's own signature so that ``help()`` and ``inspect`` show it."""
    sig = inspect.signature(cls.__init__)
    cls.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])


for _cls in (RNN, LSTM, GRU, Recurrent):
    _show_constructor_arguments(_cls)
del _cls

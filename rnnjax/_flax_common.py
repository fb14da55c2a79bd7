"""What :mod:`rnnjax.linen` and :mod:`rnnjax.nnx` share.

Both run the same functional network (:func:`build_network`) of the same cell instance
with the same options; this module holds the network, the cell check, the per-layer cell,
the zero state, the options' documentation and the thin factories (``LSTM``, ``GRU``,
``RNN``, ``EchoState``) over each framework's ``Recurrent``.
"""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
from typing import Any, Callable

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax import layers as rl

CELL_PROTOCOL = ("init", "step", "initial_state", "input_size", "output_size")
RATES = ("dropout", "input_dropout", "recurrent_dropout", "zoneout")

#: The options that ``Recurrent`` takes in both frameworks (``deterministic`` and, in NNX,
#: ``rngs`` are documented beside each module: their conventions differ).
OPTIONS_DOC = """
      cell: a cell instance, e.g. ``rnnjax.LSTM(3, 8, proj_size=4)``, ``rnnjax.MinGRU(3,
        8)``, ``rnnjax.MLSTM(3, 8, num_heads=2)`` or a user's cell following the protocol
        (``init``, ``step``, ``initial_state``, ``input_size``, ``output_size``). Layer
        ``l`` runs the cell rebuilt for its input size (``dataclasses.replace(cell,
        input_size=...)``, so ``num_layers > 1`` needs a dataclass cell with an
        ``input_size`` field); where the size is the cell's own, the cell itself.
      num_layers: number of stacked layers (default 1).
      bidirectional: run every layer in both directions (padding-aware).
      merge: ``"concat"`` (default), ``"sum"``, ``"mean"`` or a callable
        ``(ys_forward, ys_backward) -> ys`` merging the two directions.
      dropout: dropout rate on the outputs of every layer but the last.
      input_dropout: variational dropout rate on each layer's inputs.
      recurrent_dropout: variational (one mask per sequence) dropout rate on the
        fed-back hidden vector.
      zoneout: zoneout probability of every state unit (its expectation when
        deterministic).
      time_major: inputs and outputs are ``(T, *B, F)``.
      config: the :class:`rnnjax.ScanConfig` of every layer (default ``ScanConfig()``).
      trainable: ``False`` keeps the cell's parameters fixed, as an echo state reservoir's
        (linen: in the ``'reservoir'`` collection instead of ``'params'``; NNX:
        :class:`rnnjax.nnx.Reservoir` variables instead of ``nnx.Param``)."""


_CALL_DOC = """Run the network over a batch of sequences.

Args:
  xs: ``(*B, T, I)``, or ``(T, *B, I)`` with ``time_major=True``.
  length: optional integers of shape ``B``: the true lengths; later steps are padding
    and never change an output, state or gradient.
  state: optional initial state shaped like :meth:`initial_state` ``(B)``.
  resets: optional bool segment starts laid out like ``xs`` without the feature axis
    (see :func:`rnnjax.unroll`).
{extra}

Returns:
  ``(state, ys)``: the per-layer final states (a tuple of ``num_layers``) and the last
  layer's outputs ``(*B, T, F)`` (or ``(T, *B, F)``), exactly zero at padded steps.
"""


def call_doc(extra: str):
    """Decorator: ``Recurrent.__call__``'s docstring, the same in linen and NNX but for
    the ``extra`` arguments (Google-style entries)."""

    def wrap(fn):
        fn.__doc__ = _CALL_DOC.format(extra=textwrap.indent(inspect.cleandoc(extra), "  "))
        return fn

    return wrap


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
    num_layers=1,
    bidirectional=False,
    merge="concat",
    dropout=0.0,
    input_dropout=0.0,
    recurrent_dropout=0.0,
    zoneout=0.0,
    dtype=jnp.float32,
    config=None,
) -> rl.Stacked:
    """The functional network behind the linen and NNX modules.

    Args:
      make_cell: ``input_size -> cell``, e.g. ``lambda i: rnnjax.LSTM(i, 128)``.
      input_size: ``I`` of the first layer.
      num_layers: number of stacked layers (int).
      bidirectional: each layer is a :class:`rnnjax.Bidirectional` (bool).
      merge: how the two directions are merged: ``"concat"``, ``"sum"``, ``"mean"`` or a
        callable (see :class:`rnnjax.Bidirectional`).
      dropout: dropout rate on the outputs of every layer but the last (float).
      input_dropout: variational dropout rate on each layer's inputs (float).
      recurrent_dropout: variational dropout rate on the fed-back hidden vector (float).
      zoneout: zoneout probability of every state unit (float).
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
    checks.integer("num_layers", num_layers, 1)
    checks.boolean("bidirectional", bidirectional)
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
    return any(getattr(module, r) for r in RATES)


def _rebuildable(cell) -> bool:
    return dataclasses.is_dataclass(cell) and "input_size" in {
        f.name for f in dataclasses.fields(cell)
    }


def check_options(cell, num_layers, time_major, deterministic, trainable) -> None:
    """``TypeError`` unless ``cell`` is a cell instance (with ``num_layers > 1``: a
    dataclass with an ``input_size`` field) and the flags are bools (``deterministic``
    may be ``None``: linen's default)."""
    if isinstance(cell, type) or not all(hasattr(cell, a) for a in CELL_PROTOCOL):
        missing = [a for a in CELL_PROTOCOL if not hasattr(cell, a)]
        raise TypeError(
            "cell must be a cell instance (e.g. rnnjax.MinGRU(3, 8)) with "
            f"{', '.join(CELL_PROTOCOL)}; got {cell!r}"
            + (" (a class: instantiate it)" if isinstance(cell, type) else "")
            + (
                f", which lacks {', '.join(missing)}"
                if missing and not isinstance(cell, type)
                else ""
            )
        )
    stacked = isinstance(num_layers, int) and not isinstance(num_layers, bool) and num_layers > 1
    if stacked and not _rebuildable(cell):
        raise TypeError(
            f"num_layers={num_layers} needs a dataclass cell with an input_size field (to "
            f"build the deeper layers); got {type(cell).__name__}"
        )
    checks.boolean("time_major", time_major)
    checks.boolean("trainable", trainable)
    if deterministic is not None:
        checks.boolean("deterministic", deterministic)


def cell_for(cell, input_size: int):
    """``cell`` for a layer with ``input_size`` inputs: itself where that is its own input
    size, else rebuilt with ``dataclasses.replace``."""
    if input_size == cell.input_size:
        return cell
    if not _rebuildable(cell):
        raise ValueError(
            f"xs must have the input size of the cell {cell!r} ({cell.input_size}) or the "
            f"cell must be a dataclass with an input_size field to be rebuilt for "
            f"{input_size} inputs; got inputs of size {input_size}"
        )
    return dataclasses.replace(cell, input_size=input_size)


def network(module, input_size: int) -> rl.Stacked:
    """The functional network of a linen or NNX ``Recurrent`` ``module`` (its ``cell``
    and options) for inputs of size ``input_size``."""
    cell = module.cell
    return build_network(
        lambda i: cell_for(cell, i),
        input_size,
        module.num_layers,
        module.bidirectional,
        module.merge,
        module.dropout,
        module.input_dropout,
        module.recurrent_dropout,
        module.zoneout,
        getattr(cell, "param_dtype", jnp.float32),
        module.config,
    )


def show_constructor(cls) -> None:
    """Give ``cls`` its constructor's own signature (less ``self``), so that ``help()``
    and ``inspect`` show it where a metaclass hides ``__init__`` behind ``(*args,
    **kwargs)``."""
    sig = inspect.signature(cls.__init__)
    cls.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])


_SIZES = ("input_size", "hidden_size")
_FLAX_FIELDS = ("parent", "name")


def _factory_doc(stub, cell_class, recurrent, sizes, options, fields) -> str:
    head, sep, example = inspect.cleandoc(stub.__doc__).partition("\nExample:")
    cell_name = f"rnnjax.{cell_class.__name__}"
    shown = [n for n in options if n not in _FLAX_FIELDS]
    if sizes == _SIZES:
        args = ["input_size, hidden_size: ``I`` and ``H`` of the first layer's cell."]
    else:
        args = [
            "hidden_size: ``H``. The input size comes from the inputs at ``init`` (the "
            "module's cell is built for ``H`` inputs and rebuilt for the inputs' size)."
        ]
    args.append(
        f"**options: by keyword, the options of :class:`{recurrent.__module__}.Recurrent` "
        f"({', '.join(shown)}) and the fields of the cell, :class:`{cell_name}` "
        f"({', '.join(fields)})."
    )
    wrap = lambda s: textwrap.fill(s, 86, initial_indent="  ", subsequent_indent="    ")  # noqa: E731
    returns = f"``{recurrent.__module__}.Recurrent({cell_class.__name__}(...), **options)``."
    body = "\n".join(["Args:", *map(wrap, args), "", "Returns:", wrap(returns)])
    return head.rstrip() + "\n\n" + body + "\n" + sep + example


def cell_factory(recurrent, cell_class, sizes: tuple, **defaults):
    """A decorator making a thin factory ``name(*sizes, **options)`` that returns
    ``recurrent(cell_class(input_size, hidden_size, **fields), **options)``.

    The decorated stub gives the factory its name, module and docstring (its body is never
    run); the factory's signature is ``sizes``, then ``recurrent``'s options (``defaults``
    override theirs), then the cell's fields, keyword only. With ``sizes ==
    ("hidden_size",)`` (linen, whose modules take the input size from the inputs) the
    cell is built for ``hidden_size`` inputs.
    """
    options = [p for p in inspect.signature(recurrent).parameters.values() if p.name != "cell"]
    options = [p.replace(default=defaults.get(p.name, p.default)) for p in options]
    fields = [
        # the types are the cell's to document (its annotations name its module's imports)
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=inspect.Parameter.empty)
        for p in inspect.signature(cell_class).parameters.values()
        if p.name not in _SIZES
    ]
    clash = {p.name for p in options} & {p.name for p in fields}
    if clash:
        raise TypeError(f"{cell_class.__name__} fields {sorted(clash)} clash with module options")
    lead = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in sizes]
    sig = inspect.Signature(lead + options + fields)
    field_names = {p.name for p in fields}

    def wrap(stub):
        def factory(*args, **kwargs):
            given = sig.bind(*args, **kwargs).arguments
            io = [given.pop(n) for n in sizes]
            cell = cell_class(
                *(io * 2 if len(io) == 1 else io),
                **{k: given.pop(k) for k in list(given) if k in field_names},
            )
            return recurrent(cell, **{**defaults, **given})

        factory.__signature__ = sig
        factory.__name__ = factory.__qualname__ = stub.__name__
        factory.__module__ = stub.__module__
        factory.__doc__ = _factory_doc(
            stub, cell_class, recurrent, sizes, [p.name for p in options], [p.name for p in fields]
        )
        return factory

    return wrap

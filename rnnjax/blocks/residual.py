r"""Deep residual recurrent blocks: the architecture of the parallel-in-time papers.

The papers that run linear recurrences in parallel (the LRU, Orvieto et al. 2023; minGRU
and minLSTM, Feng et al. 2024) do not use one recurrent layer: they stack blocks of

.. math::

    u = x + P\,R(\mathrm{norm}_1(x)), \qquad y = u + M(\mathrm{norm}_2(u))

(``residual="each"``: pre-norm, a recurrent layer ``R``, a projection ``P`` back to the
width when ``R``'s output size differs, a position-wise GLU or MLP ``M``, two residual
connections; the Transformer's layout, used by Feng et al.), or

.. math::

    y = x + M(\mathrm{GELU}(P\,R(\mathrm{norm}_1(x))))

(``residual="block"``: one residual around the whole block, the LRU paper's layout with
``M`` a GLU). Any cell or layer serves as ``R``: :class:`rnnjax.MinGRU`,
:class:`rnnjax.MinLSTM`, :class:`rnnjax.LRU` (whose ``2N`` real outputs ``P`` maps back
to the width: the paper's ``Re(C h)``; the skip ``D x`` is the residual), or a GRU, LSTM
or any layer of :mod:`rnnjax.layers`.

:class:`ResidualBlock` is one block; :class:`DeepRecurrent` stacks ``N`` of them between an
optional input encoder and an optional output head, with a final norm. Both are layers:
``init(key)``, ``apply`` and ``apply_batch`` with :func:`rnnjax.unroll`'s semantics for
``length`` (outputs exactly zero past it; the padding never changes an output, state or
gradient: it is zeroed on entry) and ``resets`` (handed to every recurrent layer; the
rest of a block is position-wise).

Both also step: ``step(params, state, x)`` reads one position of one example and carries
the state, the work of one token whatever the sequence length, which is how
:mod:`rnnjax.decoding` generates from them. :func:`step_layer` steps any causal layer
(a forward :class:`rnnjax.Recurrent` of any cell, through the cell's ``step``; a
:class:`rnnjax.Stacked` of causal layers; these blocks; a layer of your own with
``step``) and names the layer that reads the future when there is one.

Shapes: ``T`` time, ``B`` batch axes, ``D`` the width, ``I`` input, ``O`` output.

References:
  Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De (2023). Resurrecting recurrent
  neural networks for long sequences.
  Feng, Tung, Ahmed, Bengio & Hajimirsadeghi (2024). Were RNNs all we needed?
  Dauphin, Fan, Auli & Grangier (2017). Language modeling with gated convolutional
  networks. (GLU)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax._repr import short_repr
from rnnjax.cells.base import lead
from rnnjax.layers import Recurrent, Stacked, _as_layer, _Layer, _run_layer, short

__all__ = ["ResidualBlock", "DeepRecurrent", "count_params", "step_layer"]

MIXERS = ("glu", "mlp", None)
NORMS = ("layer", "rms", None)
RESIDUALS = ("each", "block")


def count_params(params) -> int:
    """The number of scalars in a parameter pytree (to compare models of equal size).

    Args:
      params: any pytree of arrays.

    Returns:
      The total number of elements (an ``int``).

    Example:
      >>> import jax, rnnjax as rj
      >>> rj.count_params(rj.GRU(3, 4).init(jax.random.key(0)))   # 3*12 + 4*12 + 12 + 4
      100
    """
    leaves = jax.tree_util.tree_leaves(params)
    bad = [a for a in leaves if not (hasattr(a, "shape") or isinstance(a, (int, float)))]
    if bad:
        raise TypeError(
            "params must be a pytree of arrays (e.g. a model's init(key)); got a leaf "
            f"{checks.describe(bad[0])}"
        )
    return int(sum(math.prod(jnp.shape(a)) for a in leaves))


def _dense_init(key, n_in, n_out, dtype):
    w = jax.nn.initializers.lecun_normal()(key, (n_in, n_out), jnp.float32)
    return {"w": w.astype(dtype), "b": jnp.zeros((n_out,), dtype)}


def _dense(p, x):
    dt = jnp.promote_types(jnp.float32, x.dtype)
    y = jnp.matmul(x.astype(dt), p["w"].astype(dt))
    return y + lead(p["b"].astype(dt), y.ndim)


def _norm_init(kind, d, dtype):
    if kind is None:
        return {}
    p = {"scale": jnp.ones((d,), dtype)}
    if kind == "layer":
        p["bias"] = jnp.zeros((d,), dtype)
    return p


def _norm(kind, p, x, eps=1e-6):
    if kind is None:
        return x
    dt = jnp.promote_types(jnp.float32, x.dtype)
    x = x.astype(dt)
    if kind == "layer":
        x = x - jnp.mean(x, axis=-1, keepdims=True)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
    x = x * lead(p["scale"].astype(dt), x.ndim)
    return x + lead(p["bias"].astype(dt), x.ndim) if kind == "layer" else x


def _valid(T, length, batch):
    """``(T, *B, 1)`` bool, or ``None`` without lengths."""
    if length is None:
        return None
    t = jnp.arange(T).reshape((T,) + (1,) * len(batch))
    return (t < jnp.asarray(length)[None])[..., None]


def _check_params(name, params, keys):
    if not isinstance(params, dict) or set(params) != set(keys):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{name} must be a dict with keys {sorted(keys)}; got {got}")


def step_layer(layer, params, state, x, *, name: str = "layer"):
    """One step of a causal layer on one example, carrying its state.

    Running a causal layer over ``T`` positions equals ``T`` calls of this function (the
    state of each call fed to the next): the layer's outputs at every position and its
    final state. A forward :class:`rnnjax.Recurrent` steps its cell (any cell, through
    the cell protocol's ``step``; with zoneout, the one-step run of the layer that gives
    the zoneout expectation); a :class:`rnnjax.Stacked` steps its layers in turn;
    :class:`ResidualBlock`, :class:`DeepRecurrent` and a layer of your own step with
    their ``step(params, state, x)``.

    Args:
      layer: the layer.
      params: its parameters.
      state: its state after the previous position (``layer.initial_state()`` first).
      x: ``(I,)``, the input at this position.
      name: what errors call the layer.

    Returns:
      ``(state, y)``: the state after this position and the output ``(H,)``.

    Raises:
      ValueError: naming the layer that reads the future (a reverse or bidirectional
        layer, or a layer of your own without ``step``).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> net = rj.DeepRecurrent.stack(rj.MinGRU, width=4, depth=2)
      >>> p, xs = net.init(jax.random.key(0)), jnp.ones((3, 4))
      >>> state = net.initial_state()
      >>> for x in xs:
      ...     state, y = rj.blocks.step_layer(net, p, state, x)
      >>> bool(jnp.allclose(y, net.apply(p, xs)[1][-1], atol=1e-5))
      True
    """
    if isinstance(layer, Stacked):
        states = []
        for i, (sub, p, s) in enumerate(zip(layer.layers, params, state)):
            s, x = step_layer(sub, p, s, x, name=f"{name}.layers[{i}]")
            states.append(s)
        return tuple(states), x
    if isinstance(layer, Recurrent) and not layer.reverse:
        if layer.zoneout:  # no key: the zoneout expectation, as apply gives it
            state, ys = layer._run(params, x[None], None, state, None, None)
            return state, ys[0]
        return layer.cell.step(params, state, x)
    if isinstance(layer, (ResidualBlock, DeepRecurrent)):
        return layer.step(params, state, x, name=name)
    if hasattr(layer, "step") and not getattr(layer, "reverse", False):
        return layer.step(params, state, x)
    raise ValueError(
        f"{name} must be causal to run one position at a time (a reverse or bidirectional "
        "layer reads the future; a layer of your own needs step(params, state, x)); got "
        f"{short(layer)}"
    )


@dataclasses.dataclass(frozen=True)
class ResidualBlock(_Layer):
    """One pre-norm residual block around a recurrent layer (see the module docstring).

    Params: ``{"norm1", "layer", "out", "norm2", "mixer"}`` (``out`` only when the
    layer's output size differs from the width, ``norm2`` only with ``residual="each"``
    and a mixer, ``mixer`` only with one). State: the layer's state.

    Args:
      layer: a cell (run as :class:`rnnjax.Recurrent`) or a layer; its ``input_size`` is
        the block's width ``D``.
      mixer: ``"glu"`` (``W_2 (u * sigmoid(v))`` with ``[u | v] = W_1 x``), ``"mlp"``
        (``W_2 GELU(W_1 x)``) or ``None``.
      expansion: the mixer's hidden size is ``expansion * D``.
      norm: ``"layer"`` (LayerNorm), ``"rms"`` (RMSNorm) or ``None``.
      residual: ``"each"`` (two residual sublayers) or ``"block"`` (one around the block).
      param_dtype: dtype of the block's own parameters (the layer keeps its own).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> par = rj.ScanConfig(method="parallel")
      >>> block = rj.ResidualBlock(rj.Recurrent(rj.MinGRU(8, 8), config=par))
      >>> p = block.init(jax.random.key(0))
      >>> state, ys = block.apply(p, jnp.ones((5, 8)), length=3)
      >>> ys.shape, bool((ys[3:] == 0).all())
      ((5, 8), True)
    """

    __repr__ = short_repr

    layer: Any
    mixer: Optional[str] = "glu"
    expansion: int = 2
    norm: Optional[str] = "layer"
    residual: str = "each"
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        object.__setattr__(self, "layer", _as_layer(self.layer, name="layer"))
        checks.choice("mixer", self.mixer, MIXERS)
        checks.integer("expansion", self.expansion, 1)
        checks.choice("norm", self.norm, NORMS)
        checks.choice("residual", self.residual, RESIDUALS)
        checks.floating_dtype("param_dtype", self.param_dtype)
        if self.layer.output_size is None:
            raise ValueError(f"layer must have a known output_size; got {self.layer!r}")

    @property
    def input_size(self) -> int:
        """The width ``D``."""
        return self.layer.input_size

    @property
    def output_size(self) -> int:
        """The width ``D``."""
        return self.layer.input_size

    def _keys(self):
        keys = ["norm1", "layer"]
        if self.layer.output_size != self.input_size:
            keys.append("out")
        if self.mixer is not None:
            keys += ["mixer"] + (["norm2"] if self.residual == "each" else [])
        return keys

    def init(self, key) -> dict:
        """The parameters (see the class docstring).

        Example:
          >>> import jax, rnnjax as rj
          >>> p = rj.ResidualBlock(rj.LRU(4, 3)).init(jax.random.key(0))
          >>> sorted(p), p["out"]["w"].shape        # the LRU's 2N outputs back to D
          (['layer', 'mixer', 'norm1', 'norm2', 'out'], (6, 4))
        """
        D, dt = self.input_size, self.param_dtype
        k_l, k_o, k_1, k_2 = jax.random.split(key, 4)
        keys = self._keys()
        p = {"norm1": _norm_init(self.norm, D, dt), "layer": self.layer.init(k_l)}
        if "out" in keys:
            p["out"] = _dense_init(k_o, self.layer.output_size, D, dt)
        if self.mixer is not None:
            Hm = self.expansion * D
            w1 = _dense_init(k_1, D, 2 * Hm if self.mixer == "glu" else Hm, dt)
            w2 = _dense_init(k_2, Hm, D, dt)
            p["mixer"] = {"w1": w1["w"], "b1": w1["b"], "w2": w2["w"], "b2": w2["b"]}
            if self.residual == "each":
                p["norm2"] = _norm_init(self.norm, D, dt)
        return p

    def initial_state(self, dtype=None):
        """The layer's initial state."""
        return self.layer.initial_state(dtype)

    def _mix(self, p, x):
        h = _dense({"w": p["w1"], "b": p["b1"]}, x)
        if self.mixer == "glu":
            u, v = jnp.split(h, 2, axis=-1)
            h = u * jax.nn.sigmoid(v)
        else:
            h = jax.nn.gelu(h)
        return _dense({"w": p["w2"], "b": p["b2"]}, h)

    def _run(self, params, xs, length, state, resets, keys):
        _check_params("params", params, self._keys())
        T, batch = xs.shape[0], xs.shape[1:-1]
        valid = _valid(T, length, batch)
        if valid is not None:  # what stands in the padding never reaches anything
            xs = jnp.where(valid, xs, jnp.zeros((), xs.dtype))
        h = _norm(self.norm, params["norm1"], xs).astype(xs.dtype)
        state, r = _run_layer(self.layer, params["layer"], h, length, state, resets, keys)
        y = self._rest(params, xs, r)
        if valid is not None:
            y = jnp.where(valid, y, jnp.zeros((), y.dtype))
        return state, y

    def _rest(self, params, xs, r):
        """What follows the layer, position by position: the block's outputs from its
        inputs ``xs`` and the layer's outputs ``r``."""
        if "out" in params:
            r = _dense(params["out"], r)
        dt = jnp.promote_types(xs.dtype, r.dtype)
        if self.mixer is None:
            y = xs.astype(dt) + r.astype(dt)
        elif self.residual == "each":
            u = xs.astype(dt) + r.astype(dt)
            y = u + self._mix(params["mixer"], _norm(self.norm, params["norm2"], u)).astype(dt)
        else:
            y = xs.astype(dt) + self._mix(params["mixer"], jax.nn.gelu(r)).astype(dt)
        return y.astype(xs.dtype)

    def step(self, params, state, x, *, name: str = "block"):
        """One position of one example (see :func:`step_layer`).

        Args:
          params: from :meth:`init`.
          state: the layer's state after the previous position.
          x: ``(D,)``.
          name: what errors call the block.

        Returns:
          ``(state, y (D,))``.

        Example:
          >>> import jax, jax.numpy as jnp, rnnjax as rj
          >>> block = rj.ResidualBlock(rj.GRU(4, 4))
          >>> p, xs = block.init(jax.random.key(0)), jnp.ones((2, 4))
          >>> state, _ = block.step(p, block.initial_state(), xs[0])
          >>> state, y = block.step(p, state, xs[1])
          >>> bool(jnp.allclose(y, block.apply(p, xs)[1][1], atol=1e-5))
          True
        """
        _check_params("params", params, self._keys())
        h = _norm(self.norm, params["norm1"], x).astype(x.dtype)
        state, r = step_layer(self.layer, params["layer"], state, h, name=f"{name}.layer")
        return state, self._rest(params, x, r)


@dataclasses.dataclass(frozen=True)
class DeepRecurrent(_Layer):
    """``N`` residual blocks between an optional encoder and head, with a final norm.

    ``x -> encoder -> block_1 -> ... -> block_N -> norm -> head``. Params:
    ``{"encoder", "blocks", "norm", "head"}`` (``encoder`` only with ``encoder_size``,
    ``head`` only with ``head_size``; ``blocks`` a tuple). State: a tuple of the
    blocks' states. Build the common case with :meth:`stack`.

    Args:
      blocks: a sequence of :class:`ResidualBlock` (a cell or layer is wrapped in a block
        with the default options), all of the same width ``D``.
      encoder_size: ``I`` of an input encoder (a dense map ``I -> D``); ``None``: no
        encoder, inputs have width ``D``.
      head_size: ``O`` of an output head (a dense map ``D -> O``); ``None``: the
        outputs have width ``D``.
      norm: the final norm (``"layer"``, ``"rms"`` or ``None``).
      param_dtype: dtype of the encoder, norm and head parameters.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> net = rj.DeepRecurrent.stack(rj.MinGRU, width=8, depth=3, input_size=2,
      ...                              output_size=5, config=rj.ScanConfig(method="parallel"))
      >>> p = net.init(jax.random.key(0))
      >>> _, ys = net.apply_batch(p, jnp.ones((4, 6, 2)), length=jnp.array([6, 3, 0, 1]))
      >>> ys.shape, len(p["blocks"])
      ((4, 6, 5), 3)
    """

    __repr__ = short_repr

    blocks: Sequence[Any]
    encoder_size: Optional[int] = None
    head_size: Optional[int] = None
    norm: Optional[str] = "layer"
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if isinstance(self.blocks, (str, bytes)) or not hasattr(self.blocks, "__len__"):
            raise TypeError(
                f"blocks must be a sequence of blocks, layers or cells; got {self.blocks!r}"
            )
        blocks = tuple(
            b if isinstance(b, ResidualBlock) else ResidualBlock(_as_layer(b, name=f"blocks[{i}]"))
            for i, b in enumerate(self.blocks)
        )
        if not blocks:
            raise ValueError("blocks must hold at least one block; got none")
        D = blocks[0].input_size
        for i, b in enumerate(blocks):
            if b.input_size != D:
                raise ValueError(
                    f"blocks[{i}] has width {b.input_size}; every block must have the width "
                    f"of blocks[0], {D}"
                )
        object.__setattr__(self, "blocks", blocks)
        for name in ("encoder_size", "head_size"):
            if getattr(self, name) is not None:
                checks.integer(name, getattr(self, name), 1)
        checks.choice("norm", self.norm, NORMS)
        checks.floating_dtype("param_dtype", self.param_dtype)

    @classmethod
    def stack(
        cls,
        cell,
        width: int,
        depth: int,
        *,
        input_size: Optional[int] = None,
        output_size: Optional[int] = None,
        hidden_size: Optional[int] = None,
        mixer: Optional[str] = "glu",
        expansion: int = 2,
        norm: Optional[str] = "layer",
        residual: str = "each",
        config=None,
        cell_options: Optional[dict] = None,
    ) -> "DeepRecurrent":
        """``depth`` blocks of ``cell(width, hidden_size, **cell_options)``.

        Args:
          cell: a cell class (e.g. :class:`rnnjax.MinGRU`, :class:`rnnjax.LRU`,
            :class:`rnnjax.GRU`).
          width: ``D``, the residual stream's width.
          depth: the number of blocks ``N``.
          input_size: ``I`` of the input encoder (``encoder_size``; ``None``: none).
          output_size: ``O`` of the output head (``head_size``; ``None``: none).
          norm: as in the class.
          hidden_size: the cell's hidden size (default ``D``; the LRU's ``N`` complex
            units give ``2N`` outputs, projected back to ``D``).
          mixer, expansion, residual: as in :class:`ResidualBlock`.
          config: the :class:`rnnjax.ScanConfig` of every recurrent layer.
          cell_options: the cell's other hyperparameters.

        Returns:
          A :class:`DeepRecurrent`.

        Example:
          >>> import rnnjax as rj
          >>> rj.DeepRecurrent.stack(rj.LRU, width=8, depth=2, hidden_size=16).output_size
          8
        """
        checks.integer("width", width, 1)
        checks.integer("depth", depth, 1)
        if not isinstance(cell, type):
            raise TypeError(f"cell must be a cell class (e.g. rnnjax.MinGRU); got {cell!r}")
        hs = width if hidden_size is None else checks.integer("hidden_size", hidden_size, 1)
        opts = dict(cell_options or {})
        blocks = [
            ResidualBlock(
                Recurrent(cell(width, hs, **opts), config=config),
                mixer=mixer,
                expansion=expansion,
                norm=norm,
                residual=residual,
            )
            for _ in range(depth)
        ]
        return cls(blocks, encoder_size=input_size, head_size=output_size, norm=norm)

    @property
    def width(self) -> int:
        """``D``."""
        return self.blocks[0].input_size

    @property
    def input_size(self) -> int:
        return self.width if self.encoder_size is None else self.encoder_size

    @property
    def output_size(self) -> int:
        return self.width if self.head_size is None else self.head_size

    def init(self, key) -> dict:
        """The parameters (see the class docstring)."""
        k_e, k_h, k_b = jax.random.split(key, 3)
        kb = jax.random.split(k_b, len(self.blocks))
        p = {
            "blocks": tuple(b.init(k) for b, k in zip(self.blocks, kb)),
            "norm": _norm_init(self.norm, self.width, self.param_dtype),
        }
        if self.encoder_size is not None:
            p["encoder"] = _dense_init(k_e, self.encoder_size, self.width, self.param_dtype)
        if self.head_size is not None:
            p["head"] = _dense_init(k_h, self.width, self.head_size, self.param_dtype)
        return p

    def initial_state(self, dtype=None) -> tuple:
        """A tuple of the blocks' initial states."""
        return tuple(b.initial_state(dtype) for b in self.blocks)

    def _check(self, params, state) -> None:
        keys_ = ["blocks", "norm"] + (["encoder"] if self.encoder_size is not None else [])
        keys_ += ["head"] if self.head_size is not None else []
        _check_params("params", params, keys_)
        n = len(self.blocks)
        if not isinstance(params["blocks"], (tuple, list)) or len(params["blocks"]) != n:
            raise ValueError(f"params['blocks'] must be a tuple of {n} block params")
        if state is not None and (not isinstance(state, (tuple, list)) or len(state) != n):
            raise ValueError(f"state must be a tuple of {n} block states; got {state!r}")

    def _top(self, params, h):
        """The final norm and the head, position by position."""
        h = _norm(self.norm, params["norm"], h)
        return _dense(params["head"], h) if "head" in params else h

    def step(self, params, state, x, *, name: str = "layer"):
        """One position of one example (see :func:`step_layer`).

        Args:
          params: from :meth:`init`.
          state: the tuple of the blocks' states after the previous position.
          x: ``(I,)``.
          name: what errors call the model.

        Returns:
          ``(state, y (O,))``.
        """
        self._check(params, state)
        h = _dense(params["encoder"], x) if "encoder" in params else x
        states = []
        for i, b in enumerate(self.blocks):
            s_i, h = b.step(params["blocks"][i], state[i], h, name=f"{name}.blocks[{i}]")
            states.append(s_i)
        return tuple(states), self._top(params, h)

    def _run(self, params, xs, length, state, resets, keys):
        self._check(params, state)
        n = len(self.blocks)
        T, batch = xs.shape[0], xs.shape[1:-1]
        valid = _valid(T, length, batch)
        if valid is not None:
            xs = jnp.where(valid, xs, jnp.zeros((), xs.dtype))
        h = xs
        if "encoder" in params:
            h = _dense(params["encoder"], h)
        ks = None
        if keys is not None:
            from rnnjax.layers import per_example

            ks = per_example(lambda k: jax.random.split(k, n), batch, keys)
        states = []
        for i, b in enumerate(self.blocks):
            s_i = None if state is None else state[i]
            k_i = None if ks is None else ks[..., i]
            s_i, h = b._run(params["blocks"][i], h, length, s_i, resets, k_i)
            states.append(s_i)
        h = self._top(params, h)
        if valid is not None:
            h = jnp.where(valid, h, jnp.zeros((), h.dtype))
        return tuple(states), h

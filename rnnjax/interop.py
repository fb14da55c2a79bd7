"""PyTorch interop: port ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` models to rnnjax and back.

torch is an optional extra (``pip install "rnnjax[torch]"``, which pins the CPU build
``torch==2.13.0``); it is imported only inside these functions.

Weight mapping (per layer ``l`` and direction suffix ``""`` / ``"_reverse"``)::

    w_ih = weight_ih_l{l}.T          (I, G*H)
    w_hh = weight_hh_l{l}.T          (H or P, G*H)
    b    = bias_ih_l{l} + bias_hh_l{l}          (RNN, LSTM; GRU's r and z blocks)
    b[n] = bias_ih_l{l}[n],  b_hn = bias_hh_l{l}[n]   (GRU's candidate block)
    w_hr = weight_hr_l{l}.T          (H, P)   (LSTM with proj_size)

Gate orders agree (LSTM ``i, f, g, o``; GRU ``r, z, n``), so no block is permuted. The
way back puts the whole bias into ``bias_ih`` and zeros into ``bias_hh`` (except the
GRU's ``b_hn``): a different split of the same sums, so the module computes the same
function.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import checks
from rnnjax.cells import GRU, LSTM, SimpleRNN
from rnnjax.layers import Bidirectional, BidirectionalState, Recurrent, Stacked

__all__ = ["from_torch", "to_torch_state_dict", "to_torch", "state_from_torch", "state_to_torch"]


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError(
            'rnnjax.interop needs PyTorch: pip install "rnnjax[torch]" (torch==2.13.0)'
        ) from e
    return torch


def _kind(module) -> str:
    torch = _torch()
    if isinstance(module, torch.nn.LSTM):
        return "lstm"
    if isinstance(module, torch.nn.GRU):
        return "gru"
    if isinstance(module, torch.nn.RNN):
        return "rnn"
    raise TypeError(f"module must be a torch.nn.RNN, LSTM or GRU; got {type(module).__name__}")


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def _cell(kind: str, input_size: int, hidden: int, proj: int, nonlinearity: str):
    if kind == "lstm":
        return LSTM(input_size, hidden, proj_size=proj)
    if kind == "gru":
        return GRU(input_size, hidden, reset_after=True)
    return SimpleRNN(input_size, hidden, nonlinearity=nonlinearity)


def _params_from(sd: dict, kind: str, name: str, hidden: int, bias: bool, dtype) -> dict:
    w_ih = sd[f"weight_ih_{name}"]
    w_hh = sd[f"weight_hh_{name}"]
    b_ih = sd[f"bias_ih_{name}"] if bias else np.zeros(w_ih.shape[0], w_ih.dtype)
    b_hh = sd[f"bias_hh_{name}"] if bias else np.zeros(w_ih.shape[0], w_ih.dtype)
    p = {"w_ih": w_ih.T, "w_hh": w_hh.T}
    if kind == "gru":
        H = hidden
        p["b"] = np.concatenate([b_ih[: 2 * H] + b_hh[: 2 * H], b_ih[2 * H :]])
        p["b_hn"] = b_hh[2 * H :]
    else:
        p["b"] = b_ih + b_hh
    if kind == "lstm" and f"weight_hr_{name}" in sd:
        p["w_hr"] = sd[f"weight_hr_{name}"].T
    return {k: jnp.asarray(np.ascontiguousarray(v), dtype) for k, v in p.items()}


def from_torch(module, dtype=jnp.float32):
    """Turn a PyTorch ``nn.RNN``, ``nn.LSTM`` or ``nn.GRU`` into an rnnjax layer and params.

    Args:
      module: the torch module (any ``num_layers``, ``bidirectional``, ``proj_size``,
        ``bias``, ``batch_first``, ``dropout``).
      dtype: dtype of the returned params: a floating dtype (float64 needs 64-bit mode).

    Returns:
      ``(layer, params)``: a :class:`~rnnjax.Recurrent` (one layer, one direction), a
      :class:`~rnnjax.Bidirectional` (one layer) or a :class:`~rnnjax.Stacked` (several
      layers; its ``dropout`` is the module's). ``layer.apply(params, xs, length=n)`` on
      one unbatched sequence ``(T, I)`` gives the module's output for it (with packed
      sequences for lengths). For a batch laid out like the module's input use
      ``layer.apply_batch(params, xs, lengths, time_major=not module.batch_first)``.

    Example:
      >>> import torch, jax.numpy as jnp
      >>> from rnnjax.interop import from_torch
      >>> layer, params = from_torch(torch.nn.GRU(3, 4, num_layers=2, bidirectional=True))
      >>> state, ys = layer.apply(params, jnp.ones((5, 3)), length=4)
      >>> ys.shape
      (5, 8)
    """
    kind = _kind(module)
    dtype = checks.floating_dtype("dtype", dtype)  # int params would truncate the weights
    sd = {k: _np(v) for k, v in module.state_dict().items()}
    hidden, layers_n = module.hidden_size, module.num_layers
    proj = getattr(module, "proj_size", 0) or 0
    nonlinearity = getattr(module, "nonlinearity", "tanh")
    dirs = 2 if module.bidirectional else 1
    out = proj or hidden
    layers, params = [], []
    for l in range(layers_n):
        in_size = module.input_size if l == 0 else out * dirs
        cell = _cell(kind, in_size, hidden, proj, nonlinearity)
        fwd = _params_from(sd, kind, f"l{l}", hidden, module.bias, dtype)
        if dirs == 2:
            bwd = _params_from(sd, kind, f"l{l}_reverse", hidden, module.bias, dtype)
            layers.append(Bidirectional(Recurrent(cell), Recurrent(cell, reverse=True)))
            params.append({"forward": fwd, "backward": bwd})
        else:
            layers.append(Recurrent(cell))
            params.append(fwd)
    if layers_n == 1:
        return layers[0], params[0]
    return Stacked(tuple(layers), dropout=float(module.dropout)), tuple(params)


def _directions(layer, params):
    """[(cell, params)] for the forward and (if any) backward direction of one layer."""
    if isinstance(layer, Recurrent):
        if layer.reverse:
            raise ValueError("a lone reverse=True Recurrent has no PyTorch equivalent")
        return [(layer.cell, params)]
    if isinstance(layer, Bidirectional) and layer.merge == "concat":
        f, b = layer.forward, layer.backward
        if not (isinstance(f, Recurrent) and isinstance(b, Recurrent)):
            raise ValueError("Bidirectional must hold two Recurrent layers to export")
        return [(f.cell, params["forward"]), (b.cell, params["backward"])]
    raise ValueError(
        "layer must be a Recurrent, a Bidirectional with merge='concat', or a Stacked of "
        f"those to export to PyTorch; got {type(layer).__name__}"
    )


def _describe_torch(layer, params):
    """Per layer: a list of (cell, params) directions; and the overall layer list."""
    if isinstance(layer, Stacked):
        return [_directions(l, p) for l, p in zip(layer.layers, params)]
    return [_directions(layer, params)]


def _check_exportable(cell) -> str:
    if isinstance(cell, LSTM):
        return "lstm"
    if isinstance(cell, GRU):
        if not cell.reset_after:
            raise ValueError(
                "GRU(reset_after=False) (Cho et al.) has no PyTorch equivalent; "
                "only reset_after=True can be exported"
            )
        return "gru"
    if isinstance(cell, SimpleRNN):
        return "rnn"
    raise ValueError(f"cell must be SimpleRNN, LSTM or GRU to export; got {type(cell).__name__}")


def _check_export_params(layer, params) -> None:
    if not hasattr(layer, "init"):
        raise TypeError(f"layer must be an rnnjax layer or cell; got {checks.describe(layer)}")
    expected = jax.eval_shape(layer.init, jax.random.key(0))
    checks.params("params", expected, params, type(layer).__name__)


def to_torch_state_dict(layer, params) -> dict:
    """rnnjax params as a PyTorch ``state_dict`` (``{name: torch.Tensor}``).

    Args:
      layer: a :class:`~rnnjax.Recurrent`, a concat-merged :class:`~rnnjax.Bidirectional`
        of two ``Recurrent`` layers, or a :class:`~rnnjax.Stacked` of those, over
        ``SimpleRNN``, ``LSTM`` or ``GRU(reset_after=True)`` cells.
      params: its params.

    Returns:
      A dict loadable with ``module.load_state_dict`` into the module that
      :func:`to_torch` builds.

    Example:
      >>> import jax
      >>> import rnnjax as rj
      >>> from rnnjax.interop import to_torch_state_dict
      >>> layer = rj.Recurrent(rj.LSTM(3, 4))
      >>> sd = to_torch_state_dict(layer, layer.init(jax.random.key(0)))
      >>> {k: tuple(v.shape) for k, v in sd.items()}
      {'weight_ih_l0': (16, 3), 'weight_hh_l0': (16, 4), 'bias_ih_l0': (16,), 'bias_hh_l0': (16,)}
    """
    torch = _torch()
    _check_export_params(layer, params)
    sd = {}
    for l, dirs in enumerate(_describe_torch(layer, params)):
        for d, (cell, p) in enumerate(dirs):
            kind = _check_exportable(cell)
            name = f"l{l}" + ("_reverse" if d == 1 else "")
            p = {k: np.asarray(v) for k, v in p.items()}
            b_ih = p["b"].copy()
            b_hh = np.zeros_like(b_ih)
            if kind == "gru":
                b_hh[2 * cell.hidden_size :] = p["b_hn"]
            sd[f"weight_ih_{name}"] = p["w_ih"].T
            sd[f"weight_hh_{name}"] = p["w_hh"].T
            sd[f"bias_ih_{name}"] = b_ih
            sd[f"bias_hh_{name}"] = b_hh
            if "w_hr" in p:
                sd[f"weight_hr_{name}"] = p["w_hr"].T
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def to_torch(layer, params, batch_first: bool = False):
    """Build the PyTorch module equivalent to ``layer`` and load ``params`` into it.

    Returns:
      A ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` in float32 (``batch_first`` as given).

    Example:
      >>> import jax, torch
      >>> import rnnjax as rj
      >>> from rnnjax.interop import to_torch
      >>> layer = rj.Recurrent(rj.GRU(3, 4))
      >>> module = to_torch(layer, layer.init(jax.random.key(0)), batch_first=True)
      >>> module
      GRU(3, 4, batch_first=True)
    """
    torch = _torch()
    _check_export_params(layer, params)
    described = _describe_torch(layer, params)
    cell = described[0][0][0]
    kind = _check_exportable(cell)
    kwargs: dict[str, Any] = dict(
        input_size=cell.input_size,
        hidden_size=cell.hidden_size,
        num_layers=len(described),
        bidirectional=len(described[0]) == 2,
        batch_first=batch_first,
        dropout=float(getattr(layer, "dropout", 0.0)),
    )
    if kind == "lstm":
        module = torch.nn.LSTM(proj_size=cell.proj_size, **kwargs)
    elif kind == "gru":
        module = torch.nn.GRU(**kwargs)
    else:
        module = torch.nn.RNN(nonlinearity=cell.nonlinearity, **kwargs)
    module.load_state_dict(to_torch_state_dict(layer, params))
    return module


# --------------------------------------------------------------------------- states


def _state_slots(layer) -> list:
    """The recurrent layers of ``layer`` in PyTorch's ``h_n`` order: layer by layer, the
    forward direction then the backward one. Each slot is ``(cell, path)`` where ``path``
    indexes the rnnjax state."""
    layers = list(layer.layers) if isinstance(layer, Stacked) else [layer]
    slots = []
    for i, sub in enumerate(layers):
        dirs = _directions(
            sub, {"forward": None, "backward": None} if isinstance(sub, Bidirectional) else None
        )
        for d, (cell, _) in enumerate(dirs):
            slots.append((cell, i, None if len(dirs) == 1 else ("forward", "backward")[d]))
    return slots, isinstance(layer, Stacked)


def _to_numpy(x, name):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array or a torch tensor; got {type(x).__name__}")
    return x


def state_from_torch(layer, h_n, c_n=None):
    """PyTorch's ``h_0`` / ``(h_0, c_0)`` as the initial state of an rnnjax layer.

    PyTorch lays a multi-layer, possibly bidirectional RNN's state out as one array of
    shape ``(layers * directions, B, H)`` (``(layers * directions, H)`` unbatched): entry
    ``l * directions + d`` is layer ``l``, direction ``d`` (0 forward, 1 backward). rnnjax
    keeps one state per layer and direction: a cell state (``Recurrent``), a
    :class:`~rnnjax.BidirectionalState` of two, or a tuple of those (``Stacked``), each
    with leading batch axes ``B``.

    Args:
      layer: a layer built by :func:`from_torch` (or of the same form: ``Recurrent``,
        concat ``Bidirectional``, ``Stacked`` of those, over ``SimpleRNN``/``LSTM``/``GRU``).
      h_n: ``(layers * directions, *B, H)`` (``P`` for an LSTM with ``proj_size``), a
        torch tensor or an array.
      c_n: ``(layers * directions, *B, H)`` for an LSTM; ``None`` otherwise.

    Returns:
      The state to pass as ``state=`` to ``layer.apply`` / ``layer.apply_batch``.

    Example:
      >>> import torch, jax.numpy as jnp
      >>> from rnnjax.interop import from_torch, state_from_torch
      >>> layer, params = from_torch(torch.nn.GRU(3, 4, num_layers=2, bidirectional=True))
      >>> state = state_from_torch(layer, torch.zeros(4, 5, 4))
      >>> state[1].backward.h.shape
      (5, 4)
    """
    slots, stacked = _state_slots(layer)
    h_n = _to_numpy(h_n, "h_n")
    is_lstm = isinstance(slots[0][0], LSTM)
    if is_lstm and c_n is None:
        raise ValueError("c_n is required for an LSTM (PyTorch's (h_n, c_n)); got None")
    if not is_lstm and c_n is not None:
        raise ValueError(f"c_n is only for an LSTM; got one for {type(slots[0][0]).__name__}")
    arrays = {"h": h_n}
    if is_lstm:
        arrays["c"] = _to_numpy(c_n, "c_n")
    for name, a in arrays.items():
        if a.ndim < 2 or a.shape[0] != len(slots):
            raise ValueError(
                f"{name}_n must have shape (layers * directions, *B, size) with layers * "
                f"directions = {len(slots)}; got shape {tuple(a.shape)}"
            )
    batch = h_n.shape[1:-1]
    per_layer: dict = {}
    for k, (cell, i, direction) in enumerate(slots):
        want = cell.initial_state()
        fields = {}
        for f in want._fields:
            a = arrays[f][k]
            size = getattr(want, f).shape[-1]
            if a.shape != batch + (size,):
                raise ValueError(
                    f"{f}_n[{k}] must have shape {batch + (size,)}; got {tuple(a.shape)}"
                )
            fields[f] = jnp.asarray(a, jnp.float32)
        st = type(want)(**fields)
        if direction is None:
            per_layer[i] = st
        else:
            per_layer.setdefault(i, {})[direction] = st
    states = [
        BidirectionalState(v["forward"], v["backward"]) if isinstance(v, dict) else v
        for _, v in sorted(per_layer.items())
    ]
    return tuple(states) if stacked else states[0]


def state_to_torch(layer, state):
    """An rnnjax layer's final state in PyTorch's layout: ``h_n`` or ``(h_n, c_n)``.

    The inverse of :func:`state_from_torch`: what ``module(x)`` returns as its second
    output for the module :func:`to_torch` builds (``h_n`` for ``nn.RNN``/``nn.GRU``,
    ``(h_n, c_n)`` for ``nn.LSTM``), as JAX arrays of shape ``(layers * directions, *B,
    H)``. Convert with ``torch.from_numpy(numpy.asarray(h_n))``.

    Args:
      layer: as in :func:`state_from_torch`.
      state: the state the layer returned.

    Returns:
      ``h_n``, or ``(h_n, c_n)`` for an LSTM.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.interop import state_to_torch
      >>> layer = rj.Stacked([rj.LSTM(3, 4), rj.LSTM(4, 4)])
      >>> state, _ = layer.apply_batch(layer.init(jax.random.key(0)), jnp.ones((2, 5, 3)))
      >>> [a.shape for a in state_to_torch(layer, state)]
      [(2, 2, 4), (2, 2, 4)]
    """
    slots, stacked = _state_slots(layer)
    if stacked and (not isinstance(state, (tuple, list)) or len(state) != len(layer.layers)):
        raise ValueError(
            f"state must be a tuple of {len(layer.layers)} per-layer states; got {state!r:.200}"
        )
    picked = []
    for _cell, i, direction in slots:
        s = state[i] if stacked else state
        if direction is not None:
            if not isinstance(s, BidirectionalState):
                raise ValueError(f"state of layer {i} must be a BidirectionalState; got {s!r:.200}")
            s = getattr(s, direction)
        picked.append(s)
    fields = picked[0]._fields
    out = tuple(jnp.stack([getattr(s, f) for s in picked]) for f in fields)
    return out if isinstance(slots[0][0], LSTM) else out[0]

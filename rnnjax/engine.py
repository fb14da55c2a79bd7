r"""The engine: the one place where a recurrence runs over time.

:func:`run` takes time-major inputs ``(T, *B, I)`` in processing order with any number of
batch axes ``B`` (none for one example) and runs a cell over them with per-step masks:
``valid`` (padding), ``resets`` (segment starts), recurrent dropout and zoneout. Every
sequence function, layer, Flax module, model and driver of rnnjax ends here.

Two strategies, chosen by :class:`ScanConfig` (``backward=``), give the same values and the
same derivatives of every order, in forward and reverse mode:

- ``"reference"``: ``jax.lax.scan`` of the cell's step, differentiated by autodiff;
  optionally rematerialised (``remat=``: only every ``k``-th state is kept and the steps in
  between are recomputed in the backward pass, Chen et al. 2016). Any cell.
- ``"fused"``: for cells with a kernel (:class:`rnnjax.cells.base.Kernel`: the built-in
  LSTM, GRU and SimpleRNN). A :func:`jax.custom_jvp`: the forward scan saves the
  coefficients of each step's local linear map (formed in the loop, where the gate
  activations are still in cache); the tangent is a second scan that carries only ``dh``
  (and ``dc``) and reads one input per step, every parameter's tangent formed for all
  steps at once outside the loop as 2-D products. Reverse mode
  is JAX's transpose of that tangent map, so the backward pass carries only ``dh`` back
  through ``w_hh`` and the weight gradients are single large products over all steps and
  batch rows (Appleyard et al. 2016, as cuDNN does). Higher orders are autodiff of the
  two scans, so nothing is stopped and no derivative is approximate.

Beside them, ``ScanConfig(method="parallel")`` evaluates a whole sequence at once
(:mod:`rnnjax.parallel`) and ``method="chunkwise"`` runs a matrix-state cell's operator
chunkwise (:mod:`rnnjax.cells.matrix`); the masks below are applied here for every
strategy, and no cell ever receives them.

Masks (all optional, bool unless said): ``valid[t]`` false freezes the state and zeroes
the output (padding); ``resets[t]`` puts the state back to the initial state before step
``t`` (no derivative crosses it); ``rec_mask`` multiplies the ``h`` fed back into the cell
(recurrent dropout; ``(*B, H)`` for one mask per sequence or ``(T, *B, H)`` per step);
zoneout keeps each state unit's previous value where its ``keep`` mask is true, or takes
the expectation ``z s_{t-1} + (1 - z) s_t`` for a rate ``z`` without masks.

Shapes: ``T`` time, ``B`` batch axes, ``I`` input size, ``H`` hidden size.

References:
  Appleyard, Kocisky & Blunsom (2016). Optimizing performance of recurrent neural
  networks on GPUs. (weight gradients as one product outside the loop)
  Chen, Xu, Zhang & Guestrin (2016). Training deep nets with sublinear memory cost.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from rnnjax import checks
from rnnjax import parallel as par
from rnnjax.ops import OPERATORS

__all__ = ["ScanConfig", "run", "resolve_backward", "default_projection", "compute_dtype"]

BACKWARDS = ("auto", "reference", "fused")
PROJECTIONS = ("auto", "loop", "hoist")
METHODS = ("sequential", "parallel", "chunkwise", "auto")


@dataclasses.dataclass(frozen=True)
class ScanConfig:
    """How the engine runs a recurrence: explicit, hashable, never read from global state.

    Pass it as ``config=`` to :func:`rnnjax.unroll` / :func:`rnnjax.unroll_batch`, or as
    the ``config`` field of a layer or Flax module. Two configs are two different
    programs under one ``jit`` (the config is part of the static arguments).

    Attributes:
      backward: ``"auto"`` (default: ``"fused"`` where the cell has a kernel and no
        rematerialisation is asked for, else ``"reference"``), ``"reference"`` (autodiff
        of ``lax.scan``, any cell) or ``"fused"`` (the kernel's derivative; a cell without
        a kernel, or ``remat``, raises). ``"auto"`` picks the fused path on every backend:
        on XLA:CPU (2 cores, idle) its training step took 0.51-0.97x the reference path's
        for the LSTM and the Elman RNN and 0.71-0.95x for the GRU at the benchmark's
        shapes, with the GRU at parity (1.01) at B=256, H=512 (the benchmark's
        "default / reference (same run)" table; the documentation's performance page has
        the figures).
      projection: where the input projection ``x_t @ w_ih + b`` is computed: ``"loop"``
        (inside each step), ``"hoist"`` (for all steps in one product before the loop) or
        ``"auto"`` (per backend, :func:`default_projection`).
      remat: ``None``/``False`` (keep the activations), ``True`` (chunks of
        ``ceil(sqrt(T))`` steps) or an int ``k >= 1`` (chunks of ``k`` steps): memory
        ``O(T / k + k)`` states for one more forward pass. Reference path only.
      method: ``"sequential"`` (default) evaluates step after step. ``"parallel"``
        evaluates the whole sequence at once (:mod:`rnnjax.parallel`): a parallel scan
        for cells with a diagonal linear form (MinGRU, MinLSTM, LRU, RGLRU, S6), one
        chunk of the whole sequence for matrix-state cells (MLSTM: one masked ``T x T``
        product per head), Newton iterations (DEER) for the others. ``"chunkwise"``: for
        matrix-state cells (:class:`rnnjax.cells.matrix.MatrixCell`, e.g. the MLSTM), the
        operator's chunkwise form (:mod:`rnnjax.ops`): within chunks of ``chunk`` steps
        matrix products, across chunks a scan of the chunk states; any other cell raises.
        ``"auto"``: chunkwise (with ``chunk``) for matrix-state cells, the parallel scan
        for cells with a diagonal linear form, sequential for the others (on two CPU
        cores the Newton solve measured slower than the sequential scan; see the
        README's "Parallel in time"). Whatever the method, lengths, resets, reverse and
        the final state at the length are applied here, once; a cell never sees them.
      unroll: steps per loop iteration of ``lax.scan`` (an int >= 1).
      parallel: a :class:`rnnjax.parallel.ParallelOptions` (default ``ParallelOptions()``)
        for ``method="parallel"``: the linear scan, the Newton Jacobians, tolerance,
        iteration cap and damping. Its ``chunk`` on a matrix-state cell is the deprecated
        spelling of ``method="chunkwise", chunk=...`` (it runs the chunkwise form, with a
        ``DeprecationWarning``).
      chunk: the chunk length of the chunkwise form, an int >= 1 (default 64; a chunk
        longer than the sequence is cut to it).

    Fields that contradict each other are refused when the config is made (a
    ``ValueError`` naming both), never ignored: ``method="parallel"`` or ``"chunkwise"``
    with ``remat``, ``backward="fused"`` or ``unroll != 1``; ``backward="fused"`` with
    ``remat``; ``parallel`` options with ``method="sequential"`` or ``"chunkwise"``; a
    ``chunk`` other than the default with ``method="sequential"`` or ``"parallel"``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.LSTM(2, 3)
      >>> p = cell.init(jax.random.key(0))
      >>> cfg = rj.ScanConfig(remat=4)
      >>> g = jax.grad(lambda p: rj.unroll(cell, p, jnp.ones((16, 2)), config=cfg)[1].sum())(p)
      >>> g["w_hh"].shape
      (3, 12)
    """

    backward: str = "auto"
    projection: str = "auto"
    remat: Union[None, bool, int] = None
    method: str = "sequential"
    unroll: int = 1
    parallel: Any = None
    chunk: int = 64

    def __post_init__(self):
        checks.choice("backward", self.backward, BACKWARDS)
        checks.choice("projection", self.projection, PROJECTIONS)
        checks.choice("method", self.method, METHODS)
        r = self.remat
        if not (r is None or isinstance(r, bool)):
            checks.integer("remat", r, 1)
        checks.integer("unroll", self.unroll, 1)
        checks.integer("chunk", self.chunk, 1)
        if self.parallel is not None and not isinstance(self.parallel, par.ParallelOptions):
            raise TypeError(
                "parallel must be an rnnjax.parallel.ParallelOptions or None; got "
                f"{checks.describe(self.parallel)}"
            )
        _check_consistent(self)


def _check_consistent(config) -> None:
    """Fields of a :class:`ScanConfig` that contradict each other: a setting the chosen
    path would silently ignore is refused, naming both fields."""
    method = config.method
    if method in ("parallel", "chunkwise"):
        if config.remat:
            raise ValueError(
                f"remat={config.remat!r} applies to the sequential scan; method={method!r} "
                f"never rematerialises (use method='sequential' with remat, or drop remat)"
            )
        if config.backward == "fused":
            raise ValueError(
                f"backward='fused' is a sequential-scan path; method={method!r} is "
                f"differentiated by autodiff (use backward='auto' or 'reference' with "
                f"method={method!r}, or method='sequential' with backward='fused')"
            )
        if config.unroll != 1:
            raise ValueError(
                f"unroll={config.unroll!r} applies to the sequential scan; method={method!r} "
                f"has no loop to unroll (use unroll=1 with method={method!r})"
            )
    if config.backward == "fused" and config.remat:
        raise ValueError(
            f"remat is done by the reference backward pass; got backward='fused' with "
            f"remat={config.remat!r} (use backward='auto' or 'reference')"
        )
    if config.parallel is not None and method in ("sequential", "chunkwise"):
        raise ValueError(
            "parallel options are used only with method='parallel' or 'auto'; got "
            f"method={method!r} with parallel set (set method, or drop parallel)"
        )
    if config.chunk != 64 and method in ("sequential", "parallel"):
        raise ValueError(
            f"chunk={config.chunk!r} is the chunk length of method='chunkwise' (or 'auto'); "
            f"got method={method!r} (use method='chunkwise', or drop chunk)"
        )


def default_projection(backend: Optional[str] = None) -> str:
    """The projection placement ``"auto"`` resolves to on ``backend`` (default: JAX's).

    XLA:CPU: ``"loop"`` (hoisting the input product out of the scan measured 1.1-1.4x
    slower at B=32..64 on two cores). GPU and TPU: ``"hoist"``, one large product before
    the loop, the classic accelerator lever.

    Example:
      >>> from rnnjax.engine import default_projection
      >>> default_projection("cpu")
      'loop'
    """
    backend = backend or jax.default_backend()
    return "loop" if backend == "cpu" else "hoist"


def resolve_backward(cell, config: ScanConfig) -> str:
    """``"fused"`` or ``"reference"``: what ``config.backward`` means for ``cell``.

    Example:
      >>> import rnnjax as rj
      >>> from rnnjax.engine import resolve_backward
      >>> resolve_backward(rj.LSTM(3, 4), rj.ScanConfig(backward="reference"))
      'reference'
    """
    has_kernel = cell.kernel() is not None if hasattr(cell, "kernel") else False
    if config.backward == "fused":
        if not has_kernel:
            raise ValueError(
                f"config.backward='fused' needs a cell with a kernel; {type(cell).__name__} "
                "has none (use backward='reference' or 'auto')"
            )
        if config.remat:
            raise ValueError(
                "config.remat is done by the reference backward pass; got backward='fused' "
                f"with remat={config.remat!r} (use backward='auto' or 'reference')"
            )
        return "fused"
    if config.backward == "reference" or config.remat or not has_kernel:
        return "reference"
    return "fused"


# --------------------------------------------------------------------------- masks


def _bcast(mask, leaf):
    """``mask`` ``(*lead)`` with trailing unit axes to broadcast against ``leaf``."""
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))


def _lead_to(a, ndim):
    return a.reshape((1,) * (ndim - a.ndim) + a.shape)


def _enter(carry, s0, m, rec_fixed):
    """The state a step starts from (``s``: reset applied) and the one the cell reads
    (``s_in``: recurrent dropout on ``h`` applied)."""
    s = carry
    if m.get("reset") is not None:
        r = m["reset"]
        s = jax.tree_util.tree_map(
            lambda c, i: jnp.where(_bcast(r, c), _lead_to(i, c.ndim), c), carry, s0
        )
    rec = m.get("rec") if m.get("rec") is not None else rec_fixed
    s_in = s if rec is None else s._replace(h=s.h * _lead_to(rec, s.h.ndim).astype(s.h.dtype))
    return s, s_in


def _leave(s, new, carry, m, zrate):
    """Zoneout (masks or expectation) and the padding freeze."""
    if m.get("keep") is not None:
        new = jax.tree_util.tree_map(lambda k, o, n: jnp.where(k, o, n), m["keep"], s, new)
    elif zrate:
        new = jax.tree_util.tree_map(lambda o, n: zrate * o + (1.0 - zrate) * n, s, new)
    if m.get("valid") is not None:
        v = m["valid"]
        new = jax.tree_util.tree_map(lambda n, c: jnp.where(_bcast(v, n), n, c), new, carry)
    return new


def _zero_invalid(ys, valid):
    """Outputs (an array, or any pytree of arrays) zeroed where ``valid`` is false, leaf
    by leaf."""
    if valid is None:
        return ys
    return jax.tree_util.tree_map(
        lambda y: jnp.where(_bcast(valid, y), y, jnp.zeros((), y.dtype)), ys
    )


def _project_recur(cell):
    """``(project, recur)`` of ``cell``: its own, or, for a cell with only ``step`` (a
    user-written cell), the identity projection and ``step`` itself."""
    if hasattr(cell, "project") and hasattr(cell, "recur"):
        return cell.project, cell.recur
    return (lambda params, x: x), cell.step


def _empty_outputs(cell, params, state, xs, batch):
    """The outputs of zero steps: zeros ``(0, *B, ...)`` for every output leaf, in the
    output structure and dtypes one step gives."""
    nb = len(batch)
    one = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[nb:], a.dtype), state)
    x = jax.ShapeDtypeStruct((xs.shape[-1],), xs.dtype)
    out = jax.eval_shape(lambda p, s, x: cell.step(p, s, x)[1], params, one, x)
    return jax.tree_util.tree_map(lambda o: jnp.zeros((0,) + batch + o.shape, o.dtype), out)


# --------------------------------------------------------------------------- reference


def _body(cell, hoist, zrate, params, s0, rec_fixed, batched):
    """One step of the reference scan: ``(carry, (x, masks)) -> (carry, y)``."""

    project, recur = _project_recur(cell)

    def one(s, x):
        return recur(params, s, x if hoist else project(params, x))

    step = jax.vmap(one) if batched else one

    def body(carry, inp):
        x, m = inp
        s, s_in = _enter(carry, s0, m, rec_fixed)
        new, y = step(s_in, x)
        zoned = m.get("keep") is not None or zrate
        new = _leave(s, new, carry, m, zrate)
        if zoned:
            y = new.h
        return new, _zero_invalid(y, m.get("valid"))

    return body


def _reference(cell, hoist, zrate, unroll, remat, params, s0, xs, m_seq, rec_fixed, batched):
    project = _project_recur(cell)[0]
    proj = (
        jax.vmap(functools.partial(project, params))
        if batched
        else functools.partial(project, params)
    )
    body = _body(cell, hoist, zrate, params, s0, rec_fixed, batched)

    inputs = jax.vmap(proj)(xs) if hoist else xs
    T = xs.shape[0]
    if not remat:
        return jax.lax.scan(body, s0, (inputs, m_seq), unroll=unroll)
    chunk = math.ceil(math.sqrt(T)) if remat is True else int(remat)
    chunk = max(1, min(chunk, T))
    n = -(-T // chunk)
    pad = n * chunk - T

    def padded(a, fill):
        if not pad:
            return a
        return jnp.concatenate([a, jnp.full((pad,) + a.shape[1:], fill, a.dtype)])

    m_seq = dict(m_seq)
    lead = xs.shape[1:2] if batched else ()
    if m_seq.get("valid") is None:
        m_seq["valid"] = jnp.ones((T,) + lead, bool)
    inputs = padded(inputs, 0)
    m_seq = {
        k: jax.tree_util.tree_map(lambda a: padded(a, False if a.dtype == bool else 0), v)
        for k, v in m_seq.items()
        if v is not None
    }
    split = lambda a: a.reshape((n, chunk) + a.shape[1:])  # noqa: E731

    @jax.checkpoint
    def chunk_body(st, inp):
        return jax.lax.scan(body, st, inp, unroll=unroll)

    state, ys = jax.lax.scan(chunk_body, s0, jax.tree_util.tree_map(split, (inputs, m_seq)))
    return state, jax.tree_util.tree_map(lambda y: y.reshape((n * chunk,) + y.shape[2:])[:T], ys)


# --------------------------------------------------------------------------- fused


def _fused_forward(cell, hoist, zrate, params, s0, xs, m_seq, rec_fixed):
    """The forward scan of the fused path. Returns ``((state, ys), (s_in, res))`` with the
    states each step read and the kernel's residuals, all steps stacked."""
    k = cell.kernel()

    def body(carry, inp):
        x, m = inp
        s, s_in = _enter(carry, s0, m, rec_fixed)
        new, res = k.forward(params, s_in, x if hoist else cell.project(params, x))
        new = _leave(s, new, carry, m, zrate)
        return new, (new, res)

    inputs = par.project_rows(cell, params, xs) if hoist else xs
    st, (news, res) = jax.lax.scan(body, s0, (inputs, m_seq))
    ys = _zero_invalid(news.h, m_seq.get("valid"))
    # the states each step read, formed outside the loop as whole-array ops
    prev = jax.tree_util.tree_map(
        lambda a0, a: jnp.concatenate([a0[None], a[:-1]], axis=0), s0, news
    )
    _, s_in = _enter(prev, s0, m_seq, rec_fixed)
    return (st, ys), (s_in, res)


def _instantiate(t, like):
    if type(t) is SymbolicZero:
        return jnp.zeros(jnp.shape(like), jnp.result_type(like))
    return t


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _fused(cell, hoist, zrate, params, s0, xs, m_seq, rec_fixed):
    out, _ = _fused_forward(cell, hoist, zrate, params, s0, xs, m_seq, rec_fixed)
    return out


def _fused_jvp(cell, hoist, zrate, primals, tangents):
    params, s0, xs, m_seq, rec_fixed = primals
    dparams, ds0, dxs, _, _ = tangents
    k = cell.kernel()
    (st, ys), (s_in, res) = _fused_forward(cell, hoist, zrate, params, s0, xs, m_seq, rec_fixed)
    dparams = jax.tree_util.tree_map(
        _instantiate, dparams, params, is_leaf=lambda t: type(t) is SymbolicZero
    )
    ds0 = jax.tree_util.tree_map(_instantiate, ds0, s0, is_leaf=lambda t: type(t) is SymbolicZero)
    # The step inputs' tangents for all steps at once, on 2-D views (N, .) of the stacked
    # (T, *B, .) arrays: in the transpose the weight gradients are then single 2-D
    # products that contract over time and batch rows with no relayout copy.
    lead_shape = xs.shape[:-1]
    flat = lambda a: a.reshape((-1,) + a.shape[len(lead_shape) :])  # noqa: E731
    x2 = flat(xs)
    if type(dxs) is SymbolicZero:
        _, dxp = jax.jvp(lambda p: cell.project(p, x2), (params,), (dparams,))
    else:
        _, dxp = jax.jvp(cell.project, (params, x2), (dparams, flat(dxs)))
    drive = k.drive(
        params,
        dparams,
        jax.tree_util.tree_map(flat, s_in),
        jax.tree_util.tree_map(flat, res),
        dxp,
    )
    drive = jax.tree_util.tree_map(lambda a: a.reshape(lead_shape + a.shape[1:]), drive)
    consts = k.constants(params)

    def body(dcarry, inp):
        m, r, d = inp
        ds, ds_in = _enter(dcarry, ds0, m, rec_fixed)
        dnew = k.tangent(consts, r, ds_in, d)
        dnew = _leave(ds, dnew, dcarry, m, zrate)
        return dnew, dnew.h

    dst, dh = jax.lax.scan(body, ds0, (m_seq, res, drive))
    dys = _zero_invalid(dh, m_seq.get("valid"))
    return (st, ys), (dst, dys)


_fused.defjvp(_fused_jvp, symbolic_zeros=True)


# --------------------------------------------------------------------------- run


def run(
    cell,
    params,
    state,
    xs,
    *,
    valid=None,
    resets=None,
    rec_mask=None,
    zoneout: Any = 0.0,
    config: Optional[ScanConfig] = None,
    return_info: bool = False,
):
    """Run ``cell`` over time-major inputs in processing order.

    Args:
      cell: any cell (:mod:`rnnjax.cells.base`).
      params: its parameters.
      state: initial state, leaves ``(*B, ...)`` in the state dtype.
      xs: ``(T, *B, I)``, padding already zeroed (:mod:`rnnjax.sequence` does that).
      valid: ``(T, *B)`` bool or ``None`` (every step real).
      resets: ``(T, *B)`` bool or ``None``: where true, the state is put back to
        ``state`` before the step.
      rec_mask: ``None``, ``(*B, H)`` (one mask per sequence) or ``(T, *B, H)`` (per
        step): multiplies the ``h`` the cell reads.
      zoneout: a rate ``z`` in ``[0, 1)`` (the expectation, deterministic), or a pytree of
        bool keep masks shaped like the state with a leading ``T``.
      config: a :class:`ScanConfig` (default ``ScanConfig()``).
      return_info: also return the Newton solve's :class:`rnnjax.parallel.NewtonInfo`
        (``None`` unless the Newton path ran).

    Returns:
      ``(state, ys)``: the state after the last valid step, outputs ``(T, *B, O)`` in
      processing order, zero where ``valid`` is false (and ``info`` with
      ``return_info``). The outputs are in the cell's compute dtype
      (:func:`compute_dtype`) where it is narrower than the state's (a bfloat16 cell gives
      bfloat16 outputs); the state keeps its own dtype (float32 by default).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax import engine
      >>> cell = rj.GRU(2, 3)
      >>> p = cell.init(jax.random.key(0))
      >>> s0 = jax.tree_util.tree_map(lambda a: jnp.zeros((4,) + a.shape), cell.initial_state())
      >>> st, ys = engine.run(cell, p, s0, jnp.ones((5, 4, 2)))
      >>> ys.shape
      (5, 4, 3)
    """
    config = ScanConfig() if config is None else config
    route = _parallel_route(cell, config)
    T = xs.shape[0]
    batch = tuple(xs.shape[1:-1])
    n = math.prod(batch)
    batched = bool(batch)
    keep = None
    zrate = 0.0
    if isinstance(zoneout, (int, float)):
        zrate = float(zoneout)
    else:
        keep = zoneout
    rec_fixed = None
    rec_step = None
    if rec_mask is not None:
        if rec_mask.ndim == len(batch) + 1:
            rec_fixed = rec_mask
        else:
            rec_step = rec_mask
    if T == 0:
        ys = _to_compute_dtype(cell, params, _empty_outputs(cell, params, state, xs, batch))
        return (state, ys, None) if return_info else (state, ys)
    if batched and len(batch) > 1:  # one flat batch axis inside
        flat = lambda a, k: a.reshape(a.shape[:k] + (n,) + a.shape[k + len(batch) :])  # noqa: E731
        xs = flat(xs, 1)
        state = jax.tree_util.tree_map(lambda a: flat(a, 0), state)
        valid, resets, rec_step = (
            None if a is None else flat(a, 1) for a in (valid, resets, rec_step)
        )
        rec_fixed = None if rec_fixed is None else flat(rec_fixed, 0)
        keep = None if keep is None else jax.tree_util.tree_map(lambda a: flat(a, 1), keep)
    m_seq = {"valid": valid, "reset": resets, "rec": rec_step, "keep": keep}
    m_seq = {k: v for k, v in m_seq.items() if v is not None}
    hoist = (default_projection() if config.projection == "auto" else config.projection) == "hoist"
    info = None
    if route is not None:
        st, ys, info = _run_parallel(
            route, cell, config, hoist, zrate, params, state, xs, m_seq, rec_fixed, batched
        )
    elif resolve_backward(cell, config) == "fused":
        st, ys = _fused(cell, hoist, zrate, params, state, xs, m_seq, rec_fixed)
    else:
        st, ys = _reference(
            cell,
            hoist,
            zrate,
            config.unroll,
            config.remat,
            params,
            state,
            xs,
            m_seq,
            rec_fixed,
            batched,
        )
    if batched and len(batch) > 1:
        ys = jax.tree_util.tree_map(lambda y: y.reshape((T,) + batch + y.shape[2:]), ys)
        st = jax.tree_util.tree_map(lambda a: a.reshape(batch + a.shape[1:]), st)
    ys = _to_compute_dtype(cell, params, ys)
    if return_info:
        return st, ys, info
    return st, ys


def compute_dtype(cell, params):
    """The dtype of ``cell``'s matrix products: its ``dtype`` field, or else that of its
    floating parameters (``None`` when neither says).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.engine import compute_dtype
      >>> cell = rj.LSTM(2, 3, param_dtype=jnp.bfloat16)
      >>> compute_dtype(cell, cell.init(jax.random.key(0)))
      dtype(bfloat16)
    """
    dt = getattr(cell, "dtype", None)
    if dt is not None:
        return jnp.dtype(dt)
    leaves = [
        a
        for a in jax.tree_util.tree_leaves(params)
        if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)
    ]
    return jnp.result_type(*leaves) if leaves else None


def _to_compute_dtype(cell, params, ys):
    """Outputs in the compute dtype where it is narrower than the state's (Flax's and
    Keras's convention: a bfloat16 stack stays bfloat16 between layers; the carried state
    stays float32)."""
    cd = compute_dtype(cell, params)
    if cd is None:
        return ys

    def cast(y):
        if jnp.issubdtype(y.dtype, jnp.floating) and cd.itemsize < y.dtype.itemsize:
            return y.astype(cd)
        return y

    return jax.tree_util.tree_map(cast, ys)


# --------------------------------------------------------------------------- parallel


def _parallel_route(cell, config: ScanConfig) -> Optional[str]:
    """``None`` (sequential), ``"chunkwise"`` (a matrix-state cell's operator, chunkwise),
    ``"linear"`` (parallel scan of a diagonal linear form) or ``"newton"``."""
    if config.method == "sequential":
        return None
    if getattr(cell, "matrix_op", None) is not None:
        return "chunkwise"
    if config.method == "chunkwise":
        raise ValueError(
            f"ScanConfig(method='chunkwise') needs a matrix-state cell (a matrix_op); "
            f"{type(cell).__name__} has none (use method='parallel', 'auto' or 'sequential')"
        )
    if getattr(cell, "parallel_form", None) is not None:
        return "linear"
    if config.method == "auto":
        return None
    return "newton"


def _run_parallel(route, cell, config, hoist, zrate, params, s0, xs, m_seq, rec_fixed, batched):
    """The parallel strategies (:mod:`rnnjax.parallel`, :mod:`rnnjax.ops`); returns
    ``(state, ys, info)`` (``info``: :class:`rnnjax.parallel.NewtonInfo`, or ``None``)."""
    options = config.parallel or par.ParallelOptions()
    if route == "chunkwise":
        st, ys = _run_chunkwise(cell, config, zrate, params, s0, xs, m_seq, rec_fixed)
        return st, ys, None
    if route == "linear":
        st, ys = par.run_linear(
            cell, cell.parallel_form(), options, zrate, params, s0, xs, m_seq, rec_fixed
        )
        return st, ys, None

    def body(params, s0, rec_fixed, carry, inp):
        return _body(cell, False, zrate, params, s0, rec_fixed, batched)(carry, inp)

    return par.run_newton(body, options, params, s0, xs, m_seq, rec_fixed)


def _chunk_length(cell, config: ScanConfig, T: int) -> int:
    """The chunk of the chunkwise route: ``config.chunk``; for ``method="parallel"`` the
    whole sequence, or the deprecated ``ParallelOptions(chunk=L)``."""
    if config.method != "parallel":
        return config.chunk
    if config.parallel is None or config.parallel.chunk is None:
        return T
    warnings.warn(
        f"ScanConfig(method='parallel', parallel=ParallelOptions(chunk={config.parallel.chunk}))"
        f" on {type(cell).__name__} is deprecated: use ScanConfig(method='chunkwise', "
        f"chunk={config.parallel.chunk})",
        DeprecationWarning,
        stacklevel=5,
    )
    return config.parallel.chunk


def _last_valid(ys, valid, h0):
    """The output of each row's last valid step (``(*B, O)``), ``h0`` where none is."""
    if valid is None:
        return ys[-1].astype(h0.dtype)
    t = jnp.arange(ys.shape[0]).reshape((-1,) + (1,) * (valid.ndim - 1))
    last = jnp.max(jnp.where(valid, t, -1), axis=0)  # (*B,)
    y = jnp.take_along_axis(ys, _bcast(jnp.maximum(last, 0)[None], ys), axis=0)[0]
    return jnp.where(_bcast(last >= 0, y), y, h0).astype(h0.dtype)


def _run_chunkwise(cell, config, zrate, params, s0, xs, m_seq, rec_fixed):
    """The chunkwise route of a matrix-state cell (:mod:`rnnjax.cells.matrix`): every
    step's projection, the operator's chunkwise form with the engine's masks, the cell's
    outputs and the state after the last valid step."""
    par.refuse_regularisers(cell, config.method, m_seq, rec_fixed, zrate)
    op = OPERATORS[cell.matrix_op]
    xp = par.project_rows(cell, params, xs)
    ms0 = cell.matrix_state(s0)
    valid = m_seq.get("valid")
    o, ms = op.chunk(
        **cell.matrix_inputs(params, xp),
        state=ms0,
        reset_state=ms0,
        valid=valid,
        resets=m_seq.get("reset"),
        chunk=_chunk_length(cell, config, xs.shape[0]),
    )
    ys = _zero_invalid(cell.matrix_output(params, xp, o), valid)
    return cell.with_matrix_state(s0, ms, _last_valid(ys, valid, s0.h)), ys

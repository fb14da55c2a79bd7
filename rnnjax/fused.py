"""Fast paths for the built-in cells' scan: the engine behind :func:`rnnjax.unroll`.

Two ways in:

- **Natively batched** (the common case): :func:`rnnjax.unroll_batch` and the layers'
  ``apply_batch`` (when no dropout is in play) call :func:`run` once on time-major
  ``(T, B, .)`` arrays (:func:`rnnjax.sequence.run_batch`), for :class:`~rnnjax.LSTM`
  (without projection), :class:`~rnnjax.GRU` and :class:`~rnnjax.SimpleRNN`, on every
  backend (:func:`batch_applies`). Each step is one ``(B, .) @ (., G * H)`` product and
  the weight gradients are single 2-D products over all steps and examples. On XLA:CPU
  (2 cores) a training step took 0.71-0.87x the time of ``vmap`` of the autodiffed scan
  (the benchmark's ``rnnjax_autodiff`` rows) at B=32 and B=256, and 0.83-1.03x at B=64,
  T=256 and at B=1, where the two are within the noise.
- **Per example**: :func:`rnnjax.sequence.run_cell` (the loop of :func:`rnnjax.unroll`
  and of every layer's ``apply``) hands a cell to :func:`run` when :func:`applies` says
  so: with rematerialisation on (any cell), or, for the same cells, when the
  hand-written backward pass is enabled (by default on GPU/TPU; not on XLA:CPU, where
  under a user's ``vmap`` the weight gradients become batched products that measured
  slower; see :func:`default_enabled`). The results are those of the reference path
(``lax.scan`` of ``cell.step`` with the padding mask, differentiated by autodiff), to
floating-point rounding; ``tests/test_fused.py`` checks values and gradients against it
and against PyTorch. What changes is how the work is laid out:

- **Hand-written backward pass** (a :func:`jax.custom_vjp`, as cuDNN does): the forward
  scan saves the gate activations; the backward scan only carries ``dh`` (and ``dc``)
  back through ``w_hh`` and emits the pre-activation gradients ``dZ`` of shape
  ``(T, G * H)``. The weight gradients are then one large product each, outside the
  loop: ``dW_hh = H_prev^T dZ``, ``dW_ih = X^T dZ``, ``db = sum_t dZ``, and the input
  gradient ``dX = dZ W_ih^T``. Under :func:`jax.vmap` these products contract over
  batch and time together.
- **Where the input projection** ``x_t @ w_ih + b`` **is computed**
  (``projection=``): ``"loop"`` inside the step, ``"carry"`` one step ahead, passed to
  the next step through the carry, or ``"hoist"`` for all steps in one product before
  the loop (the classic accelerator lever; on XLA:CPU the per-step slice of the big
  buffer was measured to fuse badly). ``"auto"`` picks per backend (:func:`default_projection`).
- **Rematerialisation** (``remat=``) for very long sequences: ``remat=k`` keeps only
  the state at every ``k``-th step and recomputes the steps in between during the
  backward pass (:func:`jax.checkpoint` of ``k``-step chunks, Chen et al. 2016);
  ``remat=True`` picks ``k = ceil(sqrt(T))``, for memory ``O(sqrt(T))`` states instead of
  ``O(T)`` activations, at the price of one more forward pass.

Options are read when a function is traced; set them for a region of code with
:func:`options` (trace inside the ``with`` block: a function jitted before keeps the
options it was traced with)::

    with rj.fused.options(remat=True):
        grads = jax.grad(loss)(params, xs)

DESIGN.md section 4 reports that the XLA flag
``--xla_cpu_small_while_loop_byte_threshold`` halved latency-bound runs on XLA:CPU. The
jaxlib of jax 0.10.2 does not accept it (``XLA_FLAGS`` aborts with "Unknown flag", and
``compile(compiler_options=...)`` answers "No such compile option"), so neither this
module nor the benchmark sets it. With a jaxlib that has it, enable it before JAX
starts: ``XLA_FLAGS=--xla_cpu_small_while_loop_byte_threshold=<bytes> python ...``.

Shapes: ``T`` time, ``I`` input size, ``H`` hidden size, ``G`` number of gate blocks.

References:
  Appleyard, Kocisky & Blunsom (2016). Optimizing performance of recurrent neural
  networks on GPUs. (weight gradients as one product outside the loop)
  Chen, Xu, Zhang & Guestrin (2016). Training deep nets with sublinear memory cost.
  (checkpointing every sqrt(T) steps)
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from typing import Optional, Union

import jax
import jax.numpy as jnp

from rnnjax.cells import GRU, LSTM, GRUState, LSTMState, SimpleRNN, SimpleRNNState

__all__ = [
    "Options",
    "options",
    "current_options",
    "supports",
    "applies",
    "batch_applies",
    "default_enabled",
    "default_projection",
    "run",
]

PROJECTIONS = ("auto", "loop", "carry", "hoist")


@dataclasses.dataclass(frozen=True)
class Options:
    """Switches of the fast path (see the module docstring).

    Attributes:
      enabled: use the hand-written backward pass for the cells it supports: ``True``,
        ``False`` (the reference scan with autodiff), or ``None`` (default): per backend,
        see :func:`default_enabled`.
      projection: ``"auto"``, ``"loop"``, ``"carry"`` or ``"hoist"``.
      remat: ``None``/``False`` (save activations), ``True`` (chunks of
        ``ceil(sqrt(T))`` steps) or an int ``k >= 1`` (chunks of ``k`` steps).
    """

    enabled: Optional[bool] = None
    projection: str = "auto"
    remat: Union[None, bool, int] = None

    def __post_init__(self):
        if self.enabled is not None and not isinstance(self.enabled, bool):
            raise TypeError(f"enabled must be None or a bool; got {self.enabled!r}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}; got {self.projection!r}")
        r = self.remat
        if not (r is None or isinstance(r, bool) or (isinstance(r, int) and r >= 1)):
            raise ValueError(f"remat must be None, a bool or an int >= 1 (chunk length); got {r!r}")


_OPTIONS: contextvars.ContextVar[Options] = contextvars.ContextVar(
    "rnnjax_fused_options", default=Options()
)


def current_options() -> Options:
    """The :class:`Options` in force (the defaults outside any :func:`options` block)."""
    return _OPTIONS.get()


@contextlib.contextmanager
def options(*, enabled=..., projection: Optional[str] = None, remat=...):
    """Set fast-path options for functions traced inside the ``with`` block.

    Args:
      enabled: see :class:`Options`; left out, keeps the current value.
      projection: see :class:`Options`; ``None`` keeps the current value.
      remat: see :class:`Options`; left out, keeps the current value.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.LSTM(2, 3)
      >>> p = cell.init(jax.random.key(0))
      >>> with rj.fused.options(remat=4):
      ...     g = jax.grad(lambda p: rj.unroll(cell, p, jnp.ones((16, 2)))[1].sum())(p)
      >>> g["w_hh"].shape
      (3, 12)
    """
    cur = _OPTIONS.get()
    new = dataclasses.replace(
        cur,
        enabled=cur.enabled if enabled is ... else enabled,
        projection=cur.projection if projection is None else projection,
        remat=cur.remat if remat is ... else remat,
    )
    token = _OPTIONS.set(new)
    try:
        yield new
    finally:
        _OPTIONS.reset(token)


def supports(cell) -> bool:
    """Whether :func:`run` has a fast path for ``cell`` (LSTM without projection, GRU,
    SimpleRNN; exact types, so a subclass that changes the step is left alone)."""
    t = type(cell)
    if t is LSTM:
        return cell.proj_size == 0
    return t is GRU or t is SimpleRNN


def default_enabled(backend: Optional[str] = None) -> bool:
    """Whether the hand-written backward pass is used by default on ``backend`` for one
    example (:func:`rnnjax.unroll`, a layer's ``apply``; the natively batched path of
    :func:`batch_applies` uses it on every backend).

    XLA:CPU (jax 0.10, 2 cores): no. Under a user's ``vmap`` of one example's custom
    VJP the weight gradients become per-example products summed over the batch, which
    measured 1.3-1.6x slower than autodiff of the reference scan, so the default there
    is the reference path. GPU and TPU: yes (the cuDNN layout: weight gradients as
    single large products); not yet measured by this project.
    """
    backend = backend or jax.default_backend()
    return backend != "cpu"


def applies(cell, opts: Optional[Options] = None) -> bool:
    """Whether :func:`rnnjax.sequence.run_cell` hands ``cell`` to :func:`run` under
    ``opts``: rematerialisation (any cell) or the hand-written backward pass (the cells
    of :func:`supports`, when enabled)."""
    opts = opts or current_options()
    if opts.remat:
        return True
    enabled = default_enabled() if opts.enabled is None else opts.enabled
    return enabled and supports(cell)


def batch_applies(cell, opts: Optional[Options] = None) -> bool:
    """Whether :func:`rnnjax.unroll_batch` (and the layers' ``apply_batch`` without
    dropout) run ``cell`` natively batched through :func:`run` under ``opts``: for the
    cells of :func:`supports`, unless the hand-written backward pass is switched off
    (``enabled=False``) or rematerialisation is on (that goes example by example).

    Natively batched, the weight gradients are single 2-D products over all steps and
    examples, and the custom VJP measured as fast as autodiff or faster on XLA:CPU too
    (see the module docstring; :func:`default_enabled` for the per-example case, where
    it did not)."""
    opts = opts or current_options()
    return not opts.remat and opts.enabled is not False and supports(cell)


def default_projection(backend: Optional[str] = None) -> str:
    """The projection placement ``"auto"`` resolves to on ``backend`` (default: JAX's).

    XLA:CPU: ``"loop"`` (with the hand-written backward pass, ``"hoist"`` measured
    slowest here, as DESIGN.md section 4 found; ``"loop"`` and ``"carry"`` were within
    the noise of a loaded machine). GPU and TPU: ``"hoist"``, one large matrix product
    before the loop.
    """
    backend = backend or jax.default_backend()
    return "loop" if backend == "cpu" else "hoist"


# --------------------------------------------------------------------------- kernels
#
# A kernel describes one cell kind for the generic custom-VJP driver below:
#   fwd(wh, state, xp)            -> (new_state, y, residual)   one step, state a tuple
#   bwd(wh, res, prev, dstate, dy) -> (dprev, dxp, dhp)          one step backwards
#       (its ``wh`` also holds ``w_hh_T``, the transpose, made once outside the loop:
#       a transposed operand inside the loop was measured to cost ~10% on XLA:CPU):
#       dxp: gradient w.r.t. the projected input (G*H,), dhp: w.r.t. the recurrent
#       product prev_h @ w_hh (or the kernel's own recurrent operand, see rec_input).
# `wh` is the dict of recurrent parameters (w_hh and, for the GRU, b_hn).


def _mm(a, b):
    return jnp.matmul(a, b, preferred_element_type=jnp.result_type(a, b))


def _lead(b, ndim: int):
    """``b`` with leading unit axes up to ``ndim`` (explicit broadcasting)."""
    return b.reshape((1,) * (ndim - b.ndim) + b.shape)


def _mask(v, a):
    """The step mask ``v`` (a scalar, or ``(B,)`` on the natively batched path) shaped
    to broadcast against ``a`` (``(..., H)``)."""
    return v.reshape(v.shape + (1,) * (a.ndim - v.ndim))


def _gate_columns(H: int, n_blocks: int, tanh_block: int, dtype):
    """Per-column constants that give a row of gate blocks all its activations in ONE
    elementwise op: ``act = s * sigmoid(s * z) + k`` is ``sigmoid(z)`` where ``s = 1,
    k = 0`` and ``tanh(z) = 2 sigmoid(2 z) - 1`` in the block ``tanh_block`` (``s = 2,
    k = -1``). Returns ``(block index, s, k)``, each ``(n_blocks * H,)``."""
    blk = jnp.repeat(jnp.arange(n_blocks), H)
    s = jnp.where(blk == tanh_block, 2.0, 1.0).astype(dtype)
    k = jnp.where(blk == tanh_block, -1.0, 0.0).astype(dtype)
    return blk, s, k


@dataclasses.dataclass(frozen=True)
class _LSTMKernel:
    """LSTM, gate order (i, f, g, o); residual: the four activations ``[i, f, g, o]``,
    computed by one elementwise op over the ``(..., 4H)`` pre-activation (see
    :func:`_gate_columns`), so XLA emits one kernel for all gates instead of one per
    gate plus a concatenation."""

    H: int

    def fwd(self, wh, state, xp):
        h, c = state
        H = self.H
        z = xp + _mm(h, wh["w_hh"])
        _, s, k = (_lead(v, z.ndim) for v in _gate_columns(H, 4, 2, z.dtype))
        acts = s * jax.nn.sigmoid(s * z) + k
        i, f, g, o = acts[..., :H], acts[..., H : 2 * H], acts[..., 2 * H : 3 * H], acts[..., 3 * H :]
        c2 = f * c + i * g
        h2 = o * jnp.tanh(c2)
        return (h2, c2), h2, acts

    def bwd(self, wh, acts, prev, dstate, dy):
        H = self.H
        _, c = prev
        dh, dc = dstate
        dh = dh + dy
        i, f, g, o = acts[..., :H], acts[..., H : 2 * H], acts[..., 2 * H : 3 * H], acts[..., 3 * H :]
        tc = jnp.tanh(f * c + i * g)
        dc = dc + dh * o * (1.0 - tc * tc)
        blk = _lead(_gate_columns(H, 4, 2, acts.dtype)[0], acts.ndim)
        # dz = [dc, dc, dc, dh] * [g, c, i, tanh(c')] * act'(z), as whole-row ops
        four = lambda v: jnp.concatenate([v, v, v, v], axis=-1)  # noqa: E731
        src = jnp.where(blk == 3, four(dh), four(dc))
        other = jnp.concatenate([g, c, i, tc], axis=-1)
        deriv = jnp.where(blk == 2, 1.0 - acts * acts, acts * (1.0 - acts))
        dz = src * other * deriv
        dh_prev = _mm(dz, wh["w_hh_T"])
        return (dh_prev, dc * f), dz, dz


@dataclasses.dataclass(frozen=True)
class _RNNKernel:
    H: int
    relu: bool

    def fwd(self, wh, state, xp):
        (h,) = state
        pre = xp + _mm(h, wh["w_hh"])
        h2 = jax.nn.relu(pre) if self.relu else jnp.tanh(pre)
        return (h2,), h2, h2

    def bwd(self, wh, h2, prev, dstate, dy):
        (dh,) = dstate
        dh = dh + dy
        if self.relu:
            da = jnp.where(h2 > 0, dh, jnp.zeros((), dh.dtype))
        else:
            da = dh * (1.0 - h2 * h2)
        return (_mm(da, wh["w_hh_T"]),), da, da


@dataclasses.dataclass(frozen=True)
class _GRUKernel:
    """GRU with reset after (cuDNN form): residual ``[r, z, n, hn]`` with
    ``hn = h @ W_hn + b_hn``."""

    H: int

    def fwd(self, wh, state, xp):
        (h,) = state
        H = self.H
        hp = _mm(h, wh["w_hh"])
        r = jax.nn.sigmoid(xp[..., :H] + hp[..., :H])
        z = jax.nn.sigmoid(xp[..., H : 2 * H] + hp[..., H : 2 * H])
        hn = hp[..., 2 * H :] + _lead(wh["b_hn"], hp.ndim)
        n = jnp.tanh(xp[..., 2 * H :] + r * hn)
        h2 = (1.0 - z) * n + z * h
        return (h2,), h2, jnp.concatenate([r, z, n, hn], axis=-1)

    def bwd(self, wh, res, prev, dstate, dy):
        H = self.H
        (h,) = prev
        (dh,) = dstate
        dh = dh + dy
        r, z, n, hn = res[..., :H], res[..., H : 2 * H], res[..., 2 * H : 3 * H], res[..., 3 * H :]
        dan = dh * (1.0 - z) * (1.0 - n * n)
        dar = dan * hn * r * (1.0 - r)
        daz = dh * (h - n) * z * (1.0 - z)
        dhn = dan * r
        dxp = jnp.concatenate([dar, daz, dan], axis=-1)
        dhp = jnp.concatenate([dar, daz, dhn], axis=-1)
        return (dh * z + _mm(dhp, wh["w_hh_T"]),), dxp, dhp


@dataclasses.dataclass(frozen=True)
class _GRUCKernel:
    """GRU with reset before (Cho et al.): residual ``[r, z, n]``; the candidate's
    recurrent operand is ``r * h``."""

    H: int

    def fwd(self, wh, state, xp):
        (h,) = state
        H = self.H
        w = wh["w_hh"]
        rz = jax.nn.sigmoid(xp[..., : 2 * H] + _mm(h, w[:, : 2 * H]))
        r, z = rz[..., :H], rz[..., H:]
        n = jnp.tanh(xp[..., 2 * H :] + _mm(r * h, w[:, 2 * H :]))
        h2 = (1.0 - z) * n + z * h
        return (h2,), h2, jnp.concatenate([r, z, n], axis=-1)

    def bwd(self, wh, res, prev, dstate, dy):
        H = self.H
        wt = wh["w_hh_T"]
        (h,) = prev
        (dh,) = dstate
        dh = dh + dy
        r, z, n = res[..., :H], res[..., H : 2 * H], res[..., 2 * H :]
        dan = dh * (1.0 - z) * (1.0 - n * n)
        drh = _mm(dan, wt[2 * H :])
        dar = drh * h * r * (1.0 - r)
        daz = dh * (h - n) * z * (1.0 - z)
        drz = jnp.concatenate([dar, daz], axis=-1)
        dh_prev = dh * z + drh * r + _mm(drz, wt[: 2 * H])
        dxp = jnp.concatenate([drz, dan], axis=-1)
        return (dh_prev,), dxp, dxp


def _kernel(cell):
    if type(cell) is LSTM:
        return _LSTMKernel(cell.hidden_size)
    if type(cell) is SimpleRNN:
        return _RNNKernel(cell.hidden_size, cell.nonlinearity == "relu")
    if cell.reset_after:
        return _GRUKernel(cell.hidden_size)
    return _GRUCKernel(cell.hidden_size)


def _recurrent_params(params):
    return {k: v for k, v in params.items() if k in ("w_hh", "b_hn")}


# --------------------------------------------------------------------------- driver


def _flat(f, *arrays):
    """``f`` applied to ``(N, .)`` views of ``(T, ..., .)`` arrays, the result viewed back:
    products over all steps (and batch rows) as one 2-D matrix product, so that their
    transposes (the weight gradients) contract over one axis without a relayout."""
    lead = arrays[0].shape[:-1]
    out = f(*(a.reshape((-1, a.shape[-1])) for a in arrays))
    return out.reshape(lead + out.shape[-1:])


def _project_all(params, xs):
    return _flat(lambda x: _mm(x, params["w_ih"]) + params["b"][None, :], xs)


def _forward(kernel, projection, params, xs, state, valid):
    """Forward scan. Returns ``((state, ys), (prev_states, residuals))``.

    The loop writes only the new states and the residuals (every kernel's output is its
    new ``h``); the outputs (``h`` zeroed at padding) and the states before each step
    (the saved states shifted by one) are formed outside it, as whole-array ops: fewer
    writes per step, and no copy of the carry."""
    wh = _recurrent_params(params)
    w_ih, b = params["w_ih"], params["b"]

    def masked(v, new, old):
        if v is None:
            return new
        return tuple(jnp.where(_mask(v, n), n, o) for n, o in zip(new, old))

    if projection == "carry":

        def body(carry, inp):
            st, xp = carry
            v, x_next = inp
            new, _, res = kernel.fwd(wh, st, xp)
            new = masked(v, new, st)
            return (new, _mm(x_next, w_ih) + _lead(b, x_next.ndim)), (new, res)

        x_next = jnp.concatenate([xs[1:], jnp.zeros_like(xs[:1])], axis=0)
        (st, _), (states, res) = jax.lax.scan(
            body, (tuple(state), _mm(xs[0], w_ih) + _lead(b, xs.ndim - 1)), (valid, x_next)
        )
    else:

        def body(st, inp):
            v, x = inp
            xp = x if projection == "hoist" else _mm(x, w_ih) + _lead(b, x.ndim)
            new, _, res = kernel.fwd(wh, st, xp)
            new = masked(v, new, st)
            return new, (new, res)

        inputs = _project_all(params, xs) if projection == "hoist" else xs
        st, (states, res) = jax.lax.scan(body, tuple(state), (valid, inputs))
    h = states[0]
    ys = h if valid is None else jnp.where(_mask(valid, h), h, jnp.zeros((), h.dtype))
    prevs = tuple(jnp.concatenate([s0[None], s[:-1]], axis=0) for s0, s in zip(state, states))
    return (st, ys), (prevs, res)


def _shared_preactivation(kernel) -> bool:
    """Whether the step sees ``xp`` and ``hp`` only through ``xp + hp`` (LSTM, SimpleRNN)."""
    return isinstance(kernel, (_LSTMKernel, _RNNKernel))


def _backward(kernel, wh, valid, prevs, res, dstate, dys):
    """Backward scan: the pre-activation gradients ``(dXP, dHP)``, each ``(T, G * H)``,
    and the gradient of the initial state."""
    wh = dict(wh, w_hh_T=wh["w_hh"].T)  # the transpose, made once outside the loop

    def body(ds, inp):
        v, r, prev, dy = inp
        dprev, dxp, dhp = kernel.bwd(wh, r, prev, ds, dy)
        if v is not None:
            dprev = tuple(jnp.where(_mask(v, a), a, b) for a, b in zip(dprev, ds))
            zero = jnp.zeros((), dxp.dtype)
            dxp = jnp.where(_mask(v, dxp), dxp, zero)
            dhp = jnp.where(_mask(v, dhp), dhp, zero)
        return dprev, (dxp, dhp)

    if _shared_preactivation(kernel):
        inner = body

        def body(ds, inp):
            ds, (dxp, _) = inner(ds, inp)
            return ds, (dxp, None)

    ds0, (dxp, dhp) = jax.lax.scan(body, tuple(dstate), (valid, res, prevs, dys), reverse=True)
    return dxp, dhp, ds0


def _recurrent_operand(kernel, params, prevs, res):
    """What multiplies ``w_hh`` at each step, ``(T, G * H)``: ``H_prev @ w_hh`` (plus
    ``b_hn`` in its n block for the cuDNN GRU; ``[H_prev @ W_rz, (R * H_prev) @ W_n]`` for
    the GRU of Cho et al.). Its value is never used: it exists so that autodiff turns
    the backward pass's ``dHP`` into ``dW_hh = H_prev^T dHP`` (and ``db_hn``), one
    product that, under ``vmap``, contracts over batch and time together."""
    h_prev = prevs[0]
    w = params["w_hh"]
    if isinstance(kernel, _GRUCKernel):
        H = kernel.H
        rh = res[..., :H] * h_prev
        return jnp.concatenate(
            [_flat(lambda a: a @ w[:, : 2 * H], h_prev), _flat(lambda a: a @ w[:, 2 * H :], rh)],
            axis=-1,
        )
    hp = _flat(lambda a: a @ w, h_prev)
    if "b_hn" in params:
        H = kernel.H
        hp = hp + _lead(jnp.concatenate([jnp.zeros((2 * H,), hp.dtype), params["b_hn"]]), hp.ndim)
    return hp


@functools.lru_cache(maxsize=None)
def _gradient_router(kernel):
    """A custom-VJP identity on precomputed outputs whose backward pass runs the
    recurrence backwards and routes ``dXP`` / ``dHP`` / ``ds0`` to the placeholders
    ``xp`` / ``hp`` / ``state``. Its only parameter cotangents come from the ordinary
    (vmap-aware) products that built ``xp`` and ``hp``."""

    shared = _shared_preactivation(kernel)

    @jax.custom_vjp
    def route(xp, hp, state, saved):
        return saved[0], saved[1]

    def route_fwd(xp, hp, state, saved):
        return (saved[0], saved[1]), saved[2:]

    def route_bwd(saved, g):
        prevs, res, wh, valid = saved
        dstate, dys = g
        dxp, dhp, ds0 = _backward(kernel, wh, valid, prevs, res, dstate, dys)
        # LSTM / SimpleRNN: xp and hp enter only as their sum, so dXP == dHP and the
        # caller passed hp=None, xp = the sum: one (T, G*H) buffer instead of two.
        return dxp, (None if shared else dhp), ds0, None

    route.defvjp(route_fwd, route_bwd)
    return route


def _fused(kernel, projection, params, xs, state, valid):
    """The fast path: a forward scan that saves the activations (outside autodiff), and
    :func:`_gradient_router` to give it the hand-written backward pass."""
    sg = jax.lax.stop_gradient
    (st, ys), (prevs, res) = _forward(kernel, projection, sg(params), sg(xs), sg(state), valid)
    prevs, res = sg(prevs), sg(res)
    xp = _project_all(params, xs)
    hp = _recurrent_operand(kernel, params, prevs, res)
    if _shared_preactivation(kernel):
        xp, hp = xp + hp, None
    wh = sg(_recurrent_params(params))
    return _gradient_router(kernel)(xp, hp, state, (st, ys, prevs, res, wh, valid))


def _remat_scan(cell, params, state, xs, valid, chunk: int):
    """The reference masked scan, checkpointed every ``chunk`` steps (autodiff)."""
    from rnnjax import sequence

    T = xs.shape[0]
    n = -(-T // chunk)
    pad = n * chunk - T
    v = jnp.ones((T,), bool) if valid is None else valid
    if pad:
        xs = jnp.concatenate([xs, jnp.zeros((pad,) + xs.shape[1:], xs.dtype)])
        v = jnp.concatenate([v, jnp.zeros((pad,), bool)])
    fn = functools.partial(cell.step, params)

    @jax.checkpoint
    def chunk_body(st, inp):
        vc, xc = inp
        return sequence.scan_masked(fn, st, xc, vc)

    xs = xs.reshape((n, chunk) + xs.shape[1:])
    v = v.reshape((n, chunk))
    state, ys = jax.lax.scan(chunk_body, state, (v, xs))
    ys = ys.reshape((n * chunk,) + ys.shape[2:])[:T]
    return state, ys


def run(cell, params, state, xs, valid, opts: Optional[Options] = None):
    """Scan a supported cell over prepared inputs: the fast path of ``run_cell``.

    Args:
      cell: any cell with ``remat`` set; otherwise one for which :func:`supports` is true.
      params: its parameters.
      state: its initial state (NamedTuple).
      xs: ``(T, I)`` in processing order, padding zeroed (see
        :func:`rnnjax.sequence.prepare`); or, natively batched (not for ``remat``),
        ``(T, B, I)`` with a state whose leaves have a leading ``B`` axis.
      valid: ``(T,)`` (or ``(T, B)``) bool, true at real steps, or ``None`` when all
        are real.
      opts: :class:`Options` (default :func:`current_options`).

    Returns:
      ``(state, ys)``, ``ys`` of shape ``(T, H)`` (or ``(T, B, H)``) in processing order, zero where
      ``valid`` is false, the state frozen after the last valid step.
    """
    opts = opts or current_options()
    T = xs.shape[0]
    if opts.remat:
        chunk = math.ceil(math.sqrt(T)) if opts.remat is True else int(opts.remat)
        return _remat_scan(cell, params, state, xs, valid, max(1, min(chunk, T)))
    if not supports(cell):
        raise ValueError(f"cell must be an LSTM without projection, a GRU or a SimpleRNN; got {cell!r}")
    projection = default_projection() if opts.projection == "auto" else opts.projection
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(state))
    xs = xs.astype(jnp.result_type(xs, params["w_ih"]))
    st, ys = _fused(_kernel(cell), projection, params, xs, tuple(s.astype(dtype) for s in state), valid)
    return type(state)(*st), ys

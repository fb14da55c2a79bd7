r"""Parallel-in-time evaluation: linear recurrences by parallel scans, nonlinear ones by
Newton's method over the whole sequence.

Two ways around "step ``t`` waits for step ``t - 1``", both run by :func:`rnnjax.engine.run`
when ``ScanConfig(method="parallel")`` (options in :class:`ParallelOptions`, the
``parallel`` field of the config):

- **Linear recurrences** ``h_t = a_t * h_{t-1} + b_t`` (diagonal ``a_t``, real or complex):
  cells with a linear form (:class:`rnnjax.MinGRU`, :class:`rnnjax.MinLSTM`,
  :class:`rnnjax.LRU`, :class:`rnnjax.RGLRU`, :class:`rnnjax.S6`) give the coefficients
  of all steps at once (and, where they have them, a read-out of the states and their
  own segment-start coefficients) and the recurrence is solved by :func:`linear_scan`. Padding, segment starts (resets), recurrent dropout and
  zoneout are folded into the coefficients, so every guarantee of the sequential path
  holds: at a segment start ``a_t = 0`` and ``b_t`` reads the initial state; past the
  length ``a_t = 1, b_t = 0`` (the state is frozen, outputs are zero).
- **Nonlinear recurrences** (any other cell: :class:`rnnjax.SimpleRNN`, :class:`rnnjax.GRU`,
  :class:`rnnjax.LSTM`, :class:`rnnjax.EchoState`): the states of all steps are the root
  of ``h_t - f_t(h_{t-1}) = 0``, found by Newton iterations whose linear step is again a
  linear recurrence (DEER, Lim et al. 2024): full Jacobians (``jacobian="full"``) or their
  diagonal (``"diag"``: quasi-DEER, Gonzalez et al. 2024), optionally damped, or with
  ELK's trust region (``solver="elk"``). The diagonal is that of the true Jacobian at
  the current iterate (:func:`jacobian_diagonal`: ``S`` one-hot Jacobian-vector products
  of the true step, batched ``8`` at a time; about ``S`` times the cost of one step,
  like the full Jacobian, but ``O(T S)`` memory and an elementwise linear step). The
  iteration stops when the residual ``max_t |h_t - f_t(h_{t-1})|`` is at most ``tol``;
  if it is not reached within ``max_iter`` iterations (or is not finite), the sequential
  scan is run instead, a warning is issued and the diagnostics say so
  (:func:`rnnjax.parallel_solve` returns them). An unconverged iterate is never returned.

Derivatives. Linear scans are differentiated by autodiff (every order, both modes).
The Newton solve is a :func:`jax.custom_vjp`: its reverse-mode derivative follows the
implicit function theorem, one linear recurrence backward in time with the transposed
exact Jacobians (as a parallel scan with ``jacobian="full"``, as a sequential scan of
vector-Jacobian products with ``"diag"``, where forming full Jacobians would cost
``O(T H^2)`` memory). Forward mode (``jvp``, ``jacfwd``) and second order through the
Newton solve are not available: they raise an error saying so, never a wrong number.

Damping. ``damping=d`` shrinks every Jacobian used in the linear step so that its norm
(diagonal: largest magnitude; full: largest absolute row sum) is at most ``1 / (1 + d)``.
The linear step is then contracting and the iterates stay bounded for bounded
nonlinearities; any choice of the linear step keeps the exact solution as the fixed point
and, with a known initial state, is exact after at most ``T`` iterations.

ELK (``solver="elk"``, Gonzalez et al. 2024). Each step minimises
``sum_t |h_t - f_t(h~_{t-1}) - J_t (h_{t-1} - h~_{t-1})|^2 + lambda |h_t - h~_t|^2``
around the current iterate ``h~`` (a Levenberg-Marquardt trust region): the posterior
mean of a linear-Gaussian state-space model whose observations are the iterate, computed
by a Kalman filter and smoother. With diagonal Jacobians (quasi-ELK) every part is
parallel: the filter variances are a Moebius recursion composed as 2x2 matrices by an
associative scan, the filter and smoother means are linear scans. With full Jacobians
the filter and smoother run as sequential scans of ``S x S`` products (``O(T S^3)``).
``lambda`` starts at ``trust`` and adapts: a step that lowers ``sum_t |h_t -
f_t(h_{t-1})|^2`` is accepted and ``lambda`` halved (quartered where the undamped Newton
step would have lowered it further: the region grows back to the full step); otherwise the
step is rejected (the iterate kept, the iteration counted) and ``lambda`` multiplied by 4.
``lambda -> 0`` is DEER. Beside the trust region's iterate the solve carries DEER's own
(one more Jacobian and linear scan per iteration) and stops when either meets the
tolerance: a residual that must rise before it falls (a strongly expansive recurrence) can
stall the trust region, never the Newton iterate, whose solved prefix grows by at least
one step per iteration. So ELK converges wherever DEER does, in no more iterations (a GRU
with recurrent blocks at spectral radius 3: 51 iterations each, where the trust region
alone stalled at a residual of 0.06).

Shapes: ``T`` time, ``B`` batch axes (one flat axis inside), ``S`` the flattened state size.

References:
  Lim, Zhu, Selfridge & Kasim (2024). Parallelizing non-linear sequential models over the
  sequence length (DEER).
  Gonzalez, Warrington, Smith & Linderman (2024). Towards scalable and stable
  parallelization of nonlinear RNNs (quasi-DEER, ELK).
  Blelloch (1990). Prefix sums and their applications.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import checks

__all__ = [
    "ParallelOptions",
    "NewtonInfo",
    "linear_scan",
    "default_scan",
    "NotConvergedWarning",
    "jacobian_diagonal",
]

SCANS = ("auto", "associative", "chunked", "sequential")
JACOBIANS = ("auto", "full", "diag")
SOLVERS = ("deer", "elk")
_DOWN, _UP = 0.5, 4.0  # ELK's trust-region weight after an accepted / a rejected step


class NotConvergedWarning(RuntimeWarning):
    """The Newton solve did not converge; the sequential scan's result was used.

    Example:
      >>> import warnings
      >>> from rnnjax.parallel import NotConvergedWarning
      >>> issubclass(NotConvergedWarning, RuntimeWarning)   # filter it like any warning
      True
    """


@dataclasses.dataclass(frozen=True)
class ParallelOptions:
    """How ``ScanConfig(method="parallel")`` evaluates a sequence (hashable, static).

    Attributes:
      scan: the linear-recurrence solver: ``"associative"`` (``jax.lax.associative_scan``,
        ``O(log T)`` depth, about ``2T`` products), ``"chunked"`` (chunks of ``chunk``
        steps run side by side, then a short scan across chunks: depth about
        ``2 sqrt(T)``, work about ``3T``), ``"sequential"`` (``lax.scan``, the reference)
        or ``"auto"`` (:func:`default_scan`, per backend, from measurements).
      chunk: chunk length of the chunked scan (``None``: about ``sqrt(T)``).
      jacobian: Newton's linear step: ``"full"`` (DEER, ``S x S`` Jacobians, ``O(S^3)``
        per step), ``"diag"`` (quasi-DEER) or ``"auto"`` (``"full"`` for ``S <= 16``).
      tol: convergence threshold on ``max_t |h_t - f_t(h_{t-1})|``.
      max_iter: iteration cap; not converged by then means the sequential fallback.
      damping: ``None`` or a number ``>= 0`` (see the module docstring).
      solver: ``"deer"`` (Newton steps, optionally damped) or ``"elk"`` (Newton steps
        with a trust region, solved as a Kalman smoother: ELK, and quasi-ELK with
        ``jacobian="diag"``; see the module docstring).
      trust: ELK's initial trust-region weight ``lambda > 0`` (larger: shorter steps),
        adapted by the solve: halved after a step that lowers the residual, multiplied
        by 4 (and the step rejected) after one that does not. ELK also carries DEER's
        iterate and stops at the first of the two to converge (see the module docstring).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> opts = rj.parallel.ParallelOptions(jacobian="diag", tol=1e-6, damping=0.5)
      >>> cfg = rj.ScanConfig(method="parallel", parallel=opts)
      >>> cell = rj.GRU(2, 3)
      >>> _, ys = rj.unroll(cell, cell.init(jax.random.key(0)), jnp.ones((5, 2)), config=cfg)
      >>> ys.shape
      (5, 3)
      >>> elk = rj.parallel.ParallelOptions(jacobian="diag", solver="elk")   # quasi-ELK
      >>> _, _, info = rj.parallel_solve(cell, cell.init(jax.random.key(0)), jnp.ones((5, 2)),
      ...                                options=elk)
      >>> bool(info.converged)
      True
    """

    scan: str = "auto"
    chunk: Optional[int] = None
    jacobian: str = "auto"
    tol: float = 1e-5
    max_iter: int = 100
    damping: Optional[float] = None
    solver: str = "deer"
    trust: float = 0.01

    def __post_init__(self):
        checks.choice("scan", self.scan, SCANS)
        if self.chunk is not None:
            checks.integer("chunk", self.chunk, 1)
        checks.choice("jacobian", self.jacobian, JACOBIANS)
        checks.number("tol", self.tol, 0.0, min_open=True)
        checks.integer("max_iter", self.max_iter, 1)
        if self.damping is not None:
            checks.number("damping", self.damping, 0.0)
        checks.choice("solver", self.solver, SOLVERS)
        checks.number("trust", self.trust, 0.0, min_open=True)


class NewtonInfo(NamedTuple):
    """Diagnostics of a Newton solve (arrays: they may be traced).

    Attributes:
      iterations: linear solves done (int32).
      residual: final ``max_t |h_t - f_t(h_{t-1})|`` of the Newton iterate.
      converged: whether ``residual <= tol`` within ``max_iter`` iterations.
      fell_back: whether the sequential scan's result was returned instead.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.SimpleRNN(2, 3)
      >>> _, _, info = rj.parallel_solve(cell, cell.init(jax.random.key(0)), jnp.ones((6, 2)))
      >>> info._fields
      ('iterations', 'residual', 'converged', 'fell_back')
    """

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array
    fell_back: jax.Array


def default_scan(backend: Optional[str] = None) -> str:
    """The linear scan ``scan="auto"`` resolves to on ``backend`` (default: JAX's).

    XLA:CPU (two cores): ``"sequential"``. A diagonal linear recurrence is a few
    multiply-adds per step, which XLA:CPU runs at well under a microsecond per step; at
    B=1, H=64, T=16384 (forward and training step) and at B=16, T=4096 the sequential
    scan measured faster than ``"chunked"`` (2-3x) and ``"associative"`` (4-10x), whose
    extra work and many passes over memory lose on two cores. The parallel cells are fast
    on CPU because nothing in their recurrence is a matrix product, not because of the
    scan. GPU and TPU: ``"associative"`` (the classic choice on wide hardware).

    Example:
      >>> from rnnjax.parallel import default_scan
      >>> default_scan("cpu"), default_scan("gpu")
      ('sequential', 'associative')
    """
    backend = backend or jax.default_backend()
    return "sequential" if backend == "cpu" else "associative"


# --------------------------------------------------------------------------- linear scans


def _mul(a, h, full):
    """``a_t h`` for diagonal (``a`` like ``h``) or full (``a`` ``(..., S, S)``) ``a``."""
    return jnp.einsum("...ij,...j->...i", a, h) if full else a * h


def _compose(a1, a2, full):
    """The coefficient of two steps in a row: ``a2 a1``."""
    return jnp.einsum("...ij,...jk->...ik", a2, a1) if full else a2 * a1


def _assoc(a, b, full):
    def op(e1, e2):
        a1, b1 = e1
        a2, b2 = e2
        return _compose(a1, a2, full), _mul(a2, b1, full) + b2

    return jax.lax.associative_scan(op, (a, b), axis=0)[1]


def _sequential(a, b, h0, full):
    def body(h, ab):
        h = _mul(ab[0], h, full) + ab[1]
        return h, h

    return jax.lax.scan(body, h0, (a, b))[1]


def _chunked(a, b, h0, full, chunk):
    T = a.shape[0]
    L = chunk or max(1, int(round(T**0.5)))
    L = min(L, T)
    n = -(-T // L)
    pad = n * L - T
    if pad:  # identity steps at the end
        ident = jnp.eye(a.shape[-1], dtype=a.dtype) if full else jnp.ones((), a.dtype)
        a = jnp.concatenate([a, jnp.broadcast_to(ident, (pad,) + a.shape[1:])])
        b = jnp.concatenate([b, jnp.zeros((pad,) + b.shape[1:], b.dtype)])
    # (L, n, ...): step within chunk first, chunks side by side
    ac = jnp.swapaxes(a.reshape((n, L) + a.shape[1:]), 0, 1)
    bc = jnp.swapaxes(b.reshape((n, L) + b.shape[1:]), 0, 1)

    def local(carry, ab):
        p, h = carry
        p = _compose(p, ab[0], full)
        h = _mul(ab[0], h, full) + ab[1]
        return (p, h), (p, h)

    p0 = jnp.broadcast_to(
        jnp.eye(a.shape[-1], dtype=a.dtype) if full else jnp.ones((), a.dtype), ac.shape[1:]
    )
    h00 = jnp.zeros(bc.shape[1:], jnp.result_type(a.dtype, b.dtype))
    _, (P, Hl) = jax.lax.scan(local, (p0, h00), (ac, bc))  # (L, n, ...)
    # the state entering each chunk: a scan over the n chunk ends
    starts = _sequential(P[-1], Hl[-1], h0, full)  # state at each chunk's end
    h_in = jnp.concatenate([h0[None], starts[:-1]], axis=0)  # (n, ...)
    hs = _mul(P, h_in[None], full) + Hl
    hs = jnp.swapaxes(hs, 0, 1).reshape((n * L,) + hs.shape[2:])
    return hs[:T]


def linear_scan(a, b, h0, *, scan: str = "auto", chunk: Optional[int] = None):
    r"""All states of the linear recurrence :math:`h_t = a_t h_{t-1} + b_t`.

    Args:
      a: ``(T, *B, S)`` (diagonal) or ``(T, *B, S, S)`` (full) coefficients, real or complex.
      b: ``(T, *B, S)``.
      h0: ``(*B, S)``, the state before the first step.
      scan: ``"associative"``, ``"chunked"``, ``"sequential"`` or ``"auto"``
        (:func:`default_scan`).
      chunk: chunk length of ``"chunked"`` (default about ``sqrt(T)``).

    Returns:
      ``(T, *B, S)``: ``h_1 ... h_T``. Derivatives of every order, both modes: a
      :func:`jax.custom_jvp` whose tangent is the same linear recurrence with inputs
      ``da_t h_{t-1} + db_t``, so reverse mode is one more scan backward in time carrying
      only the adjoint, with ``da`` and ``db`` formed outside the loop (on XLA:CPU this
      measured about 9x faster than autodiff of the scan in a minGRU training step).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import parallel
      >>> a, b = jnp.full((4, 1), 0.5), jnp.ones((4, 1))
      >>> parallel.linear_scan(a, b, jnp.zeros(1), scan="associative")[:, 0].tolist()
      [1.0, 1.5, 1.75, 1.875]
    """
    checks.choice("scan", scan, SCANS)
    a, b, h0 = jnp.asarray(a), jnp.asarray(b), jnp.asarray(h0)
    if a.shape[0] == 0:
        return b
    scan = default_scan() if scan == "auto" else scan
    dt = jnp.result_type(a.dtype, b.dtype, h0.dtype)
    return _linear_scan(a.astype(dt), b.astype(dt), h0.astype(dt), scan, chunk)


def _scan_impl(a, b, h0, scan, chunk):
    full = a.ndim == b.ndim + 1
    if scan == "sequential":
        return _sequential(a, b, h0, full)
    if scan == "chunked":
        return _chunked(a, b, h0, full, chunk)
    b = b.at[0].add(_mul(a[0], h0, full))
    return _assoc(a, b, full)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _linear_scan(a, b, h0, scan, chunk):
    return _scan_impl(a, b, h0, scan, chunk)


@_linear_scan.defjvp
def _linear_scan_jvp(scan, chunk, primals, tangents):
    a, b, h0 = primals
    da, db, dh0 = tangents
    full = a.ndim == b.ndim + 1
    h = _scan_impl(a, b, h0, scan, chunk)
    hp = jnp.concatenate([h0[None], h[:-1]], axis=0)
    return h, _scan_impl(a, _mul(da, hp, full) + db, dh0, scan, chunk)


# --------------------------------------------------------------------------- linear cells


def _lead_to(a, ndim):
    return a.reshape((1,) * (ndim - a.ndim) + a.shape)


def _expand(mask, ndim):
    return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))


def project_rows(cell, params, xs):
    """``cell.project`` of ``xs`` ``(T, *B, I)`` computed on the 2-D view ``(T * B, I)``.

    The same values; the input product's weight gradient is then one 2-D product over all
    rows. On the stacked 3-D array XLA:CPU transposes the whole ``(T, *B, P)`` cotangent
    before a product contracting over two axes: measured 3.9x slower for the projection's
    value and gradient at B=1, T=16384, I=32, P=128.
    """
    lead = xs.shape[:-1]
    xp = cell.project(params, xs.reshape((-1, xs.shape[-1])))
    return jax.tree_util.tree_map(lambda a: a.reshape(lead + a.shape[1:]), xp)


def refuse_regularisers(cell, form: str, m_seq, rec_fixed, zrate) -> None:
    """A whole-sequence form that cannot take recurrent dropout or zoneout raises a
    ``ValueError`` naming them (they act on a state that form never forms step by step).

    Example:
      >>> import rnnjax as rj
      >>> from rnnjax.parallel import refuse_regularisers
      >>> refuse_regularisers(rj.MLSTM(2, 4), "chunkwise", {}, None, 0.0)   # nothing to refuse
    """
    if rec_fixed is not None or m_seq.get("rec") is not None or m_seq.get("keep") is not None:
        raise ValueError(
            f"{type(cell).__name__}'s {form} form takes no recurrent dropout or sampled "
            "zoneout; use ScanConfig(method='sequential') for them"
        )
    if zrate:
        raise ValueError(
            f"{type(cell).__name__}'s {form} form takes no zoneout; got zoneout={zrate} (use "
            "ScanConfig(method='sequential'))"
        )


def _entered(valid, resets, shape):
    """``(T, *B)``: where a step reads the initial state as given (no valid step before
    it, or a reset)."""
    if valid is None:
        e = jnp.zeros(shape, bool).at[0].set(True)
    else:
        v = valid.astype(jnp.int32)
        e = (jnp.cumsum(v, axis=0) - v) == 0
    return e if resets is None else e | resets


def _fold_masks(a, b, h0, m_seq, rec_fixed, zrate):
    """The engine's masks folded into the coefficients: recurrent dropout, zoneout, a
    reset (``a = 0``, ``b`` reads the initial state), padding (``a = 1, b = 0``)."""
    nd = a.ndim
    rec = m_seq.get("rec") if m_seq.get("rec") is not None else rec_fixed
    keep = m_seq.get("keep")
    if rec is not None:  # the cell reads rec * s
        a = a * _lead_to(rec, nd).astype(a.dtype)
    # h_t = alpha * s + beta with s the state entered (the initial state after a reset)
    if keep is not None:
        k = keep.h
        a = jnp.where(k, jnp.ones((), a.dtype), a)
        b = jnp.where(k, jnp.zeros((), b.dtype), b)
    elif zrate:
        a = zrate + (1.0 - zrate) * a
        b = (1.0 - zrate) * b
    if m_seq.get("reset") is not None:
        r = _expand(m_seq["reset"], nd)
        b = jnp.where(r, b + a * h0[None], b)
        a = jnp.where(r, jnp.zeros((), a.dtype), a)
    valid = m_seq.get("valid")
    if valid is not None:
        v = _expand(valid, nd)
        a = jnp.where(v, a, jnp.ones((), a.dtype))
        b = jnp.where(v, b, jnp.zeros((), b.dtype))
    return a, b


def run_linear(cell, form, options, zrate, params, s0, xs, m_seq, rec_fixed):
    """The engine's parallel path for a cell with a diagonal linear form
    (:class:`rnnjax.cells.base.DiagonalLinearCell`): the form gives its coefficients
    (and, optionally, its segment-start coefficients and a read-out); the masks are
    applied here, once.

    ``xs`` ``(T, *B, I)`` in processing order, masks as in :func:`rnnjax.engine.run`.
    Returns ``(state, ys)``.
    """
    # the barrier keeps XLA:CPU from fusing the input product into the coefficients' and
    # scan's consumers: measured 5.5x faster in a minGRU training step (B=1, T=16384)
    xp = jax.lax.optimization_barrier(project_rows(cell, params, xs))
    a, b = form.coefficients(params, xp)  # (T, *B, S)
    h0 = form.to_scan(s0.h)  # (*B, S)
    regularised = m_seq.get("rec") is not None or m_seq.get("keep") is not None
    if (rec_fixed is not None or regularised) and jnp.iscomplexobj(a):
        raise ValueError(
            f"{type(cell).__name__} has a complex state: recurrent dropout and sampled "
            "zoneout act on its real and imaginary parts separately, which is not a "
            "diagonal complex recurrence; use ScanConfig(method='sequential') for them"
        )
    if form.entry_coefficients is not None or form.read_out is not None:
        refuse_regularisers(cell, "parallel", m_seq, rec_fixed, zrate)
    valid = m_seq.get("valid")
    if form.entry_coefficients is not None:  # a segment start of its own (the RG-LRU's)
        entered = _expand(_entered(valid, m_seq.get("reset"), a.shape[:-1]), a.ndim)
        s_in = jax.tree_util.tree_map(lambda leaf: leaf[None], s0)
        a_e, b_e = form.entry_coefficients(params, s_in, xp)
        a, b = jnp.where(entered, a_e, a), jnp.where(entered, b_e, b)
    a, b = _fold_masks(a, b, h0, m_seq, rec_fixed, zrate)
    hs = linear_scan(a, b, h0, scan=options.scan, chunk=options.chunk)
    hr = form.from_scan(hs).astype(s0.h.dtype)
    ys = hr if form.read_out is None else form.read_out(params, xp, hr).astype(s0.h.dtype)
    state = form.with_h(s0, hr[-1])
    if valid is not None:
        ys = jnp.where(_expand(valid, ys.ndim), ys, jnp.zeros((), ys.dtype))
        stepped = _expand(valid.any(axis=0), s0.h.ndim)
        state = jax.tree_util.tree_map(lambda n, o: jnp.where(stepped, n, o), state, s0)
    return state, ys


# --------------------------------------------------------------------------- Newton (DEER)


def _flatten(state):
    """State NamedTuple, leaves ``(*B, n_i)`` -> ``(*B, S)`` and the sizes."""
    leaves = jax.tree_util.tree_leaves(state)
    return jnp.concatenate(leaves, axis=-1), [leaf.shape[-1] for leaf in leaves]


def _unflatten(like, flat):
    leaves, treedef = jax.tree_util.tree_flatten(like)
    out, o = [], 0
    for leaf in leaves:
        n = leaf.shape[-1]
        out.append(flat[..., o : o + n].astype(leaf.dtype))
        o += n
    return jax.tree_util.tree_unflatten(treedef, out)


def _zero_cotangent(x):
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(np.shape(x), jax.dtypes.float0)


@jax.custom_jvp
def _no_forward_mode(x):
    return x


@_no_forward_mode.defjvp
def _no_forward_mode_jvp(primals, tangents):
    raise NotImplementedError(
        "ScanConfig(method='parallel') gives first-order reverse-mode derivatives of the "
        "Newton solve (grad, vjp) only; forward mode (jvp, jacfwd, linearize) and second "
        "order are not available through it: use method='sequential' for them"
    )


def _clip(J, damping, full):
    if damping is None:
        return J
    bound = 1.0 / (1.0 + damping)
    if full:
        norm = jnp.max(jnp.sum(jnp.abs(J), axis=-1), axis=-1)[..., None, None]
    else:
        norm = jnp.abs(J)
    return J * jnp.minimum(1.0, bound / jnp.maximum(norm, 1e-30))


def run_newton(body, options, params, s0, xs, m_seq, rec_fixed):
    """The engine's Newton path (see the module docstring): ``(state, ys, info)``.

    ``body(params, s0, rec_fixed, carry, (x, masks)) -> (carry, y)`` is one step of the
    engine's reference scan with batch axes; ``xs`` ``(T, *B, I)`` in processing order.
    """
    h0, sizes = _flatten(s0)
    S = h0.shape[-1]
    mode = options.jacobian
    if mode == "auto":
        mode = "full" if S <= 16 else "diag"
    full = mode == "full"
    opts = (options, full)

    def f_all(p, s, rf, hprev, x, m):
        """Every step's new state ``(T, *B, S)`` and output from the previous states."""

        def one(hp, inp):
            new, y = body(p, s, rf, _unflatten(s, hp), inp)
            return _flatten(new)[0].astype(hp.dtype), y

        return jax.vmap(one)(hprev, (x, m))

    def shift(h0, H):
        return jnp.concatenate([h0[None], H[:-1]], axis=0)

    @jax.custom_vjp
    def solve(p, s, x, m, rf):
        return _newton(f_all, opts, p, s, x, m, rf)

    def solve_fwd(p, s, x, m, rf):
        p, s, x, rf = _no_forward_mode((p, s, x, rf))
        H, info = _newton(f_all, opts, p, s, x, m, rf)
        return (H, info), (p, s, x, m, rf, H)

    def solve_bwd(res, cts):
        p, s, x, m, rf, H = _no_forward_mode(res)
        gH = cts[0]
        h0 = _flatten(s)[0]
        Hp = shift(h0, H)
        F = lambda p, s, x, rf, hp: f_all(p, s, rf, hp, x, m)[0]  # noqa: E731
        _, vjp = jax.vjp(F, p, s, x, rf, Hp)
        T = H.shape[0]
        if full:
            _, lin = jax.linearize(lambda hp: F(p, s, x, rf, hp), Hp)
            J = _jacobian_full(lin, Hp)
            JT = jnp.swapaxes(J, -1, -2)
            a = jnp.concatenate([jnp.zeros_like(JT[:1]), JT[1:][::-1]], axis=0)
            lam = linear_scan(
                a, gH[::-1], jnp.zeros_like(h0), scan=options.scan, chunk=options.chunk
            )[::-1]
        else:

            def back(lam_next, inp):
                hp, xt, mt, g = inp
                _, vj = jax.vjp(
                    lambda h: f_all(
                        p, s, rf, h[None], xt[None], jax.tree_util.tree_map(lambda a: a[None], mt)
                    )[0][0],
                    hp,
                )
                lam_t = g + vj(lam_next)[0]
                return lam_t, lam_t

            if T > 1:
                rest = jax.tree_util.tree_map(lambda a: a[1:], (Hp, x, m))
                _, lams = jax.lax.scan(back, gH[-1], rest + (gH[:-1],), reverse=True)
                lam = jnp.concatenate([lams, gH[-1:]], axis=0)
            else:
                lam = gH
        dp, ds, dx, drf, mu = vjp(lam)
        ds = jax.tree_util.tree_map(jnp.add, ds, _unflatten(s, mu[0]))
        dm = jax.tree_util.tree_map(_zero_cotangent, m)
        return dp, ds, dx, dm, drf

    solve.defvjp(solve_fwd, solve_bwd)
    H, info = solve(params, s0, xs, m_seq, rec_fixed)
    Hp = shift(h0, H)
    _, ys = f_all(params, s0, rec_fixed, Hp, xs, m_seq)
    state = _unflatten(s0, H[-1])
    return state, ys, info


def _jacobian_full(lin, Hp):
    """``(T, *B, S, S)`` Jacobians ``J[..., i, j] = d f_i / d h_j`` from a linear map of
    tangents ``(T, *B, S)``."""
    S = Hp.shape[-1]
    eye = jnp.eye(S, dtype=Hp.dtype)
    cols = jax.vmap(lambda e: lin(jnp.broadcast_to(e, Hp.shape)))(eye)  # (S_in, T, *B, S_out)
    return jnp.moveaxis(cols, 0, -1)


def jacobian_diagonal(f, hp, chunk: int = 8):
    """``f(hp)`` and the diagonal of ``f``'s Jacobian at ``hp``, exactly: one-hot
    Jacobian-vector products of the true step at the current iterate, ``chunk`` of them
    at a time (``S`` products in all, batched; memory ``chunk`` times that of ``hp``).

    Args:
      f: a function ``(T, *B, S) -> (T, *B, S)`` acting on each row ``(t, b)`` alone
        (every step's new state from its previous state).
      hp: ``(T, *B, S)``, the previous states.
      chunk: how many one-hot tangents to push at once.

    Returns:
      ``(f(hp), d)`` with ``d[..., i] = d f_i / d h_i`` at ``hp``, shape ``(T, *B, S)``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.parallel import jacobian_diagonal
      >>> cell = rj.GRU(2, 3)
      >>> p = cell.init(jax.random.key(0))
      >>> x, h = jnp.ones(2), jnp.full(3, 0.3)
      >>> step = lambda h: cell.step(p, rj.GRUState(h), x)[0].h
      >>> _, d = jacobian_diagonal(jax.vmap(step), h[None])
      >>> bool(jnp.allclose(d[0], jnp.diag(jax.jacfwd(step)(h)), atol=1e-6))
      True
    """
    S = hp.shape[-1]
    fh, lin = jax.linearize(f, hp)
    c = max(1, min(int(chunk), S))
    n = -(-S // c)
    ids = jnp.arange(n * c).reshape(n, c)

    def block(idx):
        e = jax.nn.one_hot(idx, S, dtype=hp.dtype)  # (c, S): rows past S are zero
        cols = jax.vmap(lambda v: lin(jnp.broadcast_to(v, hp.shape)))(e)  # (c, T, *B, S)
        return jnp.sum(cols * e.reshape((c,) + (1,) * (hp.ndim - 1) + (S,)), axis=-1)

    d = jax.lax.map(block, ids)  # (n, c, T, *B)
    d = d.reshape((n * c,) + hp.shape[:-1])[:S]
    return fh, jnp.moveaxis(d, 0, -1)


def _riccati_diag(a, r, scan):
    """ELK's filter variances for diagonal dynamics ``h_t = a_t h_{t-1} + w_t``,
    ``w_t ~ N(0, 1)``, observations with variance ``r``, known ``h_0`` (``P_0 = 0``):
    ``P_t = r (a_t^2 P_{t-1} + 1) / (a_t^2 P_{t-1} + 1 + r)``, a Moebius map of
    ``P_{t-1}``; composed as normalised 2x2 matrices, in parallel unless
    ``scan="sequential"``. Returns ``(P, P_pred)``, ``(T, *B, S)`` each."""
    a2 = (a * a).astype(jnp.result_type(a, jnp.float32))
    one = jnp.ones_like(a2)
    M = jnp.stack(
        [jnp.stack([r * a2, r * one], -1), jnp.stack([a2, (1.0 + r) * one], -1)], -2
    )  # (T, *B, S, 2, 2)

    def norm(m):
        return m / jnp.max(jnp.abs(m), axis=(-1, -2), keepdims=True)

    if scan == "sequential":

        def body(acc, m):
            acc = norm(m @ acc)
            return acc, acc

        eye = jnp.broadcast_to(jnp.eye(2, dtype=M.dtype), M.shape[1:])
        C = jax.lax.scan(body, eye, M)[1]
    else:
        C = jax.lax.associative_scan(lambda m1, m2: norm(m2 @ m1), M, axis=0)
    P = C[..., 0, 1] / C[..., 1, 1]
    Pp = jnp.concatenate([jnp.zeros_like(P[:1]), P[:-1]], axis=0)
    return P, a2 * Pp + 1.0


def _elk_step(J, c, y, h0, lam, full, options):
    """The trust-region Newton step as a Kalman smoother (ELK): the posterior mean of
    ``h_t = J_t h_{t-1} + c_t + w_t`` (``w_t ~ N(0, I)``) given observations
    ``y_t = h_t + v_t`` (``v_t ~ N(0, I / lam)``), i.e. the minimiser of
    ``sum_t |h_t - J_t h_{t-1} - c_t|^2 + lam |h_t - y_t|^2`` with ``h_0`` fixed."""
    r = 1.0 / lam
    scan = default_scan() if options.scan == "auto" else options.scan
    if not full:
        P, Pp = _riccati_diag(J, r, scan)
        K = Pp / (Pp + r)
        # filter means: m_t = (1 - K) (J m_{t-1} + c) + K y, a linear recurrence
        m = linear_scan((1.0 - K) * J, (1.0 - K) * c + K * y, h0, scan=scan, chunk=options.chunk)
        mp = J * jnp.concatenate([h0[None], m[:-1]], axis=0) + c  # predicted means
        # smoother: ms_t = G_t ms_{t+1} + (m_t - G_t mp_{t+1}), G_t = P_t J_{t+1} / Pp_{t+1}
        if m.shape[0] == 1:
            return m
        G = P[:-1] * J[1:] / Pp[1:]
        bs = m[:-1] - G * mp[1:]
        ms = linear_scan(G[::-1], bs[::-1], m[-1], scan=scan, chunk=options.chunk)[::-1]
        return jnp.concatenate([ms, m[-1:]], axis=0)
    S = J.shape[-1]
    eye = jnp.eye(S, dtype=J.dtype)

    def filt(carry, inp):
        m, P = carry
        A, ct, yt = inp
        mp = jnp.einsum("...ij,...j->...i", A, m) + ct
        Pp = A @ P @ jnp.swapaxes(A, -1, -2) + _lead_to(eye, A.ndim)
        # K = Pp (Pp + r I)^-1 (both symmetric)
        K = jnp.swapaxes(jnp.linalg.solve(Pp + r * _lead_to(eye, A.ndim), Pp), -1, -2)
        m = mp + jnp.einsum("...ij,...j->...i", K, yt - mp)
        P = Pp - K @ Pp
        P = 0.5 * (P + jnp.swapaxes(P, -1, -2))
        return (m, P), (m, P, mp, Pp)

    P0 = jnp.zeros(h0.shape + (S,), J.dtype)
    _, (m, P, mp, Pp) = jax.lax.scan(filt, (h0, P0), (J, c, y))
    if m.shape[0] == 1:
        return m

    def smooth(ms_next, inp):
        mt, Pt, A1, mp1, Pp1 = inp
        # G = P_t A_{t+1}^T Pp_{t+1}^-1
        G = jnp.swapaxes(jnp.linalg.solve(Pp1, A1 @ Pt), -1, -2)
        ms = mt + jnp.einsum("...ij,...j->...i", G, ms_next - mp1)
        return ms, ms

    _, ms = jax.lax.scan(smooth, m[-1], (m[:-1], P[:-1], J[1:], mp[1:], Pp[1:]), reverse=True)
    return jnp.concatenate([ms, m[-1:]], axis=0)


def _newton(f_all, opts, params, s0, xs, m_seq, rec_fixed):
    options, full = opts
    h0, sizes = _flatten(s0)
    T = xs.shape[0]
    dt = h0.dtype
    f = lambda hp: f_all(params, s0, rec_fixed, hp, xs, m_seq)[0]  # noqa: E731
    shift = lambda H: jnp.concatenate([h0[None], H[:-1]], axis=0)  # noqa: E731
    elk = options.solver == "elk"

    def errors(H):
        e = f(shift(H)) - H
        r = jnp.max(jnp.abs(e))
        return jnp.where(jnp.isfinite(r), r, jnp.inf), jnp.where(
            jnp.isfinite(r), jnp.sum(e * e), jnp.inf
        )

    def jacobian(Hp):
        if full:
            FH, lin = jax.linearize(f, Hp)
            return FH, _jacobian_full(lin, Hp)
        return jacobian_diagonal(f, Hp)

    def cond(c):
        k, _, res, _, _, _, rd = c
        return (k < options.max_iter) & (res > options.tol) & (rd > options.tol) & jnp.isfinite(res)

    def newton(H):
        """The undamped (or ``damping``-clipped) Newton iterate from ``H`` and its errors."""
        Hp = shift(H)
        FH, J = jacobian(Hp)
        J = _clip(J, options.damping, full)
        b = FH - _mul(J, Hp, full)
        Hn = linear_scan(J, b, h0, scan=options.scan, chunk=options.chunk).astype(dt)
        return (Hn, *errors(Hn)), (J, b)

    def step(c):
        k, H, res, sse, lam, Hd, rd = c
        if not elk:
            (Hn, rn, sn), _ = newton(H)
            return k + 1, Hn, rn, sn, lam, Hd, rd
        (Hn, rn, sn), (J, b) = newton(H)
        He = _elk_step(J, b, H, h0, lam, full, options).astype(dt)
        re_, se = errors(He)
        # the trust region: its step is taken where it lowers the residual; where the
        # Newton step it contains lowers it further, the region grows back towards it
        ok = se < sse
        grow = ok & (sn < se)
        # beside it the plain Newton (DEER) iterate, whose solved prefix grows every
        # iteration: the solve stops when either meets the tolerance, so ELK never
        # needs more iterations than DEER where DEER converges
        (Hd, rd, _), _ = newton(Hd)
        lam = jnp.where(grow, lam * _DOWN * _DOWN, jnp.where(ok, lam * _DOWN, lam * _UP))
        return (
            k + 1,
            jnp.where(ok, He, H),
            jnp.where(ok, re_, res),
            jnp.where(ok, se, sse),
            jnp.clip(lam, 1e-6, 1e12),
            Hd,
            rd,
        )

    H0 = jnp.broadcast_to(h0, (T,) + h0.shape)
    r0, s0_ = errors(H0)
    lam0 = jnp.asarray(options.trust, jnp.promote_types(dt, jnp.float32))
    inf = jnp.asarray(jnp.inf, r0.dtype)
    k, H, res, _, _, Hd, rd = jax.lax.while_loop(
        cond, step, (jnp.int32(0), H0, r0, s0_, lam0, H0, inf)
    )
    if elk:  # the Newton iterate where it met the tolerance first
        H = jnp.where((res > options.tol) & (rd <= options.tol), Hd, H)
        res = jnp.minimum(res, rd)
    converged = res <= options.tol

    def sequential():
        def sbody(h, inp):
            hn = f_all(
                params, s0, rec_fixed, h[None], *jax.tree_util.tree_map(lambda a: a[None], inp)
            )[0][0]
            return hn, hn

        return jax.lax.scan(sbody, h0, (xs, m_seq))[1]

    H = jax.lax.cond(converged, lambda: H, sequential)
    jax.debug.callback(functools.partial(_warn, tol=options.tol), converged, res, k)
    info = NewtonInfo(iterations=k, residual=res, converged=converged, fell_back=~converged)
    return H, info


def _warn(converged, res, k, tol):
    if not bool(np.all(converged)):
        warnings.warn(
            f"the Newton solve of ScanConfig(method='parallel') did not converge (residual "
            f"{float(np.max(res)):.3g} > tol={tol} after {int(np.max(k))} iterations); the "
            "sequential scan's result was used instead",
            NotConvergedWarning,
            stacklevel=2,
        )

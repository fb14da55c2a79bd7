"""Matrix-state recurrences as operators on arrays: the JAX counterpart of ``fla.ops``.

Every operator keeps one matrix state per head, ``S`` ``(*B, h, dk, dv)``, updated by a
transition and a rank-one write, and reads it with a query:
:math:`o_t = \\text{scale}\\; S_t^\\top q_t`. Arrays are time-major: ``q, k``
``(T, *B, h, dk)``, ``v`` ``(T, *B, h, dv)``, per-head gates ``(T, *B, h)``, per-key-channel
gates ``(T, *B, h, dk)``; ``*B`` is any number of batch axes (also none).

Each public operator takes ``initial_state`` (default zeros), ``length`` (``(*B,)`` ints:
outputs past a row's length are exactly 0 and the final state is the one after its last
step), ``resets`` (bool ``(T, *B)``: the state goes back to ``initial_state`` before that
step), ``reverse`` (padding-aware: each row runs ``length - 1, ..., 0``, outputs stay at
their input positions), ``method`` (``"chunkwise"``: matrix products within chunks of
``chunk`` steps and a scan across chunks; ``"recurrent"``: a scan over steps; equal up to
rounding) and returns ``(o, final_state)``. bfloat16 inputs keep a float32 state; float64
works under x64.

``OPERATORS`` maps each operator family's name to its module (``step``, ``recurrent``,
``chunk`` with the masks ``valid``/``resets``): what the engine's chunkwise route calls.
The name ``rnnjax.ops.<name>`` is the public function; its module is ``OPERATORS[name]``
(or ``importlib.import_module("rnnjax.ops.<name>")``).
"""

from __future__ import annotations

import jax.numpy as jnp

from rnnjax import checks
from rnnjax.ops import delta_rule as _delta_rule
from rnnjax.ops import dplr as _dplr
from rnnjax.ops import gated_delta_rule as _gated_delta_rule
from rnnjax.ops import gla as _gla
from rnnjax.ops import kda as _kda
from rnnjax.ops import linear_attn as _linear_attn
from rnnjax.ops import simple_gla as _simple_gla
from rnnjax.ops import ssd as _ssd
from rnnjax.ops._common import run_public, state_dtype

__all__ = ["OPERATORS", "linear_attn", "simple_gla", "retention", "gla", "ssd"]

#: Each operator family's name -> its module (``step``, ``recurrent``, ``chunk``).
OPERATORS = {
    "linear_attn": _linear_attn,
    "simple_gla": _simple_gla,
    "gla": _gla,
    "ssd": _ssd,
}

_QKV = {"q": ("h", "dk"), "k": ("h", "dk"), "v": ("h", "dv")}
_PUBLIC_ARGS = """
      initial_state: ``(*B, h, dk, dv)`` or ``None`` (zeros).
      length: ``(*B,)`` integers in ``[0, T]`` or ``None`` (all ``T``).
      resets: bool ``(T, *B)`` or ``None``: the state goes back to ``initial_state``
        before the flagged steps.
      reverse: run each row backwards over its first ``length`` steps.
      method: ``"chunkwise"`` or ``"recurrent"``.
      chunk: the chunk size (a positive int) of ``"chunkwise"``.
"""


def _with_args(f):
    f.__doc__ = f.__doc__.replace("      {public}\n", _PUBLIC_ARGS.lstrip("\n"))
    return f


_OPTIONS = ("initial_state", "length", "resets", "reverse", "method", "chunk", "scale")


def _options(local: dict) -> dict:
    """The public options among a wrapper's ``locals()``."""
    return {name: local.get(name) for name in _OPTIONS}


@_with_args
def linear_attn(
    q,
    k,
    v,
    *,
    initial_state=None,
    length=None,
    resets=None,
    reverse=False,
    method="chunkwise",
    chunk=64,
    scale=None,
):
    """Linear attention: :math:`S_t = S_{t-1} + k_t v_t^\\top`,
    :math:`o_t = \\text{scale}\\, S_t^\\top q_t` (``OPERATORS["linear_attn"]``).

    Args:
      q, k: ``(T, *B, h, dk)``.
      v: ``(T, *B, h, dv)``.
      {public}
      scale: the query scale (default ``dk ** -0.5``).

    Returns:
      ``(o, final_state)``: ``(T, *B, h, dv)`` and ``(*B, h, dk, dv)``.

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 7, 2, 4, 8))  # (T, B, h, d)
      >>> o, S = ops.linear_attn(q, k, v, length=jax.numpy.array([7, 3]), chunk=4)
      >>> o.shape, S.shape, bool((o[3:, 1] == 0).all())
      ((7, 2, 4, 8), (2, 4, 8, 8), True)
    """
    return run_public(_linear_attn, dict(q=q, k=k, v=v), _QKV, **_options(locals()))


@_with_args
def simple_gla(
    q,
    k,
    v,
    g,
    *,
    initial_state=None,
    length=None,
    resets=None,
    reverse=False,
    method="chunkwise",
    chunk=64,
    scale=None,
):
    """Simple GLA: a scalar log-decay per head, :math:`S_t = e^{g_t} S_{t-1} + k_t v_t^\\top`,
    :math:`o_t = \\text{scale}\\, S_t^\\top q_t` (``OPERATORS["simple_gla"]``).

    Args:
      q, k: ``(T, *B, h, dk)``.
      v: ``(T, *B, h, dv)``.
      g: ``(T, *B, h)`` log-decays (normally ``<= 0``, e.g. ``log_sigmoid``).
      {public}
      scale: the query scale (default ``dk ** -0.5``).

    Returns:
      ``(o, final_state)``: ``(T, *B, h, dv)`` and ``(*B, h, dk, dv)``.

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 6, 2, 8))   # (T, h, d)
      >>> g = jax.nn.log_sigmoid(jax.random.normal(jax.random.key(1), (6, 2)))
      >>> o, S = ops.simple_gla(q, k, v, g, chunk=4)
      >>> o2, S2 = ops.simple_gla(q, k, v, g, method="recurrent")
      >>> bool(jax.numpy.allclose(o, o2, atol=1e-5)), S.shape
      (True, (2, 8, 8))
    """
    arrays = dict(q=q, k=k, v=v, g=g)
    return run_public(_simple_gla, arrays, {**_QKV, "g": ("h",)}, **_options(locals()))


@_with_args
def retention(
    q,
    k,
    v,
    *,
    initial_state=None,
    length=None,
    resets=None,
    reverse=False,
    method="chunkwise",
    chunk=64,
    scale=None,
):
    """Retention (RetNet): simple GLA with the fixed per-head decay
    :math:`\\gamma_h = 1 - 2^{-5-h}`, :math:`S_t = \\gamma_h S_{t-1} + k_t v_t^\\top`,
    :math:`o_t = \\text{scale}\\, S_t^\\top q_t`.

    Args:
      q, k: ``(T, *B, h, dk)``.
      v: ``(T, *B, h, dv)``.
      {public}
      scale: the query scale (default ``dk ** -0.5``).

    Returns:
      ``(o, final_state)``: ``(T, *B, h, dv)`` and ``(*B, h, dk, dv)``.

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 5, 2, 3, 4))  # (T, B, h, d)
      >>> o, S = ops.retention(q, k, v, chunk=2)
      >>> o.shape, S.shape
      ((5, 2, 3, 4), (2, 3, 4, 4))
    """
    q = checks.floating_array("q", q, shape_hint=" (T, *B, h, dk)")
    g = None
    if q.ndim >= 3:
        g = _simple_gla.retention_log_decay(q.shape[-2], state_dtype(q))
        g = jnp.broadcast_to(g, q.shape[:-1])
    arrays = dict(q=q, k=k, v=v, g=g)
    return run_public(_simple_gla, arrays, {**_QKV, "g": ("h",)}, **_options(locals()))


@_with_args
def gla(
    q,
    k,
    v,
    gk,
    *,
    initial_state=None,
    length=None,
    resets=None,
    reverse=False,
    method="chunkwise",
    chunk=64,
    scale=None,
):
    """Gated linear attention: a log-decay per key channel,
    :math:`S_t = \\operatorname{diag}(e^{g^k_t}) S_{t-1} + k_t v_t^\\top`,
    :math:`o_t = \\text{scale}\\, S_t^\\top q_t` (``OPERATORS["gla"]``).

    Args:
      q, k: ``(T, *B, h, dk)``.
      v: ``(T, *B, h, dv)``.
      gk: ``(T, *B, h, dk)`` log-decays (normally ``<= 0``).
      {public}
      scale: the query scale (default ``dk ** -0.5``).

    Returns:
      ``(o, final_state)``: ``(T, *B, h, dv)`` and ``(*B, h, dk, dv)``.

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 6, 2, 4))   # (T, h, d)
      >>> gk = jax.nn.log_sigmoid(jax.random.normal(jax.random.key(1), (6, 2, 4)))
      >>> o, S = ops.gla(q, k, v, gk, reverse=True, chunk=4)
      >>> o.shape, S.shape
      ((6, 2, 4), (2, 4, 4))
    """
    arrays = dict(q=q, k=k, v=v, gk=gk)
    return run_public(_gla, arrays, {**_QKV, "gk": ("h", "dk")}, **_options(locals()))


def _check_groups(arrays):
    h, g = arrays["x"].shape[-2], arrays["B"].shape[-2]
    if h % g:
        raise ValueError(
            f"B and C must have a number of groups dividing the heads of x ({h}); got {g}"
        )


@_with_args
def ssd(
    x,
    dt,
    A,
    B,
    C,
    *,
    initial_state=None,
    length=None,
    resets=None,
    reverse=False,
    method="chunkwise",
    chunk=64,
):
    """Mamba-2's SSD: :math:`H_t = e^{\\Delta_t A} H_{t-1} + B_t (\\Delta_t x_t)^\\top`,
    :math:`y_t = H_t^\\top C_t` (``OPERATORS["ssd"]``; no ``D`` skip term).

    Args:
      x: ``(T, *B, h, p)``.
      dt: ``(T, *B, h)`` step sizes (after Mamba-2's ``softplus``).
      A: ``(h,)`` (normally ``< 0``).
      B, C: ``(T, *B, g, n)``, ``g`` groups dividing ``h``.
      {public}

    Returns:
      ``(y, final_state)``: ``(T, *B, h, p)`` and ``(*B, h, n, p)``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax.ops as ops
      >>> x = jax.random.normal(jax.random.key(0), (6, 2, 4))           # (T, h, p)
      >>> dt = jax.nn.softplus(jax.random.normal(jax.random.key(1), (6, 2)))
      >>> Bm, Cm = jax.random.normal(jax.random.key(2), (2, 6, 1, 3))   # (T, g, n)
      >>> y, H = ops.ssd(x, dt, -jnp.ones(2), Bm, Cm, chunk=4)
      >>> y.shape, H.shape
      ((6, 2, 4), (2, 3, 4))
    """
    roles = {
        "x": ("h", "dv"),
        "dt": ("h",),
        "A": ("const", "h"),
        "B": ("g", "dk"),
        "C": ("g", "dk"),
    }
    arrays = dict(x=x, dt=dt, A=A, B=B, C=C)
    opts = _options(locals())
    return run_public(
        _ssd, arrays, roles, **opts, default_scale=lambda s: None, check=_check_groups
    )


# The delta-rule family: a transition (I - beta k k^T), gated by a decay, or a general
# diagonal-plus-low-rank one; chunkwise through the WY / UT representation.
OPERATORS.update(
    delta_rule=_delta_rule,
    gated_delta_rule=_gated_delta_rule,
    kda=_kda,
    dplr_delta_rule=_dplr,
)
__all__ += ["delta_rule", "gated_delta_rule", "kda", "dplr_delta_rule"]
_BETA = """      beta: ``(T, *B, h)`` in ``[0, 2]``: ``(0, 1)`` is the paper's rule, ``(0, 2)``
        allows negative eigenvalues (the transition's eigenvalue along a unit-norm key is
        ``1 - beta``); a concrete ``beta`` outside ``[0, 2]`` raises a ``ValueError``.
"""


def _with_beta(f):
    f.__doc__ = f.__doc__.replace("      {beta}\n", _BETA)
    return _with_args(f)


@_with_beta
def delta_rule(
    q,
    k,
    v,
    beta,
    *,
    initial_state=None,
    length=None,
    resets=None,
    reverse=False,
    method="chunkwise",
    chunk=64,
    scale=None,
):
    """The delta rule (DeltaNet):
    :math:`S_t = (I - \\beta_t k_t k_t^\\top) S_{t-1} + \\beta_t k_t v_t^\\top`,
    :math:`o_t = \\text{scale}\\, S_t^\\top q_t` (``OPERATORS["delta_rule"]``). Keys are
    normally L2-normalised.

    Args:
      q, k: ``(T, *B, h, dk)``.
      v: ``(T, *B, h, dv)``.
      {beta}
      {public}
      scale: the query scale (default ``dk ** -0.5``).

    Returns:
      ``(o, final_state)``: ``(T, *B, h, dv)`` and ``(*B, h, dk, dv)``.

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 7, 2, 4, 8))  # (T, B, h, d)
      >>> k = k / jax.numpy.linalg.norm(k, axis=-1, keepdims=True)
      >>> beta = jax.nn.sigmoid(jax.random.normal(jax.random.key(1), (7, 2, 4)))
      >>> o, S = ops.delta_rule(q, k, v, beta, length=jax.numpy.array([7, 3]), chunk=4)
      >>> o2, S2 = ops.delta_rule(q, k, v, beta, length=jax.numpy.array([7, 3]),
      ...                         method="recurrent")
      >>> o.shape, S.shape, bool(jax.numpy.allclose(o, o2, atol=1e-4))
      ((7, 2, 4, 8), (2, 4, 8, 8), True)
    """
    arrays = dict(q=q, k=k, v=v, beta=beta)
    return run_public(_delta_rule, arrays, {**_QKV, "beta": ("h",)}, **_options(locals()))


@_with_beta
def gated_delta_rule(
    q,
    k,
    v,
    g,
    beta,
    *,
    initial_state=None,
    length=None,
    resets=None,
    reverse=False,
    method="chunkwise",
    chunk=64,
    scale=None,
):
    """The gated delta rule (Gated DeltaNet):
    :math:`S_t = e^{g_t} (I - \\beta_t k_t k_t^\\top) S_{t-1} + \\beta_t k_t v_t^\\top`,
    :math:`o_t = \\text{scale}\\, S_t^\\top q_t` (``OPERATORS["gated_delta_rule"]``).

    Args:
      q, k: ``(T, *B, h, dk)``.
      v: ``(T, *B, h, dv)``.
      g: ``(T, *B, h)`` log-decays (normally ``<= 0``).
      {beta}
      {public}
      scale: the query scale (default ``dk ** -0.5``).

    Returns:
      ``(o, final_state)``: ``(T, *B, h, dv)`` and ``(*B, h, dk, dv)``.

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 6, 2, 8))   # (T, h, d)
      >>> k = k / jax.numpy.linalg.norm(k, axis=-1, keepdims=True)
      >>> g, b = jax.random.normal(jax.random.key(1), (2, 6, 2))
      >>> o, S = ops.gated_delta_rule(q, k, v, jax.nn.log_sigmoid(g), jax.nn.sigmoid(b), chunk=4)
      >>> o.shape, S.shape
      ((6, 2, 8), (2, 8, 8))
    """
    arrays = dict(q=q, k=k, v=v, g=g, beta=beta)
    roles = {**_QKV, "g": ("h",), "beta": ("h",)}
    return run_public(_gated_delta_rule, arrays, roles, **_options(locals()))


@_with_beta
def kda(
    q,
    k,
    v,
    gk,
    beta,
    *,
    initial_state=None,
    length=None,
    resets=None,
    reverse=False,
    method="chunkwise",
    chunk=64,
    scale=None,
):
    """Kimi Delta Attention: a per-key-channel decay, then the delta rule,
    :math:`S_t = (I - \\beta_t k_t k_t^\\top) \\operatorname{diag}(e^{g^k_t}) S_{t-1}
    + \\beta_t k_t v_t^\\top`, :math:`o_t = \\text{scale}\\, S_t^\\top q_t`
    (``OPERATORS["kda"]``).

    Args:
      q, k: ``(T, *B, h, dk)``.
      v: ``(T, *B, h, dv)``.
      gk: ``(T, *B, h, dk)`` log-decays (normally ``<= 0``).
      {beta}
      {public}
      scale: the query scale (default ``dk ** -0.5``).

    Returns:
      ``(o, final_state)``: ``(T, *B, h, dv)`` and ``(*B, h, dk, dv)``.

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v, gk = jax.random.normal(jax.random.key(0), (4, 6, 2, 4))   # (T, h, d)
      >>> k = k / jax.numpy.linalg.norm(k, axis=-1, keepdims=True)
      >>> beta = jax.nn.sigmoid(jax.random.normal(jax.random.key(1), (6, 2)))
      >>> o, S = ops.kda(q, k, v, jax.nn.log_sigmoid(gk), beta, reverse=True, chunk=4)
      >>> o.shape, S.shape
      ((6, 2, 4), (2, 4, 4))
    """
    arrays = dict(q=q, k=k, v=v, gk=gk, beta=beta)
    roles = {**_QKV, "gk": ("h", "dk"), "beta": ("h",)}
    return run_public(_kda, arrays, roles, **_options(locals()))


@_with_args
def dplr_delta_rule(
    q,
    k,
    v,
    a,
    b,
    gk,
    *,
    initial_state=None,
    length=None,
    resets=None,
    reverse=False,
    method="chunkwise",
    chunk=64,
    scale=None,
):
    """The generalised delta rule with a diagonal-plus-low-rank transition (RWKV-7),
    :math:`S_t = (\\operatorname{diag}(e^{g^k_t}) + b_t a_t^\\top) S_{t-1} + k_t v_t^\\top`,
    :math:`o_t = \\text{scale}\\, S_t^\\top q_t` (``OPERATORS["dplr_delta_rule"]``; fla's
    ``chunk_dplr_delta_rule``, RWKV-7: ``a = -kappa``, ``b = kappa * a_rwkv``).

    Args:
      q, k, a, b: ``(T, *B, h, dk)`` (``a``, ``b`` unconstrained).
      v: ``(T, *B, h, dv)``.
      gk: ``(T, *B, h, dk)`` log-decays (normally ``<= 0``).
      {public}
      scale: the query scale (default ``dk ** -0.5``).

    Returns:
      ``(o, final_state)``: ``(T, *B, h, dv)`` and ``(*B, h, dk, dv)``.

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v, kap, w = jax.random.normal(jax.random.key(0), (5, 6, 2, 4))   # (T, h, d)
      >>> kap = kap / jax.numpy.linalg.norm(kap, axis=-1, keepdims=True)
      >>> gk = -0.6 * jax.nn.sigmoid(w)                      # RWKV-7's decay, in log space
      >>> o, S = ops.dplr_delta_rule(q, k, v, -kap, 0.5 * kap, gk, chunk=4)
      >>> o.shape, S.shape
      ((6, 2, 4), (2, 4, 4))
    """
    arrays = dict(q=q, k=k, v=v, a=a, b=b, gk=gk)
    roles = {**_QKV, "a": ("h", "dk"), "b": ("h", "dk"), "gk": ("h", "dk")}
    return run_public(_dplr, arrays, roles, **_options(locals()))

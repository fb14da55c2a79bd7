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

import inspect

import jax.numpy as jnp

from rnnjax import checks
from rnnjax.ops import delta_rule as _delta_rule
from rnnjax.ops import dplr as _dplr
from rnnjax.ops import gated_delta_rule as _gated_delta_rule
from rnnjax.ops import gla as _gla
from rnnjax.ops import kda as _kda
from rnnjax.ops import linear_attn as _linear_attn
from rnnjax.ops import mlstm as _mlstm
from rnnjax.ops import simple_gla as _simple_gla
from rnnjax.ops import ssd as _ssd
from rnnjax.ops._common import run_public, state_dtype

__all__ = [
    "OPERATORS",
    "linear_attn",
    "simple_gla",
    "retention",
    "gla",
    "ssd",
    "delta_rule",
    "gated_delta_rule",
    "kda",
    "dplr_delta_rule",
]

#: Each operator family's name -> its module (``step``, ``recurrent``, ``chunk``).
OPERATORS = {
    "linear_attn": _linear_attn,
    "simple_gla": _simple_gla,
    "gla": _gla,
    "ssd": _ssd,
    "delta_rule": _delta_rule,
    "gated_delta_rule": _gated_delta_rule,
    "kda": _kda,
    "dplr_delta_rule": _dplr,
    "mlstm": _mlstm,  # xLSTM's stabilised mLSTM (rnnjax.MLSTM's operator)
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
_BETA = """      beta: ``(T, *B, h)`` in ``[0, 2]``: ``(0, 1)`` is the paper's rule, ``(0, 2)``
        allows negative eigenvalues (the transition's eigenvalue along a unit-norm key is
        ``1 - beta``); a concrete ``beta`` outside ``[0, 2]`` raises a ``ValueError``.
"""
_QKV_ARGS = """      q, k: ``(T, *B, h, dk)``.
      v: ``(T, *B, h, dv)``.
"""
_SCALE = """      scale: the query scale (default ``dk ** -0.5``).
"""
_RETURNS = """    Returns:
      ``(o, final_state)``: ``(T, *B, h, dv)`` and ``(*B, h, dk, dv)``.
"""
_OPTIONS = (
    ("initial_state", None),
    ("length", None),
    ("resets", None),
    ("reverse", False),
    ("method", "chunkwise"),
    ("chunk", 64),
    ("scale", None),
)


def _operator(name, module, roles, doc, *, inputs=None, prepare=None, scale=True, **extra):
    """The public function ``name``: its arrays ``inputs`` (default: the names of
    ``roles``, positional or keyword) then the keyword options of ``_OPTIONS``
    (without ``scale`` when ``scale`` is false); ``prepare`` maps the arrays before the
    checks; ``extra`` goes to :func:`rnnjax.ops._common.run_public`."""
    inputs = tuple(roles) if inputs is None else inputs
    P = inspect.Parameter
    sig = inspect.Signature(
        [P(n, P.POSITIONAL_OR_KEYWORD) for n in inputs]
        + [P(o, P.KEYWORD_ONLY, default=d) for o, d in _OPTIONS if scale or o != "scale"]
    )

    def op(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        arrays = {n: a[n] for n in inputs}
        arrays = arrays if prepare is None else prepare(arrays)
        options = {o: a.get(o) for o, _ in _OPTIONS}
        return run_public(module, arrays, roles, **options, **extra)

    op.__name__ = op.__qualname__ = name
    op.__module__ = __name__
    op.__signature__ = sig
    public = _PUBLIC_ARGS.lstrip("\n") + (_SCALE if scale else "")
    for key, text in (("qkv", _QKV_ARGS), ("beta", _BETA), ("public", public)):
        doc = doc.replace("      {%s}\n" % key, text)
    op.__doc__ = doc.replace("    {returns}\n", _RETURNS)
    return op


def _retention_decay(arrays):
    """RetNet's fixed decays as ``g`` ``(T, *B, h)`` next to ``q, k, v``."""
    q = checks.floating_array("q", arrays["q"], shape_hint=" (T, *B, h, dk)")
    if q.ndim < 3:  # the shape check names q
        return {**arrays, "g": jnp.zeros(q.shape[:-1])}
    g = _simple_gla.retention_log_decay(q.shape[-2], state_dtype(q))
    return {**arrays, "g": jnp.broadcast_to(g, q.shape[:-1])}


def _check_groups(arrays):
    h, g = arrays["x"].shape[-2], arrays["B"].shape[-2]
    if h % g:
        raise ValueError(
            f"B and C must have a number of groups dividing the heads of x ({h}); got {g}"
        )


_SSD = {"x": ("h", "dv"), "dt": ("h",), "A": ("const", "h"), "B": ("g", "dk"), "C": ("g", "dk")}
_SSD_EXTRA = dict(scale=False, default_scale=lambda sizes: None, check=_check_groups)

linear_attn = _operator(
    "linear_attn",
    _linear_attn,
    _QKV,
    """Linear attention: :math:`S_t = S_{t-1} + k_t v_t^\\top`,
    :math:`o_t = \\text{scale}\\, S_t^\\top q_t` (``OPERATORS["linear_attn"]``).

    Args:
      {qkv}
      {public}

    {returns}

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 7, 2, 4, 8))  # (T, B, h, d)
      >>> o, S = ops.linear_attn(q, k, v, length=jax.numpy.array([7, 3]), chunk=4)
      >>> o.shape, S.shape, bool((o[3:, 1] == 0).all())
      ((7, 2, 4, 8), (2, 4, 8, 8), True)
    """,
)

simple_gla = _operator(
    "simple_gla",
    _simple_gla,
    {**_QKV, "g": ("h",)},
    """Simple GLA: a scalar log-decay per head, :math:`S_t = e^{g_t} S_{t-1} + k_t v_t^\\top`,
    :math:`o_t = \\text{scale}\\, S_t^\\top q_t` (``OPERATORS["simple_gla"]``).

    Args:
      {qkv}
      g: ``(T, *B, h)`` log-decays (normally ``<= 0``, e.g. ``log_sigmoid``).
      {public}

    {returns}

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 6, 2, 8))   # (T, h, d)
      >>> g = jax.nn.log_sigmoid(jax.random.normal(jax.random.key(1), (6, 2)))
      >>> o, S = ops.simple_gla(q, k, v, g, chunk=4)
      >>> o2, S2 = ops.simple_gla(q, k, v, g, method="recurrent")
      >>> bool(jax.numpy.allclose(o, o2, atol=1e-5)), S.shape
      (True, (2, 8, 8))
    """,
)

retention = _operator(
    "retention",
    _simple_gla,
    {**_QKV, "g": ("h",)},
    """Retention (RetNet): simple GLA with the fixed per-head decay
    :math:`\\gamma_h = 1 - 2^{-5-h}`, :math:`S_t = \\gamma_h S_{t-1} + k_t v_t^\\top`,
    :math:`o_t = \\text{scale}\\, S_t^\\top q_t`.

    Args:
      {qkv}
      {public}

    {returns}

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 5, 2, 3, 4))  # (T, B, h, d)
      >>> o, S = ops.retention(q, k, v, chunk=2)
      >>> o.shape, S.shape
      ((5, 2, 3, 4), (2, 3, 4, 4))
    """,
    inputs=("q", "k", "v"),
    prepare=_retention_decay,
)

gla = _operator(
    "gla",
    _gla,
    {**_QKV, "gk": ("h", "dk")},
    """Gated linear attention: a log-decay per key channel,
    :math:`S_t = \\operatorname{diag}(e^{g^k_t}) S_{t-1} + k_t v_t^\\top`,
    :math:`o_t = \\text{scale}\\, S_t^\\top q_t` (``OPERATORS["gla"]``).

    Args:
      {qkv}
      gk: ``(T, *B, h, dk)`` log-decays (normally ``<= 0``).
      {public}

    {returns}

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 6, 2, 4))   # (T, h, d)
      >>> gk = jax.nn.log_sigmoid(jax.random.normal(jax.random.key(1), (6, 2, 4)))
      >>> o, S = ops.gla(q, k, v, gk, reverse=True, chunk=4)
      >>> o.shape, S.shape
      ((6, 2, 4), (2, 4, 4))
    """,
)

ssd = _operator(
    "ssd",
    _ssd,
    _SSD,
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
    """,
    **_SSD_EXTRA,
)

delta_rule = _operator(
    "delta_rule",
    _delta_rule,
    {**_QKV, "beta": ("h",)},
    """The delta rule (DeltaNet):
    :math:`S_t = (I - \\beta_t k_t k_t^\\top) S_{t-1} + \\beta_t k_t v_t^\\top`,
    :math:`o_t = \\text{scale}\\, S_t^\\top q_t` (``OPERATORS["delta_rule"]``). Keys are
    normally L2-normalised.

    Args:
      {qkv}
      {beta}
      {public}

    {returns}

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
    """,
)

gated_delta_rule = _operator(
    "gated_delta_rule",
    _gated_delta_rule,
    {**_QKV, "g": ("h",), "beta": ("h",)},
    """The gated delta rule (Gated DeltaNet):
    :math:`S_t = e^{g_t} (I - \\beta_t k_t k_t^\\top) S_{t-1} + \\beta_t k_t v_t^\\top`,
    :math:`o_t = \\text{scale}\\, S_t^\\top q_t` (``OPERATORS["gated_delta_rule"]``).

    Args:
      {qkv}
      g: ``(T, *B, h)`` log-decays (normally ``<= 0``).
      {beta}
      {public}

    {returns}

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 6, 2, 8))   # (T, h, d)
      >>> k = k / jax.numpy.linalg.norm(k, axis=-1, keepdims=True)
      >>> g, b = jax.random.normal(jax.random.key(1), (2, 6, 2))
      >>> o, S = ops.gated_delta_rule(q, k, v, jax.nn.log_sigmoid(g), jax.nn.sigmoid(b), chunk=4)
      >>> o.shape, S.shape
      ((6, 2, 8), (2, 8, 8))
    """,
)

kda = _operator(
    "kda",
    _kda,
    {**_QKV, "gk": ("h", "dk"), "beta": ("h",)},
    """Kimi Delta Attention: a per-key-channel decay, then the delta rule,
    :math:`S_t = (I - \\beta_t k_t k_t^\\top) \\operatorname{diag}(e^{g^k_t}) S_{t-1}
    + \\beta_t k_t v_t^\\top`, :math:`o_t = \\text{scale}\\, S_t^\\top q_t`
    (``OPERATORS["kda"]``).

    Args:
      {qkv}
      gk: ``(T, *B, h, dk)`` log-decays (normally ``<= 0``).
      {beta}
      {public}

    {returns}

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v, gk = jax.random.normal(jax.random.key(0), (4, 6, 2, 4))   # (T, h, d)
      >>> k = k / jax.numpy.linalg.norm(k, axis=-1, keepdims=True)
      >>> beta = jax.nn.sigmoid(jax.random.normal(jax.random.key(1), (6, 2)))
      >>> o, S = ops.kda(q, k, v, jax.nn.log_sigmoid(gk), beta, reverse=True, chunk=4)
      >>> o.shape, S.shape
      ((6, 2, 4), (2, 4, 4))
    """,
)

dplr_delta_rule = _operator(
    "dplr_delta_rule",
    _dplr,
    {**_QKV, "a": ("h", "dk"), "b": ("h", "dk"), "gk": ("h", "dk")},
    """The generalised delta rule with a diagonal-plus-low-rank transition (RWKV-7),
    :math:`S_t = (\\operatorname{diag}(e^{g^k_t}) + b_t a_t^\\top) S_{t-1} + k_t v_t^\\top`,
    :math:`o_t = \\text{scale}\\, S_t^\\top q_t` (``OPERATORS["dplr_delta_rule"]``; fla's
    ``chunk_dplr_delta_rule``, RWKV-7: ``a = -kappa``, ``b = kappa * a_rwkv``).

    Args:
      q, k, a, b: ``(T, *B, h, dk)`` (``a``, ``b`` unconstrained).
      v: ``(T, *B, h, dv)``.
      gk: ``(T, *B, h, dk)`` log-decays (normally ``<= 0``).
      {public}

    {returns}

    Example:
      >>> import jax, rnnjax.ops as ops
      >>> q, k, v, kap, w = jax.random.normal(jax.random.key(0), (5, 6, 2, 4))   # (T, h, d)
      >>> kap = kap / jax.numpy.linalg.norm(kap, axis=-1, keepdims=True)
      >>> gk = -0.6 * jax.nn.sigmoid(w)                      # RWKV-7's decay, in log space
      >>> o, S = ops.dplr_delta_rule(q, k, v, -kap, 0.5 * kap, gk, chunk=4)
      >>> o.shape, S.shape
      ((6, 2, 4), (2, 4, 4))
    """,
)

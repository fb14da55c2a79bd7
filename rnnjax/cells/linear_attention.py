r"""The matrix-state cells of the linear-attention family: a matrix memory per head, read
with a query and written with a key and a value, under a decay and (for the delta rules)
an erasing transition.

One per operator family of :mod:`rnnjax.ops`, each through the cell protocol (so every
layer, Flax module, :func:`rnnjax.generate` and the checkpoints take them) and through the
engine's chunkwise strategy, ``ScanConfig(method="chunkwise", chunk=C)``:

=====================  =========================  =======================================
cell                   operator                   transition of ``S`` per head
=====================  =========================  =======================================
:class:`LinearAttention` ``linear_attn``          ``I`` (no decay)
:class:`Retention`     ``simple_gla``             a fixed decay per head (RetNet)
:class:`GLA`           ``gla``                    a data-dependent decay per key channel
:class:`Mamba2`        ``simple_gla`` (SSD)       ``exp(dt A)``, a scalar per head
:class:`DeltaNet`      ``delta_rule``             ``I - beta k k^T``
:class:`GatedDeltaNet` ``gated_delta_rule``       ``exp(g) (I - beta k k^T)``
:class:`KDA`           ``kda``                    ``(I - beta k k^T) diag(exp(g))``
:class:`RWKV7`         ``dplr_delta_rule``        ``diag(w) + a b^T``
=====================  =========================  =======================================

All of them share the layout: one input product ``x W + b`` (``project``) gives the
queries, keys, values and gates of every head; the state is ``MatrixState(h, S)`` with
``S`` the ``heads x dk x dv`` memories, flattened, and ``h`` the last output. ``H =
heads * dv`` (``hidden_size``); ``dk`` is ``key_size`` (default ``H / heads``).

What the papers' layers add around the recurrence (the short causal convolution, the
output gate and norm, the output projection) is left to the blocks built on these cells;
each cell's docstring says what it keeps.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax.cells.base import lead
from rnnjax.cells.matrix import MatrixCell

__all__ = [
    # gated linear attention: no decay, a decay per head or per key channel
    "LinearAttention",
    "Retention",
    "GLA",
    "Mamba2",
    # the delta rules
    "DeltaNet",
    "GatedDeltaNet",
    "KDA",
    "RWKV7",
    # their state
    "MatrixState",
]

FEATURE_MAPS = ("identity", "elu+1", "relu", "silu")


class MatrixState(NamedTuple):
    """State of the linear-attention cells: ``h`` ``(H,)`` (the last output) and ``S``
    ``(heads * dk * dv,)`` (the matrix memories of the heads, flattened).

    Example:
      >>> import rnnjax as rj
      >>> s = rj.DeltaNet(2, 4, num_heads=2).initial_state()
      >>> s._fields, s.S.shape
      (('h', 'S'), (8,))
    """

    h: jax.Array
    S: jax.Array


def _feature(name, x):
    if name == "elu+1":
        return jax.nn.elu(x) + 1.0
    if name == "relu":
        return jax.nn.relu(x)
    if name == "silu":
        return jax.nn.silu(x)
    return x


def _l2norm(x, eps=1e-6):
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def _wide(x):
    """``x`` in at least float32 (the gates and decays of a bfloat16 cell: float32)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _inverse_softplus(y):
    return y + jnp.log(-jnp.expm1(-y))


@dataclasses.dataclass(frozen=True)
class _HeadsCell(MatrixCell):
    """The shared layout: ``num_heads`` heads, keys of ``key_size``, values of
    ``hidden_size / num_heads``, one input product ``x W + b`` for every part."""

    num_heads: int = 1
    key_size: Optional[int] = None

    State = MatrixState
    extra = ()  # ((name, per-head width as "k" | "v" | 1), ...) beyond q, k, v

    def __post_init__(self):
        super().__post_init__()
        checks.integer("num_heads", self.num_heads, 1)
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size must be a multiple of num_heads; got hidden_size="
                f"{self.hidden_size}, num_heads={self.num_heads}"
            )
        if self.key_size is not None:
            checks.integer("key_size", self.key_size, 1)

    @property
    def dk(self) -> int:
        """Key size per head."""
        return self.hidden_size // self.num_heads if self.key_size is None else self.key_size

    @property
    def dv(self) -> int:
        """Value size per head."""
        return self.hidden_size // self.num_heads

    def _widths(self) -> dict:
        per = {"k": self.dk, "v": self.dv, 1: 1}
        w = {"q": self.dk, "k": self.dk, "v": self.dv}
        w.update({name: per[unit] for name, unit in self.extra})
        return w

    def _state_sizes(self) -> dict:
        return {"h": self.hidden_size, "S": self.num_heads * self.dk * self.dv}

    def init(self, key) -> dict:
        """``{"w": (I, P), "b": (P,)}`` (``P``: every head's parts side by side) and the
        family's own parameters."""
        dt = self._init_dtype()
        P = self.num_heads * sum(self._widths().values())
        kw, ko = jax.random.split(key)
        w = jax.random.normal(kw, (self.input_size, P), dt) / math.sqrt(self.input_size)
        params = {"w": w, "b": self._bias(P, dt), **self._own_params(ko, dt)}
        return self._cast(params)

    def _bias(self, P, dt):
        return jnp.zeros((P,), dt)

    def _own_params(self, key, dt) -> dict:
        return {}

    def project(self, params, x):
        """``x W + b`` in the compute dtype: ``(..., P)``."""
        y = self.mm(x, params["w"])
        return y + lead(params["b"], y.ndim).astype(y.dtype)

    def _split(self, xp) -> dict:
        """``xp`` ``(..., P)`` into ``{name: (..., heads, width)}``."""
        parts, o = {}, 0
        lead, nh = xp.shape[:-1], self.num_heads
        for name, width in self._widths().items():
            n = nh * width
            parts[name] = xp[..., o : o + n].reshape(lead + (nh, width))
            o += n
        return parts

    def matrix_state(self, state):
        lead = state.S.shape[:-1]
        return state.S.reshape(lead + (self.num_heads, self.dk, self.dv))

    def with_matrix_state(self, state, S, h):
        return MatrixState(
            h=h.astype(state.h.dtype), S=S.reshape(state.S.shape).astype(state.S.dtype)
        )

    def matrix_output(self, params, xp, o):
        return o.reshape(o.shape[:-2] + (self.hidden_size,))


# ---------------------------------------------------------------- gated linear attention


@dataclasses.dataclass(frozen=True)
class LinearAttention(_HeadsCell):
    r"""Linear attention (Katharopoulos et al. 2020) as a recurrence: per head

    .. math::

        S_t = S_{t-1} + \phi(k_t) v_t^\top, \qquad
        o_t = \frac{1}{\sqrt{d_k}} S_t^\top \phi(q_t)

    with ``q, k, v = x W + b`` and the feature map :math:`\phi` (``feature_map``:
    ``"elu+1"``, the paper's, by default; ``"identity"``, ``"relu"``, ``"silu"``). No
    normaliser (fla's default).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.LinearAttention(3, 4, num_heads=2)
      >>> st, ys = rj.unroll(cell, cell.init(jax.random.key(0)), jnp.ones((5, 3)))
      >>> ys.shape, st.S.shape
      ((5, 4), (8,))
    """

    feature_map: str = "elu+1"
    matrix_op = "linear_attn"

    def __post_init__(self):
        super().__post_init__()
        checks.choice("feature_map", self.feature_map, FEATURE_MAPS)

    def matrix_inputs(self, params, xp):
        p = self._split(xp)
        f = self.feature_map
        return {"q": _feature(f, p["q"]), "k": _feature(f, p["k"]), "v": p["v"]}


@dataclasses.dataclass(frozen=True)
class Retention(_HeadsCell):
    r"""Retention (Sun et al. 2023, RetNet) as a recurrence: a fixed decay per head

    .. math::

        S_t = \gamma_h S_{t-1} + k_t v_t^\top, \qquad o_t = \tfrac{1}{\sqrt{d_k}}
        S_t^\top q_t, \qquad \gamma_h = 1 - 2^{-5-h}

    (the paper's decays; its rotary positions, group norm and swish gate belong to the
    layer).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.Retention(3, 4, num_heads=2)
      >>> rj.unroll(cell, cell.init(jax.random.key(0)), jnp.ones((5, 3)))[1].shape
      (5, 4)
    """

    matrix_op = "simple_gla"

    def matrix_inputs(self, params, xp):
        p = self._split(xp)
        heads = jnp.arange(self.num_heads, dtype=_wide(p["q"]).dtype)
        g = jnp.log1p(-jnp.exp2(-5.0 - heads))
        return {**p, "g": jnp.broadcast_to(g, p["q"].shape[:-1])}


@dataclasses.dataclass(frozen=True)
class GLA(_HeadsCell):
    r"""Gated linear attention (Yang et al. 2024): a data-dependent decay per key channel

    .. math::

        S_t = \mathrm{diag}(\alpha_t) S_{t-1} + k_t v_t^\top, \qquad
        \log\alpha_t = \log\sigma(W_\alpha^\top x_t + b_\alpha) / \tau, \qquad
        o_t = \tfrac{1}{\sqrt{d_k}} S_t^\top q_t

    with the paper's normaliser :math:`\tau` (``gate_normalizer``, 16). The gate's
    projection is full rank here (the paper's is low rank); its output gate and norm
    belong to the layer.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.GLA(3, 4, num_heads=2)
      >>> rj.unroll(cell, cell.init(jax.random.key(0)), jnp.ones((5, 3)))[1].shape
      (5, 4)
    """

    gate_normalizer: float = 16.0
    matrix_op = "gla"
    extra = (("gk", "k"),)

    def __post_init__(self):
        super().__post_init__()
        checks.number("gate_normalizer", self.gate_normalizer, 0.0, min_open=True)

    def matrix_inputs(self, params, xp):
        p = self._split(xp)
        gk = jax.nn.log_sigmoid(_wide(p.pop("gk"))) / self.gate_normalizer
        return {**p, "gk": gk}


@dataclasses.dataclass(frozen=True)
class Mamba2(_HeadsCell):
    r"""Mamba-2's selective state space in its state-space-duality form (Dao & Gu 2024):
    per head a scalar decay from the step size,

    .. math::

        \Delta_t = \mathrm{softplus}(w_\Delta^\top x_t + b_\Delta), \qquad
        S_t = e^{\Delta_t A} S_{t-1} + B_t (\Delta_t x'_t)^\top, \qquad
        y_t = S_t^\top C_t + D \odot x'_t

    with ``A = -exp(A_log) < 0`` per head (drawn from ``[1, 16]``), ``x'``, ``B``, ``C``
    from the input product (``B, C`` of ``key_size``, the state size ``N`` per head) and
    ``b_Delta`` drawn so that ``Delta`` starts in ``[0.001, 0.1]``. The operator is
    :func:`rnnjax.ops.ssd`'s mapping onto ``simple_gla`` (``q = C``, ``k = B``,
    ``v = Delta x'``, ``g = Delta A``). No ``1/sqrt(N)`` scale (Mamba's). The gating
    branch, the convolution and the norm belong to the layer.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.Mamba2(3, 4, num_heads=2, key_size=8)
      >>> rj.unroll(cell, cell.init(jax.random.key(0)), jnp.ones((5, 3)))[1].shape
      (5, 4)
    """

    matrix_op = "simple_gla"
    extra = (("dt", 1),)

    def _own_params(self, key, dt):
        ka, kd = jax.random.split(key)
        A = jax.random.uniform(ka, (self.num_heads,), dt, 1.0, 16.0)
        d = jnp.exp(jax.random.uniform(kd, (self.num_heads,), dt, math.log(1e-3), math.log(0.1)))
        return {
            "A_log": jnp.log(A),
            "dt_bias": _inverse_softplus(d),
            "D": jnp.ones((self.num_heads,), dt),
        }

    def _delta(self, params, p):
        dt = _wide(p["dt"][..., 0])
        return jax.nn.softplus(dt + lead(params["dt_bias"], dt.ndim).astype(dt.dtype))

    def matrix_inputs(self, params, xp):
        p = self._split(xp)
        delta = self._delta(params, p)
        A = -jnp.exp(lead(params["A_log"], delta.ndim).astype(delta.dtype))
        v = p["v"] * delta[..., None].astype(p["v"].dtype)
        return {"q": p["q"], "k": p["k"], "v": v, "g": delta * A, "scale": 1.0}

    def matrix_output(self, params, xp, o):
        x = self._split(xp)["v"]
        y = o + lead(params["D"].astype(o.dtype)[:, None], o.ndim) * x.astype(o.dtype)
        return y.reshape(y.shape[:-2] + (self.hidden_size,))


# ---------------------------------------------------------------- delta rules


@dataclasses.dataclass(frozen=True)
class _DeltaCell(_HeadsCell):
    """The delta rules' common part: L2-normalised keys (and queries), a writing strength
    ``beta = sigmoid(.)`` in (0, 1), or ``2 sigmoid(.)`` in (0, 2) with
    ``negative_eigenvalues=True`` (Grazzi et al. 2025)."""

    negative_eigenvalues: bool = False
    extra = (("beta", 1),)

    def __post_init__(self):
        super().__post_init__()
        checks.boolean("negative_eigenvalues", self.negative_eigenvalues)

    def _qkb(self, p):
        q = _l2norm(jax.nn.silu(p["q"]))
        k = _l2norm(jax.nn.silu(p["k"]))
        beta = jax.nn.sigmoid(_wide(p["beta"][..., 0]))
        if self.negative_eigenvalues:
            beta = 2.0 * beta
        return q, k, beta


@dataclasses.dataclass(frozen=True)
class DeltaNet(_DeltaCell):
    r"""DeltaNet (Schlag et al. 2021; Yang et al. 2024): the delta rule,

    .. math::

        S_t = (I - \beta_t k_t k_t^\top) S_{t-1} + \beta_t k_t v_t^\top, \qquad
        o_t = \tfrac{1}{\sqrt{d_k}} S_t^\top q_t

    with ``q, k`` through SiLU and L2-normalised, ``beta_t = sigmoid(w_beta^T x_t +
    b_beta)`` in (0, 1) (or (0, 2) with ``negative_eigenvalues=True``).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.DeltaNet(3, 4, num_heads=2)
      >>> rj.unroll(cell, cell.init(jax.random.key(0)), jnp.ones((5, 3)))[1].shape
      (5, 4)
    """

    matrix_op = "delta_rule"

    def matrix_inputs(self, params, xp):
        p = self._split(xp)
        q, k, beta = self._qkb(p)
        return {"q": q, "k": k, "v": p["v"], "beta": beta}


@dataclasses.dataclass(frozen=True)
class GatedDeltaNet(_DeltaCell):
    r"""Gated DeltaNet (Yang et al. 2025; the recurrent layer of Qwen3-Next): the delta
    rule under a scalar decay per head,

    .. math::

        S_t = e^{g_t} (I - \beta_t k_t k_t^\top) S_{t-1} + \beta_t k_t v_t^\top, \qquad
        g_t = -e^{A_{\log}} \,\mathrm{softplus}(w_a^\top x_t + b_\Delta)

    with ``A`` drawn from ``[0, 16]`` and ``b_Delta`` so that the softplus starts in
    ``[0.001, 0.1]`` (the paper's initialisation), keys and queries as in
    :class:`DeltaNet`.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.GatedDeltaNet(3, 4, num_heads=2)
      >>> rj.unroll(cell, cell.init(jax.random.key(0)), jnp.ones((5, 3)))[1].shape
      (5, 4)
    """

    matrix_op = "gated_delta_rule"
    extra = (("beta", 1), ("a", 1))

    def _own_params(self, key, dt):
        return _decay_params(key, self.num_heads, 1, dt)

    def matrix_inputs(self, params, xp):
        p = self._split(xp)
        q, k, beta = self._qkb(p)
        g = _log_decay(params, p["a"])[..., 0]
        return {"q": q, "k": k, "v": p["v"], "g": g, "beta": beta}


@dataclasses.dataclass(frozen=True)
class KDA(_DeltaCell):
    r"""Kimi Delta Attention (Kimi Linear, 2025): the delta rule under a decay per key
    channel,

    .. math::

        S_t = (I - \beta_t k_t k_t^\top)\,\mathrm{diag}(e^{g_t}) S_{t-1}
            + \beta_t k_t v_t^\top, \qquad
        g_t = -e^{A_{\log}} \odot \mathrm{softplus}(W_a^\top x_t + b_\Delta)

    (one ``A`` per head, one ``b_Delta`` per channel; the gate's projection is full rank
    here, the paper's low rank).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.KDA(3, 4, num_heads=2)
      >>> rj.unroll(cell, cell.init(jax.random.key(0)), jnp.ones((5, 3)))[1].shape
      (5, 4)
    """

    matrix_op = "kda"
    extra = (("beta", 1), ("a", "k"))

    def _own_params(self, key, dt):
        return _decay_params(key, self.num_heads, self.dk, dt)

    def matrix_inputs(self, params, xp):
        p = self._split(xp)
        q, k, beta = self._qkb(p)
        return {"q": q, "k": k, "v": p["v"], "gk": _log_decay(params, p["a"]), "beta": beta}


def _decay_params(key, heads, width, dt):
    """``A_log`` ``(heads,)`` with ``A ~ U[0, 16]`` and ``dt_bias`` ``(heads, width)`` with
    ``softplus(dt_bias) ~ logU[0.001, 0.1]`` (Mamba-2's and Gated DeltaNet's)."""
    ka, kd = jax.random.split(key)
    A = jax.random.uniform(ka, (heads,), dt, 1e-4, 16.0)
    d = jnp.exp(jax.random.uniform(kd, (heads, width), dt, math.log(1e-3), math.log(0.1)))
    return {"A_log": jnp.log(A), "dt_bias": _inverse_softplus(jnp.maximum(d, 1e-4))}


def _log_decay(params, a):
    """``-exp(A_log) softplus(a + dt_bias)``: ``(..., heads, width)``, at least float32."""
    a = _wide(a)
    A = lead(jnp.exp(params["A_log"].astype(a.dtype))[:, None], a.ndim)
    return -A * jax.nn.softplus(a + lead(params["dt_bias"], a.ndim).astype(a.dtype))


@dataclasses.dataclass(frozen=True)
class RWKV7(_HeadsCell):
    r"""RWKV-7 "Goose" (Peng et al. 2025): the generalised delta rule, a
    diagonal-plus-rank-one transition per head,

    .. math::

        S_t = \big(\mathrm{diag}(w_t) - \hat\kappa_t (a_t \odot \hat\kappa_t)^\top\big)
            S_{t-1} + k_t v_t^\top, \qquad o_t = S_t^\top r_t

    with the decay :math:`w_t = \exp(-e^{-1/2} \sigma(W_w^\top x_t + b_w))` in
    :math:`(0.545, 1)`, the in-context learning rate :math:`a_t = \sigma(W_a^\top x_t +
    b_a)`, the removal key :math:`\hat\kappa_t` (the L2-normalised key) and the receptance
    ``r`` as the query. Left to the layer: the token shift, the low-rank gate projections,
    the value residual, the bonus term and the group norm.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.RWKV7(3, 4, num_heads=2)
      >>> rj.unroll(cell, cell.init(jax.random.key(0)), jnp.ones((5, 3)))[1].shape
      (5, 4)
    """

    matrix_op = "dplr_delta_rule"
    extra = (("w", "k"), ("a", "k"))

    def matrix_inputs(self, params, xp):
        p = self._split(xp)
        gk = -math.exp(-0.5) * jax.nn.sigmoid(_wide(p["w"]))
        kk = _l2norm(p["k"])
        a = jax.nn.sigmoid(p["a"])
        return {
            "q": p["q"],
            "k": p["k"],
            "v": p["v"],
            "a": -kk,
            "b": kk * a,
            "gk": gk,
            "scale": 1.0,
        }

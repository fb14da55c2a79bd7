r"""A short causal convolution over time, run as a cell: the token mixing that the xLSTM
and Griffin blocks put in front of their recurrences."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax.cells.base import Cell, lead

__all__ = ["CausalConv", "CausalConvState"]


class CausalConvState(NamedTuple):
    """State of :class:`CausalConv`: ``a`` of shape ``((K - 1) H,)``, the parts of the
    next ``K - 1`` outputs that the inputs seen so far contribute (slot ``j`` belongs to
    the output ``j + 1`` steps ahead).

    Example:
      >>> import rnnjax as rj
      >>> rj.CausalConv(3, 3, width=4).initial_state().a.shape
      (9,)
    """

    a: jax.Array


@dataclasses.dataclass(frozen=True)
class CausalConv(Cell):
    r"""A causal convolution of width ``K`` over time, as a cell.

    .. math::

        y_t = b + \sum_{k=0}^{K-1} W_k^\top x_{t-k}
        \quad(\text{depthwise: } y_t = b + \textstyle\sum_k w_k \odot x_{t-k})

    with :math:`x_{t-k} = 0` before the sequence starts (and before a reset: a segment
    never sees the one before it). Run by the engine, it gets every guarantee of
    :func:`rnnjax.unroll`: ``length`` (outputs exactly zero past it), ``reverse`` (the
    convolution then reads the following steps, as a backward direction should),
    ``resets`` and every derivative. Each step adds its input's contribution to the next
    ``K - 1`` outputs to the state (overlap-add), so the products ``W_k^T x_t`` are
    input-only work the engine may do for all steps at once.

    The xLSTM block (Beck et al. 2024) puts a depthwise causal convolution of width 4 in
    front of the mLSTM, Griffin (De et al. 2024) one in front of the RG-LRU: in one
    recurrent layer, a step then sees the tokens just before it (a key and its value, for
    associative recall).

    Params: ``w`` ``(K, I, H)`` and ``b`` ``(H,)``; depthwise ``w`` ``(K, I)`` and ``b``
    ``(I,)``. ``w[k]`` multiplies the input ``k`` steps back. Initialised LeCun normal
    (variance ``1 / (K I)``, depthwise ``1 / K``), ``b = 0``. State:
    :class:`CausalConvState`.

    Args:
      input_size: ``I``.
      hidden_size: ``H`` (the output size; equal to ``I`` when ``depthwise``).
      width: ``K`` >= 2, the number of steps each output reads (its own and ``K - 1``
        before it).
      depthwise: one filter per feature (``H == I``), as the papers' blocks use.
      param_dtype, dtype: as in :class:`rnnjax.cells.base.Cell`.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> conv = rj.CausalConv(1, 1, width=2, depthwise=True)
      >>> params = {"w": jnp.array([[1.0], [10.0]]), "b": jnp.zeros(1)}  # x_t + 10 x_{t-1}
      >>> _, ys = rj.unroll(conv, params, jnp.array([[1.0], [2.0], [3.0]]))
      >>> ys[:, 0].tolist()
      [1.0, 12.0, 23.0]
    """

    width: int = 4
    depthwise: bool = False

    State = CausalConvState

    def __post_init__(self):
        super().__post_init__()
        checks.integer("width", self.width, 2)
        checks.boolean("depthwise", self.depthwise)
        if self.depthwise and self.hidden_size != self.input_size:
            raise ValueError(
                "a depthwise CausalConv keeps the feature count: hidden_size must equal "
                f"input_size ({self.input_size}); got {self.hidden_size}"
            )

    def _state_sizes(self) -> dict:
        return {"a": self.state_size}

    @property
    def state_size(self) -> int:
        """Size of the state vector ``a``: ``(K - 1) H``."""
        return (self.width - 1) * self.hidden_size

    def init(self, key) -> dict:
        """Parameters ``{"w": (K, I, H), "b": (H,)}`` (depthwise ``(K, I)``, ``(I,)``).

        Example:
          >>> import jax, rnnjax as rj
          >>> p = rj.CausalConv(2, 3, width=4).init(jax.random.key(0))
          >>> p["w"].shape, p["b"].shape
          ((4, 2, 3), (3,))
        """
        K, I, H, dt = self.width, self.input_size, self.hidden_size, self._init_dtype()
        if self.depthwise:
            w = jax.random.normal(key, (K, I), dt) / jnp.sqrt(jnp.asarray(K, dt))
        else:
            w = jax.random.normal(key, (K, I, H), dt) / jnp.sqrt(jnp.asarray(K * I, dt))
        return self._cast({"w": w, "b": jnp.zeros((H,), dt)})

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """``W_k^T x`` for every tap ``k``: shape ``(..., K, H)``."""
        w = params["w"]
        if self.depthwise:
            cd = jnp.dtype(self.dtype) if self.dtype is not None else w.dtype
            out = jnp.promote_types(jnp.float32, jnp.promote_types(cd, x.dtype))
            xk = x.astype(cd)[..., None, :] * lead(w.astype(cd), x.ndim + 1)
            return xk.astype(out)
        K, I, H = w.shape
        y = self.mm(x, jnp.transpose(w, (1, 0, 2)).reshape(I, K * H))
        return y.reshape(x.shape[:-1] + (K, H))

    def recur(self, params: dict, state: CausalConvState, xp):
        """Overlap-add: the output is this step's tap 0 plus what earlier inputs left for
        it; the taps ``1..K-1`` join the slots of the outputs ahead."""
        H, K = self.hidden_size, self.width
        a = state.a.reshape(state.a.shape[:-1] + (K - 1, H)).astype(xp.dtype)
        y = xp[..., 0, :] + a[..., 0, :] + lead(params["b"], xp.ndim - 1).astype(xp.dtype)
        ahead = jnp.concatenate([a[..., 1:, :] + xp[..., 1 : K - 1, :], xp[..., K - 1 :, :]], -2)
        new = ahead.reshape(state.a.shape).astype(state.a.dtype)
        return CausalConvState(a=new), y

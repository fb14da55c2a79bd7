r"""The xLSTM and Griffin residual blocks, composed from :class:`rnnjax.ResidualBlock`.

Both papers stack pre-norm residual blocks around a recurrent layer; here each is one
:class:`rnnjax.ResidualBlock` configured as the paper's block (stack them with
:class:`rnnjax.DeepRecurrent`):

- :func:`xlstm_block` ``("slstm")``: post-up-projection block, ``x + sLSTM(norm x)``
  then ``+ GLU-MLP(norm .)`` (Beck et al. 2024, Fig. 9).
- :func:`xlstm_block` ``("mlstm")``: pre-up-projection block, ``x + W_down mLSTM(norm x)``
  with the mLSTM working at width ``2D`` (its ``q, k, v`` projections are the
  up-projection; Beck et al. 2024, Fig. 10).
- :func:`griffin_block`: RMS-norm, the RG-LRU, a residual, then a gated MLP of expansion
  3 with its own residual (De et al. 2024, Fig. 2).

``conv=K`` puts the papers' depthwise causal convolution of width ``K`` (4 in both papers;
:class:`rnnjax.CausalConv`) in front of the recurrence, inside the residual branch; the
default ``conv=0`` leaves it out. It matters for recall: in the associative-recall
reproduction, one mLSTM layer binds keys to values only when each step also sees the
previous token.

What the composition leaves out, each said where it applies: the SiLU after the
convolution, and the convolution's bypass of some inputs (here every projection of the
cell reads the convolved input; in the papers the mLSTM's values and the sLSTM's ``z`` and
``o`` read the unconvolved one); the mLSTM block's learnable skip and SiLU output branch
(its output gate ``o_t`` stands in); Griffin's GeLU branch and linear layer around the
RG-LRU; the block-level group norm of the xLSTM heads. The mixer's gate is a sigmoid
(GLU) where the papers use GeLU/SiLU gates, and its expansion is an integer (the sLSTM
block's ``4/3`` becomes ``1`` by default).

References:
  Beck et al. (2024). xLSTM: Extended long short-term memory.
  De et al. (2024). Griffin: Mixing gated linear recurrences with local attention for
  efficient language models.
"""

from __future__ import annotations

from typing import Optional

from rnnjax import checks
from rnnjax.blocks.residual import ResidualBlock
from rnnjax.cells import linear_attention as la
from rnnjax.cells.conv import CausalConv
from rnnjax.cells.mlstm import MLSTM
from rnnjax.cells.rglru import RGLRU
from rnnjax.cells.slstm import SLSTM
from rnnjax.engine import ScanConfig
from rnnjax.layers import Recurrent, Stacked

__all__ = ["xlstm_block", "griffin_block", "linear_attention_block"]


def xlstm_block(
    width: int,
    kind: str = "mlstm",
    num_heads: int = 4,
    config=None,
    expansion: Optional[int] = None,
    conv: int = 0,
) -> ResidualBlock:
    """An xLSTM block of width ``D`` (see the module docstring).

    Args:
      width: ``D``, the block's input and output size.
      kind: ``"mlstm"`` (pre-up-projection: the mLSTM at width ``2D``, projected back) or
        ``"slstm"`` (post-up-projection: the sLSTM at width ``D``, then a GLU MLP).
      num_heads: heads of the cell (``2D`` or ``D`` divisible by it).
      config: a :class:`rnnjax.ScanConfig` for the recurrent layer (e.g.
        ``method="parallel"`` for the mLSTM's parallel form).
      expansion: the sLSTM block's MLP expansion (default 1; the paper's 4/3 is not an
        integer).
      conv: width of a depthwise causal convolution in front of the cell (the paper:
        4); 0 (default): none.

    Returns:
      A :class:`rnnjax.ResidualBlock`.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.blocks import xlstm_block
      >>> block = xlstm_block(8, "mlstm", num_heads=2)
      >>> p = block.init(jax.random.key(0))
      >>> _, ys = block.apply(p, jnp.ones((5, 8)), length=4)
      >>> ys.shape, bool((ys[4:] == 0).all())
      ((5, 8), True)
    """
    checks.integer("width", width, 1)
    checks.choice("kind", kind, ("mlstm", "slstm"))
    if kind == "mlstm":
        layer = Recurrent(MLSTM(width, 2 * width, num_heads=num_heads), config=config)
        return ResidualBlock(
            _with_conv(layer, width, conv), mixer=None, norm="layer", residual="each"
        )
    layer = _with_conv(
        Recurrent(SLSTM(width, width, num_heads=num_heads), config=config), width, conv
    )
    return ResidualBlock(
        layer,
        mixer="glu",
        expansion=1 if expansion is None else expansion,
        norm="layer",
        residual="each",
    )


def griffin_block(
    width: int, num_heads: int = 1, config=None, expansion: int = 3, conv: int = 0
) -> ResidualBlock:
    """Griffin's recurrent block of width ``D`` (see the module docstring): RMS-norm, the
    RG-LRU, a residual, RMS-norm, a gated MLP of ``expansion`` (3 in the paper), a
    residual.

    Args:
      width: ``D``.
      num_heads: blocks of the RG-LRU's gate weights.
      config: a :class:`rnnjax.ScanConfig` for the RG-LRU (``method="parallel"``: a
        parallel scan).
      expansion: the MLP's expansion.
      conv: width of a depthwise causal convolution in front of the RG-LRU (the paper:
        4); 0 (default): none.

    Returns:
      A :class:`rnnjax.ResidualBlock`.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> block = rj.griffin_block(8, num_heads=2, config=rj.ScanConfig(method="parallel"))
      >>> p = block.init(jax.random.key(0))
      >>> _, ys = block.apply(p, jnp.ones((5, 8)))
      >>> ys.shape
      (5, 8)
    """
    checks.integer("width", width, 1)
    layer = Recurrent(RGLRU(width, width, num_heads=num_heads), config=config)
    layer = _with_conv(layer, width, conv)
    return ResidualBlock(layer, mixer="glu", expansion=expansion, norm="rms", residual="each")


MATRIX_CELLS = {
    "linear_attention": la.LinearAttention,
    "retention": la.Retention,
    "gla": la.GLA,
    "mamba2": la.Mamba2,
    "deltanet": la.DeltaNet,
    "gated_deltanet": la.GatedDeltaNet,
    "kda": la.KDA,
    "rwkv7": la.RWKV7,
}


def linear_attention_block(
    width: int,
    kind: str = "gated_deltanet",
    num_heads: int = 4,
    config=None,
    expansion: int = 2,
    conv: int = 4,
) -> ResidualBlock:
    """The block of the linear-attention papers (DeltaNet, Gated DeltaNet, GLA, KDA, RWKV-7,
    Mamba-2, RetNet) around a matrix-state cell of width ``D``: RMS-norm, a depthwise causal
    convolution of width ``conv`` (4 in the papers; 0: none), the cell's ``num_heads``
    heads, a residual, then RMS-norm, a gated MLP of ``expansion`` and a residual.

    Left out (each cell's docstring says what the cell keeps): the SiLU after the
    convolution, the output gate and per-head norm in front of the output projection (the
    block's residual projection stands in), and the papers' low-rank gate projections.

    Args:
      width: ``D``, the block's input and output size (a multiple of ``num_heads``).
      kind: the cell: ``"linear_attention"``, ``"retention"``, ``"gla"``, ``"mamba2"``,
        ``"deltanet"``, ``"gated_deltanet"`` (default), ``"kda"`` or ``"rwkv7"``.
      num_heads: heads of the cell.
      config: a :class:`rnnjax.ScanConfig` (default: ``method="auto"``, the chunkwise form).
      expansion: the MLP's expansion.
      conv: width of the depthwise causal convolution in front of the cell; 0: none.

    Returns:
      A :class:`rnnjax.ResidualBlock` (stack them with :class:`rnnjax.DeepRecurrent`).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> block = rj.linear_attention_block(8, "gated_deltanet", num_heads=2)
      >>> p = block.init(jax.random.key(0))
      >>> _, ys = block.apply(p, jnp.ones((5, 8)), length=4)
      >>> ys.shape, bool((ys[4:] == 0).all())
      ((5, 8), True)
    """
    checks.integer("width", width, 1)
    checks.choice("kind", kind, tuple(MATRIX_CELLS))
    config = ScanConfig(method="auto") if config is None else config
    cell = MATRIX_CELLS[kind](width, width, num_heads=num_heads)
    layer = _with_conv(Recurrent(cell, config=config), width, conv)
    return ResidualBlock(layer, mixer="glu", expansion=expansion, norm="rms", residual="each")


def _with_conv(layer, width: int, conv: int):
    """``layer``, or a depthwise causal convolution of width ``conv`` and then ``layer``."""
    if checks.integer("conv", conv, 0) == 0:
        return layer
    if conv == 1:
        raise ValueError("conv must be 0 (no convolution) or a width of at least 2; got 1")
    return Stacked([Recurrent(CausalConv(width, width, width=conv, depthwise=True)), layer])

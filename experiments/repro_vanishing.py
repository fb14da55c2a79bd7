"""Claim 1: vanishing (and exploding) gradients through time; the LSTM's cell state keeps them.

For a tanh RNN, ``||dL/dh_t||`` (loss at the last step) decays exponentially in
``T - t`` when the recurrent matrix's largest singular value is below 1 and grows when it
is well above 1 (Bengio et al. 1994; Pascanu et al. 2013); an LSTM with forget bias 1
keeps it flat far longer. Measured with :func:`rnnjax.diagnostics.gradient_norms_through_time`
at initialisation (no training) for orthogonal ``W_hh`` scaled by ``scale`` (so
``sigma_max = scale`` for the RNN; the whole fused ``W_hh`` is scaled for LSTM and GRU),
averaged over 16 input sequences ``x_t ~ N(0, 1)``, H = 64, I = 8, T = 200; the loss is
the sum of the final ``h`` (a fixed linear readout).

Computed in float64 (x64 enabled in this script) so that norms below 1e-38 do not
underflow. Reported per (cell, scale): the ratio ``||dL/dh_{T-1-k}|| / ||dL/dh_{T-1}||``
at lags ``k`` = 10, 50 and T - 1 (geometric mean over sequences), the fitted log-decay
per step back (slope of ``-log ||dL/dh_{T-1-k}||`` against ``k``: positive means
vanishing, negative exploding), the lag at which the norm first falls below 1e-3 of its
value at the last step, and the Pascanu bound's verdict (RNN only: for the gated cells
the bound on one block says nothing about the gates).

Run (seed 0): ``python experiments/repro_vanishing.py`` (``--quick``: T = 40, 4 sequences).
Writes ``results/repro_vanishing.json`` and ``.png``.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)  # noqa: E402 - before any array is made
import jax.numpy as jnp
import numpy as np
import repro_common as rc

import rnnjax as rj
from rnnjax.diagnostics import gradient_norms_through_time, pascanu_bound

SEED = 0
H, I = 64, 8
SCALES = (0.5, 0.9, 1.0, 1.5, 3.0)


def _one(name, scale, p, norms_fn, xs, T):
    """Gradient norms through time of cell ``name`` with its recurrent matrix scaled by
    ``scale``: the record of its decay and the geometric-mean curve over lags."""
    g = np.asarray(norms_fn(p, xs), np.float64)  # (n_seq, T)
    with np.errstate(divide="ignore"):
        logg = np.log(g)[:, ::-1]  # lag k = T - 1 - t
    mean_log = logg.mean(0)
    ok = np.isfinite(mean_log)
    lags = np.arange(T)
    slope = float(-np.polyfit(lags[ok], mean_log[ok], 1)[0])
    ratios = {
        f"lag_{k}": float(np.exp(mean_log[k] - mean_log[0])) for k in (10, 50, T - 1) if k < T
    }
    below = np.nonzero(mean_log < mean_log[0] + np.log(1e-3))[0]
    horizon = int(below.min()) if below.size else None
    block = (
        p["w_hh"]
        if name == "rnn"
        else p["w_hh"][:, :H]
        if name == "lstm"
        else p["w_hh"][:, 2 * H :]
    )
    b = pascanu_bound(p["w_hh"]) if name == "rnn" else pascanu_bound(block)
    print(
        f"{name:5s} scale {scale:4.1f}: decay/step {slope:+.3f}  lag to 1e-3 {horizon}  "
        f"ratios {', '.join(f'{k}={v:.2e}' for k, v in ratios.items())}"
    )
    record = {
        "cell": name,
        "scale": scale,
        "sigma_max_w_hh_block": float(b.sigma_max),
        "pascanu_vanishing_guaranteed": bool(b.vanishing) if name == "rnn" else None,
        "ratio_to_last": ratios,
        "log_decay_per_step_back": slope,
        "lag_to_fall_1e-3": horizon,
    }
    return record, np.exp(mean_log)


def _claims(r) -> dict:
    return {
        "rnn_vanishes_below_1": all(
            r[f"rnn@{s}"]["log_decay_per_step_back"] > 0 for s in SCALES if s < 1
        ),
        "rnn_grows_well_above_1": all(
            r[f"rnn@{s}"]["log_decay_per_step_back"] < 0 for s in SCALES if s > 1.2
        ),
        "lstm_flatter_than_rnn_at_scale_1": r["lstm@1.0"]["log_decay_per_step_back"]
        < r["rnn@1.0"]["log_decay_per_step_back"],
    }


def _plot(plt, curves, cells, T):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for ax, name in zip(axes, cells):
        for s in SCALES:
            ax.semilogy(np.arange(T), curves[(name, s)], label=f"scale {s}")
        ax.set_title(f"{name.upper()}: ||dL/dh_t|| (loss at t = T-1)")
        ax.set_xlabel("lag T - 1 - t (steps back)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("gradient norm (geometric mean)")
    return fig


def main():
    args = rc.parse(__doc__)
    T, n_seq = (40, 4) if args.quick else (200, 16)
    key = jax.random.key(SEED)
    k_x, k_p = jax.random.split(key)
    xs = jax.random.normal(k_x, (n_seq, T, I), jnp.float64)
    cells = {"rnn": rj.SimpleRNN(I, H), "lstm": rj.LSTM(I, H, forget_bias=1.0), "gru": rj.GRU(I, H)}
    out = {
        "seed": SEED,
        "T": T,
        "H": H,
        "I": I,
        "sequences": n_seq,
        "scales": list(SCALES),
        "runs": {},
    }
    curves = {}
    for name, cell in cells.items():
        base = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), cell.init(k_p))
        norms_fn = jax.jit(
            jax.vmap(
                lambda p, x, cell=cell: gradient_norms_through_time(cell, p, x).h, in_axes=(None, 0)
            )
        )
        for scale in SCALES:
            p = dict(base, w_hh=base["w_hh"] * scale)
            out["runs"][f"{name}@{scale}"], curves[(name, scale)] = _one(
                name, scale, p, norms_fn, xs, T
            )
    out["claims"] = _claims(out["runs"])
    plt = rc.pyplot()
    rc.save(args, "repro_vanishing", out, plt and _plot(plt, curves, cells, T))


if __name__ == "__main__":
    from entry import run_main

    run_main(main)

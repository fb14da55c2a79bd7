"""The benchmark's quality row: Mackey-Glass next-step prediction, the test NRMSE each
model reaches within the same wall-clock budget (see ``experiments/benchmark.py``).

Shapes: ``H`` hidden, ``N`` reservoir size.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax as rj
from experiments import bench_peers as peers


def _mackey_glass(n: int):
    try:
        from rnnjax.tasks.mackey_glass import mackey_glass

        return np.asarray(mackey_glass(n, 17), np.float64)
    except ImportError:  # the task module is optional here; same integration scheme
        lag, sub, discard, dt = 170, 10, 1000, 0.1
        steps = (n + discard) * sub
        x = np.full(lag + 1 + steps, 1.2)
        for t in range(lag, lag + steps):
            d = x[t - lag]
            x[t + 1] = x[t] + dt * (0.2 * d / (1 + d**10) - 0.1 * x[t])
        return x[lag + 1 :: sub][discard : discard + n]


def _split(series):
    n_train = int(0.7 * (len(series) - 1))
    u = series - series[: n_train + 1].mean()
    us, ys = u[:-1, None].astype(np.float32), u[1:, None].astype(np.float32)
    return us, ys, n_train


def _nrmse(pred, target):
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    return float(np.sqrt(np.mean((pred - target) ** 2)) / np.std(target))


def _gradient_model(cell_name, us, ys, n_train, budget_s, seed, H=32, window=100, batch=16):
    cell = {"lstm": rj.LSTM, "gru": rj.GRU}[cell_name](1, H)
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {
        "cell": cell.init(k1),
        "w_out": jax.random.normal(k2, (H, 1)) / math.sqrt(H),
        "b_out": jnp.zeros((1,)),
    }
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))
    opt_state = opt.init(params)
    us_tr, ys_tr = jnp.asarray(us[:n_train]), jnp.asarray(ys[:n_train])
    washout = 10

    def loss_fn(p, x, y):
        _, hs = rj.unroll_batch(cell, p["cell"], x)
        pred = hs @ p["w_out"] + p["b_out"][None, None, :]
        return jnp.mean(jnp.square(pred[:, washout:] - y[:, washout:]))

    @jax.jit
    def train_step(p, s, key):
        starts = jax.random.randint(key, (batch,), 0, n_train - window)
        idx = starts[:, None] + jnp.arange(window)[None, :]
        loss, g = jax.value_and_grad(loss_fn)(p, us_tr[idx], ys_tr[idx])
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, loss

    @jax.jit
    def predict(p):
        _, hs = rj.unroll(cell, p["cell"], jnp.asarray(us))
        return hs @ p["w_out"] + p["b_out"][None, :]

    key = jax.random.key(seed + 1)
    t0 = time.perf_counter()
    jax.block_until_ready(train_step.lower(params, opt_state, key).compile())
    jax.block_until_ready(predict.lower(params).compile())
    compile_s = time.perf_counter() - t0
    curve, elapsed, steps = [], 0.0, 0
    next_eval = 0.0
    while True:
        if elapsed >= next_eval or elapsed >= budget_s:
            err = _nrmse(np.asarray(predict(params))[n_train:], ys[n_train:])
            curve.append([elapsed, err, steps])
            next_eval = elapsed + budget_s / 8
            if elapsed >= budget_s:
                break
        key, sub = jax.random.split(key)
        t = time.perf_counter()
        params, opt_state, loss = train_step(params, opt_state, sub)
        jax.block_until_ready(loss)
        elapsed += time.perf_counter() - t
        steps += 1
    return {
        "model": f"{cell_name} H={H} (adam, clip 1.0)",
        "compile_s": compile_s,
        "train_s": elapsed,
        "steps": steps,
        "nrmse": curve[-1][1],
        "curve": curve,
    }


def _esn_model(us, ys, n_train, N, seed):
    from rnnjax import reservoir as esn

    def once(s):
        t0 = time.perf_counter()
        cell = esn.EchoState(
            1,
            N,
            spectral_radius=0.95,
            leak_rate=0.3,
            input_scaling=1.0,
            density=0.1,
            input_density=0.2,
        )
        params = cell.init(jax.random.key(s))
        readout, state = esn.fit_ridge(
            cell,
            params,
            jnp.asarray(us[:n_train]),
            jnp.asarray(ys[:n_train]),
            ridge=1e-7,
            washout=100,
        )
        _, pred = esn.predict(cell, params, readout, jnp.asarray(us[n_train:]), state)
        pred = np.asarray(pred)
        return time.perf_counter() - t0, _nrmse(pred, ys[n_train:])

    cold, _ = once(seed)  # includes compilation
    warm, err = once(seed)
    return {
        "model": f"esn N={N} (ridge 1e-7, float64 readout)",
        "compile_s": max(0.0, cold - warm),
        "train_s": warm,
        "steps": 1,
        "nrmse": err,
        "curve": [[warm, err, 1]],
    }


def quality_task(preset, seed, log=print) -> dict:
    """Mackey-Glass next-step prediction: the test NRMSE each model reaches within the
    same wall-clock budget (training time; compile time recorded apart)."""
    series = _mackey_glass(preset.quality_series)
    us, ys, n_train = _split(series)
    out = {
        "budget_s": preset.quality_budget_s,
        "n_train": n_train,
        "n_test": len(us) - n_train,
        "preprocessing": "tau=17, dt=0.1, every 10th sample, 1000 discarded; centred by the "
        "training mean; inputs u[t], targets u[t+1]",
        "models": [],
    }
    for cell_name in ("lstm", "gru"):
        out["models"].append(
            _gradient_model(cell_name, us, ys, n_train, preset.quality_budget_s, seed)
        )
        log(f"  quality {cell_name}: NRMSE {out['models'][-1]['nrmse']:.3g}")
    if peers.has_esn():
        for N in preset.esn_sizes:
            try:
                out["models"].append(_esn_model(us, ys, n_train, N, seed))
                log(f"  quality esn N={N}: NRMSE {out['models'][-1]['nrmse']:.3g}")
            except Exception as e:  # noqa: BLE001
                log(f"  quality esn N={N}: skipped ({type(e).__name__}: {e})")
    return out

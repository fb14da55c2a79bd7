"""The benchmark's run: measurements, tables, JSON and plot (see ``experiments/benchmark.py``).

Shapes: ``B`` batch, ``T`` time, ``I`` input, ``H`` hidden, ``N`` reservoir size.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax as rj
from experiments import bench_core as core
from experiments import bench_peers as peers

__all__ = [
    "run",
    "matmul_peak",
    "quality_task",
    "bidirectional_compile",
    "remat_memory",
    "flax_modules",
    "measure_shape",
    "ratio_rows",
    "targets",
]


def environment() -> dict:
    """The machine and software the figures were taken on."""
    dev = jax.devices()[0]
    env = {
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": str(getattr(dev, "device_kind", "unknown")),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count() or 0,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    try:
        import flax

        env["flax_version"] = flax.__version__
    except ImportError:
        pass
    try:
        import torch

        env["torch_version"] = torch.__version__
        env["torch_threads"] = peers.torch_threads()
        env["torch_thread_probe_s"] = peers.torch_thread_probe().get("probe_s")
    except ImportError:
        pass
    try:
        with open("/proc/loadavg") as f:
            env["loadavg_start"] = f.read().split()[:3]
    except OSError:
        pass
    return env


def matmul_peak(n: int, dtype_name: str, reps: int = 5) -> dict:
    """The machine's matrix-multiply throughput: best of ``reps`` ``(n, n) @ (n, n)`` in
    JAX and, if installed, PyTorch; the peak is the larger."""
    dt = peers.jax_dtype(dtype_name)
    a = jax.random.normal(jax.random.key(0), (n, n)).astype(dt)
    b = jax.random.normal(jax.random.key(1), (n, n)).astype(dt)
    f = jax.jit(jnp.matmul)
    jax.block_until_ready(f(a, b))
    best = min(core.time_call(lambda: jax.block_until_ready(f(a, b))) for _ in range(reps))
    out = {"n": n, "dtype": dtype_name, "jax_gflops": 2 * n**3 / best / 1e9}
    try:
        import torch

        tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
        ta, tb = torch.randn(n, n, dtype=tdt), torch.randn(n, n, dtype=tdt)
        torch.mm(ta, tb)
        tbest = min(core.time_call(lambda: torch.mm(ta, tb)) for _ in range(reps))
        out["torch_gflops"] = 2 * n**3 / tbest / 1e9
    except ImportError:
        pass
    out["gflops"] = max(v for k, v in out.items() if k.endswith("_gflops"))
    return out


def _device_peak_bytes():
    try:
        stats = jax.devices()[0].memory_stats()
        return None if not stats else stats.get("peak_bytes_in_use")
    except Exception:  # noqa: BLE001
        return None


def measure_shape(shape, cell, impls, dtype_name, preset, peak_gflops, log=print) -> list:
    """Time ``impls`` for ``cell`` at ``shape`` in alternated rounds.

    Returns:
      One result dict per implementation that could be built (see the JSON schema in
      :mod:`experiments.bench_core`).
    """
    runners = {}
    for impl in impls:
        if (impl, cell) in getattr(preset, "skip", ()):
            continue
        try:
            r = peers.build(impl, cell, shape, dtype_name)
            runners[r.impl] = r
        except NotImplementedError as e:
            if "has no" not in str(e):  # a missing cell is expected; anything else is news
                log(f"  {impl} {cell} {shape.label()}: skipped (NotImplementedError: {e})")
            continue
        except Exception as e:  # noqa: BLE001 - a peer that fails is reported, not fatal
            log(f"  {impl} {cell} {shape.label()}: skipped ({type(e).__name__}: {e})")
    if not runners:
        return []
    memory = {k: dict(r.memory) for k, r in runners.items()}
    first = []
    for impl, r in runners.items():  # warm-up call, with the resident-memory probe
        for mode in ("fwd", "train"):
            fn = getattr(r, mode)
            if fn is None:
                continue
            with core.RSSPeak() as probe:
                first.append(core.time_call(fn))
            memory[impl][f"{mode}_rss_delta_bytes"] = probe.peak_bytes
        dev = _device_peak_bytes()
        if dev is not None:
            memory[impl]["device_peak_bytes"] = int(dev)
    reps = core.adaptive_reps(first, preset.budget_s, preset.min_reps, preset.max_reps)
    times = {impl: {"fwd": [], "train": []} for impl in runners}
    for _ in range(reps):
        for impl, r in runners.items():  # alternate: one call of each, then again
            times[impl]["train"].append(core.time_call(r.train) if r.train else None)
            times[impl]["fwd"].append(core.time_call(r.fwd))
    out = []
    for impl, r in runners.items():
        fwd = times[impl]["fwd"]
        train = [t for t in times[impl]["train"] if t is not None]
        fl = {"fwd": core.flops(cell, shape, False)}
        if train:
            fl["train"] = core.flops(cell, shape, True)
        gf = {"fwd": fl["fwd"] / statistics.median(fwd) / 1e9}
        if train:
            gf["train"] = fl["train"] / statistics.median(train) / 1e9
        out.append(
            {
                "shape": core.shape_dict(shape),
                "cell": cell,
                "impl": impl,
                "dtype": dtype_name,
                "fwd_s": fwd,
                "train_s": train,
                "fwd_summary": core.summarize(fwd),
                "train_summary": core.summarize(train) if train else None,
                "compile_s": r.compile_s,
                "memory": memory[impl],
                "flops": fl,
                "gflops": gf,
                "peak_fraction": {k: v / peak_gflops for k, v in gf.items()},
            }
        )
    return out


def ratio_rows(results: list) -> list:
    """rnnjax against every other implementation measured at the same shape and cell,
    per mode (``fwd``, ``train``): :func:`experiments.bench_core.paired_ratios`."""
    rows = []
    by_key = {}
    for r in results:
        by_key.setdefault((tuple(sorted(r["shape"].items())), r["cell"]), {})[r["impl"]] = r
    for (_, cell), group in by_key.items():
        ours = group.get("rnnjax")
        if ours is None:
            continue
        for peer, theirs in group.items():
            if peer == "rnnjax":
                continue
            for mode, key in (("train", "train_s"), ("fwd", "fwd_s")):
                if not ours[key] or not theirs[key]:
                    continue
                q = core.paired_ratios(ours[key], theirs[key])
                rows.append(
                    {
                        "shape": ours["shape"],
                        "cell": cell,
                        "impl": "rnnjax",
                        "peer": peer,
                        "mode": mode,
                        **q,
                    }
                )
    return rows


# --------------------------------------------------------------------------- quality


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


# --------------------------------------------------------------------------- extras


def bidirectional_compile(Ts=(128, 4096), B=8, I=32, H=64) -> list:
    """Trace + compile seconds (wall and CPU) of a 2-layer bidirectional LSTM's training
    step."""
    model = rj.Stacked([rj.Bidirectional(rj.LSTM(I, H)), rj.Bidirectional(rj.LSTM(2 * H, H))])
    params = model.init(jax.random.key(0))
    rows = []
    for T in Ts:
        xs = jnp.zeros((B, T, I))
        step = jax.jit(jax.grad(lambda p, x: jnp.mean(model.apply_batch(p, x)[1] ** 2)))
        t0, c0 = time.perf_counter(), time.process_time()
        step.lower(params, xs).compile()
        # CPU seconds too: on a loaded machine the wall time mostly measures the queue
        rows.append(
            {
                "T": T,
                "B": B,
                "I": I,
                "H": H,
                "compile_s": time.perf_counter() - t0,
                "compile_cpu_s": time.process_time() - c0,
            }
        )
    return rows


def remat_memory(T=10000, B=4, I=32, H=64) -> dict:
    """XLA's peak buffer size and the time of an LSTM training step at length ``T``,
    default vs ``rnnjax.ScanConfig(remat=True)`` (chunks of ``ceil(sqrt(T))`` steps)."""
    cell = rj.LSTM(I, H)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    out = {"T": T, "B": B, "I": I, "H": H}
    for name, remat in (("default", None), ("remat", True)):
        config = rj.ScanConfig(remat=remat)
        step = jax.jit(
            jax.grad(lambda p, x: jnp.mean(rj.unroll_batch(cell, p, x, config=config)[1] ** 2))
        )
        compiled = step.lower(params, xs).compile()
        m = compiled.memory_analysis()
        jax.block_until_ready(compiled(params, xs))
        t = min(
            core.time_call(lambda: jax.block_until_ready(compiled(params, xs))) for _ in range(2)
        )
        out[name] = {
            "temp_bytes": int(m.temp_size_in_bytes),
            "total_bytes": int(
                m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
            ),
            "train_s": t,
        }
    out["peak_ratio"] = out["remat"]["total_bytes"] / out["default"]["total_bytes"]
    out["time_ratio"] = out["remat"]["train_s"] / out["default"]["train_s"]
    return out


def flax_modules(quick: bool = False) -> dict:
    """fwd+bwd time of ``rnnjax.linen`` / ``rnnjax.nnx`` 2-layer bidirectional LSTMs over
    the functional layer they wrap, alternating (``experiments/flax_overhead.py``)."""
    from experiments import flax_overhead

    if quick:
        return flax_overhead.measure(rounds=3, shape=(4, 16, 8, 16))
    return flax_overhead.measure(rounds=10)


def bench_regularised_shape():
    from experiments import bench_regularised

    return bench_regularised.SHAPE


def regularised(quick: bool = False) -> dict:
    """A 2-layer LSTM with dropout against the same without it and against PyTorch, and
    bfloat16 against float32 (``experiments/bench_regularised.py``)."""
    from experiments import bench_regularised

    if quick:
        return bench_regularised.measure(rounds=2, shape=(4, 16, 8, 16))
    return bench_regularised.measure(rounds=7)


# --------------------------------------------------------------------------- targets


def esn_sweep(out: str, quick: bool = False) -> dict:
    """The 64-model echo state sweep (NARMA-10, N=500) against a loop of ReservoirPy
    models and the dense-matmul floor of the same work, in this run
    (:mod:`experiments.esn_sweep_floor`; the loop is skipped without ReservoirPy)."""
    import importlib.util

    from experiments import esn_sweep_floor

    argv = ["--quick"] if quick else ["--reps", "3"]
    if importlib.util.find_spec("reservoirpy") is None:
        argv.append("--no-reservoirpy")
    import contextlib
    import io

    os.makedirs(out, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the script's own JSON dump
        return esn_sweep_floor.main(argv + ["--out", os.path.join(out, "esn_sweep_floor.json")])


def _ratio(ratios, shape, cell, peer, mode="train"):
    for q in ratios:
        if (
            q["shape"] == core.shape_dict(shape)
            and q["cell"] == cell
            and q["peer"] == peer
            and q["mode"] == mode
        ):
            return q["of_medians"]
    return None


def targets(report) -> list:
    """The project's performance targets, each with its measured figure and whether it is
    met. Targets are judged only where they were set: at the default shapes (none for the
    ``--quick`` preset, whose tiny shapes say nothing about them), the compile times at
    their two lengths, the rematerialisation memory at ``T = 10000``."""
    rows = []
    if report["config"].get("preset") == "quick":
        return rows
    ratios = report["ratios"]
    shapes = [core.Shape(**s) for s in report["config"]["shapes"]]
    defaults = [s for s in core.DEFAULT_SHAPES if s in shapes]
    for s in defaults:
        lim = 1.0
        r = _ratio(ratios, s, "lstm", "torch")
        rows.append(
            {
                "target": f"LSTM <= {lim}x torch at {s.label()}",
                "value": r,
                "met": None if r is None else r <= lim,
            }
        )
        r = _ratio(ratios, s, "gru", "torch")
        rows.append(
            {
                "target": f"GRU <= 0.8x torch at {s.label()}",
                "value": r,
                "met": None if r is None else r <= 0.8,
            }
        )
    for s in defaults:
        for cell in ("lstm", "gru", "rnn"):
            r = _ratio(ratios, s, cell, peers.alternative_name())
            rows.append(
                {
                    "target": f"{cell.upper()} default <= 1.0x reference (same run) at {s.label()}",
                    "value": r,
                    "met": None if r is None else r <= 1.0,
                }
            )
    for s in defaults[:2]:
        for cell in ("lstm", "gru"):
            rs = [x for x in (_ratio(ratios, s, cell, p) for p in ("flax", "equinox")) if x]
            r = max(rs) if rs else None  # against the best (fastest) peer: the largest ratio
            rows.append(
                {
                    "target": f"{cell.upper()} <= 0.8x best Flax/Equinox at {s.label()}",
                    "value": r,
                    "met": None if r is None else r <= 0.8,
                }
            )
    if core.DEFAULT_SHAPES[3] in shapes:
        for res in report["results"]:
            if (
                res["impl"] == "rnnjax"
                and res["cell"] in ("lstm", "gru")
                and res["shape"] == core.shape_dict(core.DEFAULT_SHAPES[3])
            ):
                f = res["peak_fraction"].get("train")
                rows.append(
                    {
                        "target": f"{res['cell'].upper()} >= 85% of matmul peak at "
                        f"{core.DEFAULT_SHAPES[3].label()}",
                        "value": f,
                        "met": f >= 0.85,
                    }
                )
    for c in report.get("compile_bidirectional", []):
        rows.append(
            {
                "target": f"2-layer bidirectional LSTM compiles < 2 s at T={c['T']}",
                "value": c["compile_s"],
                "met": c["compile_s"] < 2.0,
            }
        )
    fm = report.get("flax_modules")
    if fm:
        for name in ("linen", "nnx split", "nnx.jit"):
            r = fm["ratio_to_functional"][name]
            rows.append(
                {
                    "target": f"Flax {name} within 5% of the functional layer (2-layer BiLSTM)",
                    "value": r,
                    "met": r <= 1.05,
                }
            )
    reg = report.get("regularised")
    if reg and tuple(reg["shape"].values()) == bench_regularised_shape():
        for k, v in reg["ratios"].items():
            if "target <=" in k:
                lim = float(k.split("target <=")[1].strip(" )"))
                rows.append(
                    {"target": k.split(" (target")[0] + f" <= {lim}", "value": v, "met": v <= lim}
                )
    sw = report.get("esn_sweep")
    if sw and sw["N"] == 500:
        rows.append(
            {
                "target": "ESN sweep (64 models, N=500) <= 2x the dense-matmul floor",
                "value": sw["sweep_over_floor"],
                "met": sw["sweep_over_floor"] <= 2.0,
            }
        )
        r = sw.get("reservoirpy_over_sweep")
        rows.append(
            {
                "target": "ReservoirPy loop >= 5x the ESN sweep's time",
                "value": r,
                "met": None if r is None else r >= 5.0,
            }
        )
    rm = report.get("remat")
    if rm and rm["T"] == 10000:
        rows.append(
            {
                "target": f"remat peak memory <= 1/4 of default at T={rm['T']}",
                "value": rm["peak_ratio"],
                "met": rm["peak_ratio"] <= 0.25,
            }
        )
    return rows


# --------------------------------------------------------------------------- output


def _fmt_ms(summary):
    if not summary:
        return "-"
    return f"{summary['median'] * 1e3:.2f} [{summary['q1'] * 1e3:.2f}-{summary['q3'] * 1e3:.2f}]"


def print_tables(report, console):
    from rich.table import Table

    t = Table(
        title=f"Timings ({report['config']['dtype']}, {report['environment']['backend']}, "
        f"matmul peak {report['matmul_peak']['gflops']:.1f} GFLOP/s), ms: median \\[q1-q3]"
    )
    for col in (
        "shape",
        "cell",
        "impl",
        "fwd ms",
        "train ms",
        "compile s (train)",
        "XLA MB (train)",
        "GFLOP/s (train)",
        "% peak",
    ):
        t.add_column(col, justify="right" if "ms" in col or "/" in col or "%" in col else "left")
    for r in report["results"]:
        mem = r["memory"].get("train_xla_bytes") or r["memory"].get("fwd_xla_bytes")
        gf = r["gflops"].get("train", r["gflops"]["fwd"])
        pf = r["peak_fraction"].get("train", r["peak_fraction"]["fwd"])
        comp = r["compile_s"].get("train", r["compile_s"].get("fwd"))
        t.add_row(
            core.Shape(**r["shape"]).label(),
            r["cell"],
            r["impl"],
            _fmt_ms(r["fwd_summary"]),
            _fmt_ms(r["train_summary"]),
            "-" if comp is None else f"{comp:.2f}",
            "-" if mem is None else f"{mem / 2**20:.1f}",
            f"{gf:.1f}",
            f"{100 * pf:.0f}%",
        )
    console.print(t)
    for reference in (False, True):
        rows = [q for q in report["ratios"] if is_reference(q["peer"]) == reference]
        if not rows:
            continue
        if reference:
            title = (
                "default / reference (same run): rnnjax's default path against its reference "
                "path (not a peer: the scan differentiated by autodiff), median \\[min-max]; "
                "target <= 1.0"
            )
        else:
            title = (
                "rnnjax time / peer time (paired rounds): median \\[min-max]; < 1 means rnnjax is "
                "faster"
            )
        t = Table(title=title)
        for col in (
            "shape",
            "cell",
            "reference" if reference else "peer",
            "train (fwd+bwd)",
            "forward",
        ):
            t.add_column(col)
        seen = {}
        for q in rows:
            seen.setdefault(
                (core.Shape(**q["shape"]).label(), q["cell"], impl_label(q["peer"])), {}
            )[q["mode"]] = q
        for (shape, cell, peer), modes in seen.items():
            cells = [
                f"{m['median']:.2f} [{m['min']:.2f}-{m['max']:.2f}]" if m else "-"
                for m in (modes.get("train"), modes.get("fwd"))
            ]
            t.add_row(shape, cell, peer, *cells)
        console.print(t)
    sw = report.get("esn_sweep")
    if sw:
        t = Table(
            title=f"Echo state sweep: {sw['models']} models, N={sw['N']}, NARMA-10, "
            f"{sw['T']}+{sw['T_test']} steps (median of {sw['reps']})"
        )
        for col in ("rnnjax sweep s", "ReservoirPy loop s", "matmul floor s", "sweep / floor"):
            t.add_column(col)
        rpy = sw.get("reservoirpy_loop_s")
        t.add_row(
            f"{sw['sweep_s']:.2f}",
            "-" if rpy is None else f"{rpy:.2f}",
            f"{sw['floor_s']:.2f}",
            f"{sw['sweep_over_floor']:.2f}",
        )
        console.print(t)
    q = report.get("quality")
    if q:
        t = Table(title=f"Mackey-Glass one-step test NRMSE within {q['budget_s']} s of training")
        for col in ("model", "train s", "steps", "compile s", "NRMSE"):
            t.add_column(col)
        for m in q["models"]:
            t.add_row(
                m["model"],
                f"{m['train_s']:.2f}",
                str(m["steps"]),
                f"{m['compile_s']:.2f}",
                f"{m['nrmse']:.3g}",
            )
        console.print(t)
    if not report["targets"]:
        console.print(
            "Performance targets: not judged (they were set for the default shapes; "
            "run without --quick and --shape to judge them)."
        )
        return
    t = Table(title="Performance targets (judged only where they were set)")
    for col in ("target", "measured", "met"):
        t.add_column(col)
    for row in report["targets"]:
        v = row["value"]
        t.add_row(
            row["target"],
            "-" if v is None else f"{v:.3g}",
            {True: "yes", False: "NO", None: "not measured"}[row["met"]],
        )
    console.print(t)


def is_reference(impl: str) -> bool:
    """Whether ``impl`` is a reference row (rnnjax itself with its fast paths off), not a
    peer library."""
    return impl == peers.alternative_name()


def impl_label(impl: str) -> str:
    """How an implementation is named in tables and plots."""
    return "rnnjax autodiff (reference)" if is_reference(impl) else impl


def _ratio_axis(ax, rows, title, color_of, right):
    """Horizontal bars of the median ratio with its range, the axis limited to the medians:
    a range past the edge is drawn to the edge with its end written there."""
    labels = [
        f"{q['cell']} {core.Shape(**q['shape']).label()}  vs {impl_label(q['peer'])}" for q in rows
    ]
    y = np.arange(len(rows))
    med = np.array([q["median"] for q in rows], float)
    lo = np.array([q["min"] for q in rows], float)
    hi = np.array([q["max"] for q in rows], float)
    ax.barh(y, med, color=[color_of(m) for m in med], height=0.6)
    ax.hlines(y, np.minimum(lo, right), np.minimum(hi, right), color="k", lw=1.2)
    for yi, h in zip(y, hi):
        if h > right:
            ax.annotate(
                f"{h:.2g}",
                (right, yi),
                xytext=(-2, 3),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=9,
            )
    ax.axvline(1.0, color="k", lw=1, ls="--")
    ax.set_xlim(0, right)
    ax.set_yticks(y, labels, fontsize=9)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=9)
    ax.set_title(title, fontsize=11)


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [q for q in report["ratios"] if q["mode"] == "train"]
    peer_rows = [q for q in train if not is_reference(q["peer"])]
    ref_rows = [q for q in train if is_reference(q["peer"])]
    n_left = len(peer_rows) + len(ref_rows)
    height = max(4.8, 0.32 * n_left + 1.8)
    fig = plt.figure(figsize=(15, height))
    grid = fig.add_gridspec(
        2 if ref_rows else 1,
        2,
        width_ratios=(1.15, 1),
        height_ratios=(max(len(peer_rows), 1), len(ref_rows)) if ref_rows else None,
    )
    ax = fig.add_subplot(grid[0, 0])
    # one x scale for peers and reference, set by the medians (not the ranges)
    right = max([1.3 * q["median"] for q in train] + [1.5])
    _ratio_axis(
        ax,
        peer_rows,
        "Speed against the peers, training step (< 1: rnnjax faster)",
        lambda m: "tab:green" if m <= 1 else "tab:orange",
        right,
    )
    if ref_rows:
        ax_r = fig.add_subplot(grid[1, 0])
        _ratio_axis(
            ax_r,
            ref_rows,
            "Reference, not a peer: rnnjax with its fast paths off (< 1: the fast path gains)",
            lambda m: "0.6",
            right,
        )
        ax_r.set_xlabel(
            "rnnjax time / other time (bar: median of paired rounds; line: range)", fontsize=9
        )
    else:
        ax.set_xlabel(
            "rnnjax time / peer time (bar: median of paired rounds; line: range)", fontsize=9
        )
    ax = fig.add_subplot(grid[:, 1])
    q = report.get("quality")
    if q:
        for m in q["models"]:
            c = np.array(m["curve"])
            ax.plot(c[:, 0], c[:, 1], marker="o", label=m["model"])
        ax.set_yscale("log")
        ax.set_xlabel("training wall-clock seconds (compile excluded)", fontsize=10)
        ax.set_ylabel("test one-step NRMSE", fontsize=10)
        ax.set_title("Mackey-Glass: error reached per second", fontsize=11)
        ax.tick_params(labelsize=9)
        ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def run(args) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(width=max(Console().width, 150))
    if args.quick:
        preset = core.PRESETS["quick"]
    elif args.full:
        preset = core.PRESETS["full"]
    else:
        preset = core.PRESETS["default"]
    shapes = tuple(args.shape) if args.shape else preset.shapes
    backend = jax.default_backend()
    impls = peers.available(backend)
    cells = [c for c in preset.cells if c != "esn" or peers.has_esn()]
    env = environment()
    t_start = time.perf_counter()
    report = {
        "environment": env,
        "config": {
            "preset": preset.name,
            "dtype": args.dtype,
            "shapes": [core.shape_dict(s) for s in shapes],
            "cells": cells,
            "impls": impls,
            "min_reps": preset.min_reps,
            "max_reps": preset.max_reps,
            "round_budget_s": preset.budget_s,
            "seed": args.seed,
            "fused_projection": rj.engine.default_projection(),
        },
        "results": [],
        "errors": [],
    }
    jobs = [(s, c) for s in shapes for c in cells]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("matmul peak", total=len(jobs) + 7)
        # a peak is the best the machine does: many repetitions, so that background load
        # on this shared machine is unlikely to hit them all
        report["matmul_peak"] = matmul_peak(
            256 if args.quick else 1024, args.dtype, reps=5 if args.quick else 25
        )
        progress.advance(task)
        log = progress.console.print
        for n, (shape, cell) in enumerate(jobs):
            progress.update(task, description=f"{cell} {shape.label()}")
            if not console.is_terminal:  # no live bar: one line per step
                log(
                    f"[{n + 1}/{len(jobs)}] {cell} {shape.label()} ({time.perf_counter() - t_start:.0f} s)"
                )
            try:
                report["results"] += measure_shape(
                    shape, cell, impls, args.dtype, preset, report["matmul_peak"]["gflops"], log=log
                )
            except Exception as e:  # noqa: BLE001 - keep going, record it
                report["errors"].append(f"{cell} {shape.label()}: {traceback.format_exc(limit=3)}")
                log(f"  {cell} {shape.label()} failed: {type(e).__name__}: {e}")
            progress.advance(task)
        progress.update(task, description="quality per second (Mackey-Glass)")
        report["quality"] = quality_task(preset, args.seed, log=log)
        progress.advance(task)
        progress.update(task, description="compile time, 2-layer bidirectional LSTM")
        report["compile_bidirectional"] = bidirectional_compile()
        progress.advance(task)
        progress.update(task, description=f"rematerialisation memory, T={preset.remat_T}")
        report["remat"] = remat_memory(T=preset.remat_T)
        progress.advance(task)
        progress.update(task, description="Flax linen / NNX modules against the functional layer")
        report["flax_modules"] = flax_modules(quick=preset.name == "quick")
        progress.advance(task)
        progress.update(task, description="dropout and bfloat16 rows (2-layer LSTM)")
        report["regularised"] = regularised(quick=preset.name == "quick")
        progress.advance(task)
        progress.update(task, description="echo state sweep: ReservoirPy loop and matmul floor")
        report["esn_sweep"] = esn_sweep(args.out, quick=preset.name == "quick")
        progress.advance(task)
    report["ratios"] = ratio_rows(report["results"])
    report["targets"] = targets(report)
    report["wall_s"] = time.perf_counter() - t_start
    try:
        with open("/proc/loadavg") as f:
            env["loadavg_end"] = f.read().split()[:3]
    except OSError:
        pass
    problems = core.validate_report(report)
    if problems:
        report["errors"] += problems
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "benchmark.json"), "w") as f:
        json.dump(report, f, indent=1)
    plot(report, os.path.join(args.out, "benchmark.png"))
    print_tables(report, console)
    if report.get("regularised"):
        from experiments import bench_regularised

        console.print(bench_regularised.report(report["regularised"]))
    console.print(
        f"wrote {args.out}/benchmark.json and {args.out}/benchmark.png in {report['wall_s']:.0f} s"
        + (
            f"; {len(report['errors'])} problem(s) recorded under 'errors'"
            if report["errors"]
            else ""
        )
    )
    return report

"""The benchmark's measurements: the machine, the timed shapes and their ratios, and the
extra rows (compile time, rematerialisation memory, the Flax modules, dropout and
bfloat16, the echo state sweep). See ``experiments/benchmark.py``.

Shapes: ``B`` batch, ``T`` time, ``I`` input, ``H`` hidden.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

import rnnjax as rj
from experiments import bench_core as core
from experiments import bench_peers as peers


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


def regularised(quick: bool = False) -> dict:
    """A 2-layer LSTM with dropout against the same without it and against PyTorch, and
    bfloat16 against float32 (``experiments/bench_regularised.py``)."""
    from experiments import bench_regularised

    if quick:
        return bench_regularised.measure(rounds=2, shape=(4, 16, 8, 16))
    return bench_regularised.measure(rounds=7)


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

"""The implementations the benchmark times: rnnjax and its peers, behind one interface.

Every builder returns a :class:`Runner` for one (cell, shape, dtype): two zero-argument
callables that run one forward pass and one training step (gradient of
``mean(ys ** 2) / 2`` w.r.t. the parameters) and block until the result is ready, plus
the compile time and the memory figures it could get. Peers whose package is missing
are skipped by :func:`available`.

Shapes: ``B`` batch, ``T`` time, ``I`` input, ``H`` hidden, ``N`` reservoir size.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp

import rnnjax as rj
from experiments.bench_core import Shape, time_call

__all__ = ["Runner", "IMPLS", "available", "build", "jax_dtype", "cudnn_lstm_weights"]


@dataclasses.dataclass
class Runner:
    """One implementation at one shape, ready to time."""

    impl: str
    fwd: Callable[[], object]
    train: Optional[Callable[[], object]]
    compile_s: dict
    memory: dict


def jax_dtype(name: str):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def _loss(ys):
    return 0.5 * jnp.mean(jnp.square(ys.astype(jnp.float32)))


def _jax_runner(impl, apply, params, xs, extra_memory=None) -> Runner:
    """Compile ``apply(params, xs) -> ys`` and its parameter gradient ahead of time."""
    fwd_j = jax.jit(apply)
    train_j = jax.jit(jax.grad(lambda p, x: _loss(apply(p, x))))
    compile_s, memory = {}, {}
    compiled = {}
    for name, f in (("fwd", fwd_j), ("train", train_j)):
        t0 = time.perf_counter()
        compiled[name] = f.lower(params, xs).compile()
        compile_s[name] = time.perf_counter() - t0
        try:
            m = compiled[name].memory_analysis()
            memory[f"{name}_xla_bytes"] = int(
                m.temp_size_in_bytes
                + m.argument_size_in_bytes
                + m.output_size_in_bytes
                - m.alias_size_in_bytes
            )
        except Exception:  # noqa: BLE001 - not every backend reports it
            pass
    cf, ct = compiled["fwd"], compiled["train"]
    return Runner(
        impl,
        lambda: jax.block_until_ready(cf(params, xs)),
        lambda: jax.block_until_ready(ct(params, xs)),
        compile_s,
        memory,
    )


def _inputs(shape: Shape, dtype, seed=1):
    return jax.random.normal(jax.random.key(seed), (shape.B, shape.T, shape.I)).astype(dtype)


def _rnnjax(cell_name, shape: Shape, dtype_name: str, impl="rnnjax", **scan_config) -> Runner:
    dt = jax_dtype(dtype_name)
    B, T, I, H = shape
    cell = {"lstm": rj.LSTM, "gru": rj.GRU, "rnn": rj.SimpleRNN}[cell_name](I, H)
    params = jax.tree_util.tree_map(lambda a: a.astype(dt), cell.init(jax.random.key(0)))
    xs = _inputs(shape, dt)
    config = rj.ScanConfig(**scan_config)
    return _jax_runner(impl, lambda p, x: rj.unroll_batch(cell, p, x, config=config)[1], params, xs)


def _rnnjax_alternative(cell_name, shape: Shape, dtype_name: str) -> Runner:
    """rnnjax's reference path (``rnnjax.ScanConfig(backward="reference")``): the engine's
    scan of ``cell.step``, differentiated by autodiff. The before/after of the fused
    derivative, measured in the same run."""
    return _rnnjax(cell_name, shape, dtype_name, impl=alternative_name(), backward="reference")


def alternative_name() -> str:
    """The name of the :func:`_rnnjax_alternative` rows."""
    return "rnnjax_autodiff"


def _esn(cell_name, shape: Shape, dtype_name: str) -> Runner:
    from rnnjax import reservoir as esn

    dt = jax_dtype(dtype_name)
    B, T, I, N = shape
    cell = esn.EchoState(I, N, spectral_radius=None, leak_rate=0.3, density=0.1)
    params = jax.tree_util.tree_map(lambda a: a.astype(dt), cell.init(jax.random.key(0)))
    xs = _inputs(shape, dt)
    fwd = jax.jit(lambda p, x: rj.unroll_batch(cell, p, x)[1])
    t0 = time.perf_counter()
    cf = fwd.lower(params, xs).compile()
    compile_s = {"fwd": time.perf_counter() - t0}
    m = cf.memory_analysis()
    memory = {
        "fwd_xla_bytes": int(
            m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
        )
    }
    return Runner("rnnjax", lambda: jax.block_until_ready(cf(params, xs)), None, compile_s, memory)


def _flax(cell_name, shape: Shape, dtype_name: str) -> Runner:
    import flax.linen as nn

    dt = jax_dtype(dtype_name)
    B, T, I, H = shape
    make = {
        "lstm": nn.OptimizedLSTMCell,
        "gru": nn.GRUCell,
        "rnn": nn.SimpleCell,
    }[cell_name]
    # parameters made in float32 (the orthogonal initialiser's QR has no bfloat16
    # kernel on CPU), then cast; ``dtype`` sets the computation dtype
    model = nn.RNN(make(H, dtype=dt, param_dtype=jnp.float32))
    xs = _inputs(shape, dt)
    params = jax.tree_util.tree_map(lambda a: a.astype(dt), model.init(jax.random.key(0), xs))
    return _jax_runner("flax", lambda p, x: model.apply(p, x), params, xs)


def _equinox(cell_name, shape: Shape, dtype_name: str) -> Runner:
    import equinox as eqx

    dt = jax_dtype(dtype_name)
    B, T, I, H = shape
    if cell_name == "rnn":
        raise NotImplementedError("equinox has no Elman cell")
    make = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[cell_name]
    cell = make(I, H, key=jax.random.key(0), dtype=dt)
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    xs = _inputs(shape, dt)

    def apply(p, x):
        c = eqx.combine(p, static)

        def one(seq):
            init = (jnp.zeros(H, dt), jnp.zeros(H, dt)) if cell_name == "lstm" else jnp.zeros(H, dt)

            def body(s, xt):
                s = c(xt, s)
                return s, (s[0] if cell_name == "lstm" else s)

            return jax.lax.scan(body, init, seq)[1]

        return jax.vmap(one)(x)

    return _jax_runner("equinox", apply, params, xs)


def _torch(cell_name, shape: Shape, dtype_name: str) -> Runner:
    import torch

    B, T, I, H = shape
    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    make = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell_name]
    torch.manual_seed(0)
    model = make(I, H, batch_first=True).to(tdt)
    xs = torch.randn(B, T, I, dtype=tdt)

    threads = [torch_threads()]

    def fwd():
        torch.set_num_threads(threads[0])
        with torch.no_grad():
            return model(xs)[0]

    def train():
        torch.set_num_threads(threads[0])
        model.zero_grad(set_to_none=True)
        ys = model(xs)[0]
        (0.5 * ys.float().square().mean()).backward()
        return ys

    return Runner("torch", fwd, train, {}, {})


_TORCH_THREADS = {}


def torch_threads() -> int:
    """PyTorch's thread count for the run, probed once.

    PyTorch's OpenMP threads spin at barriers: on this project's loaded 2-core machine
    its default (one thread per core) was measured 10-30x slower than one thread. The
    peer gets its best setting: a small LSTM training step is timed with 1 and with
    ``os.cpu_count()`` threads and the faster is kept (``"torch_threads"`` in the JSON
    environment, with the probe's times).
    """
    if "best" not in _TORCH_THREADS:
        import torch

        model = torch.nn.LSTM(64, 128, batch_first=True)
        xs = torch.randn(32, 32, 64)

        def step():
            model.zero_grad(set_to_none=True)
            model(xs)[0].square().mean().backward()

        probe = {}
        for n in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(n)
            step()
            probe[n] = min(time_call(step) for _ in range(3))
        _TORCH_THREADS["probe_s"] = {str(k): v for k, v in probe.items()}
        _TORCH_THREADS["best"] = min(probe, key=probe.get)
        torch.set_num_threads(_TORCH_THREADS["best"])
    return _TORCH_THREADS["best"]


def torch_thread_probe() -> dict:
    """The probe behind :func:`torch_threads` (empty before it ran)."""
    return dict(_TORCH_THREADS)


def cudnn_lstm_weights(params: dict, input_size: int, hidden_size: int):
    """rnnjax LSTM params as the flat weight vector of :func:`jax.experimental.rnn.lstm`.

    cuDNN's layout for one unidirectional layer is ``[W_ih (4H, I), W_hh (4H, H), b_ih
    (4H,), b_hh (4H,)]`` flattened, gate order (i, f, g, o) like rnnjax; rnnjax stores
    the transposes and one summed bias, so ``b_hh`` is zero.
    """
    H = hidden_size
    if params["w_ih"].shape != (input_size, 4 * H) or params["w_hh"].shape != (H, 4 * H):
        raise ValueError(
            f"params must be an LSTM's of input_size {input_size} and hidden_size {H}; got "
            f"w_ih {params['w_ih'].shape}, w_hh {params['w_hh'].shape}"
        )
    return jnp.concatenate(
        [
            params["w_ih"].T.ravel(),
            params["w_hh"].T.ravel(),
            params["b"],
            jnp.zeros_like(params["b"]),
        ]
    )


def _cudnn(cell_name, shape: Shape, dtype_name: str) -> Runner:
    from jax.experimental import rnn as jrnn

    if cell_name != "lstm":
        raise NotImplementedError("jax.experimental.rnn has only the LSTM")
    dt = jax_dtype(dtype_name)
    B, T, I, H = shape
    cell = rj.LSTM(I, H)
    weights = cudnn_lstm_weights(cell.init(jax.random.key(0)), I, H).astype(dt)
    xs = _inputs(shape, dt)
    lengths = jnp.full((B,), T, jnp.int32)
    zeros = jnp.zeros((1, B, H), dt)

    def apply(w, x):
        return jrnn.lstm(x, zeros, zeros, w, lengths, I, H, 1, 0.0, False)[0]

    return _jax_runner("cudnn", apply, weights, xs)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# impl name -> (builder, cells it has, availability check)
IMPLS = {
    "rnnjax": (_rnnjax, ("lstm", "gru", "rnn"), lambda backend: True),
    "rnnjax_alt": (_rnnjax_alternative, ("lstm", "gru", "rnn"), lambda backend: True),
    "torch": (_torch, ("lstm", "gru", "rnn"), lambda backend: backend == "cpu" and _has("torch")),
    "flax": (_flax, ("lstm", "gru", "rnn"), lambda backend: _has("flax")),
    "equinox": (_equinox, ("lstm", "gru"), lambda backend: _has("equinox")),
    "cudnn": (_cudnn, ("lstm",), lambda backend: backend == "gpu"),
}


def available(backend: str) -> list:
    """The implementations that can run on ``backend`` here (torch only on CPU: the
    benchmark compares on one device)."""
    return [name for name, (_, _, ok) in IMPLS.items() if ok(backend)]


def build(impl: str, cell_name: str, shape: Shape, dtype_name: str) -> Runner:
    """Build :class:`Runner` ``impl`` for ``cell_name`` at ``shape`` (``"esn"`` is rnnjax's
    echo state reservoir, forward only)."""
    if cell_name == "esn":
        if impl != "rnnjax":
            raise NotImplementedError(f"{impl} has no ESN")
        return _esn(cell_name, shape, dtype_name)
    builder, cells, _ = IMPLS[impl]
    if cell_name not in cells:
        raise NotImplementedError(f"{impl} has no {cell_name}")
    return builder(cell_name, shape, dtype_name)


def has_esn() -> bool:
    """Whether ``rnnjax.reservoir`` (the echo state reservoir) is installed."""
    return _has("rnnjax.reservoir")

"""The benchmark harness's logic on tiny shapes: FLOP counts, statistics and ratios, the
JSON schema, the targets, the peers' parameter conversions."""

import json
import math
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from experiments import bench_core as core

TINY = core.Shape(2, 3, 5, 4)


# --------------------------------------------------------------------------- FLOPs


def _dot_flops(jaxpr) -> int:
    """2 * (output size) * (contracted size) summed over every dot_general in a jaxpr,
    recursing into sub-jaxprs (jit, custom_vjp, scan bodies times their length)."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (lc, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            k = math.prod(lhs[d] for d in lc)
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * k
        times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for v in eqn.params.values():
            for sub in v if isinstance(v, (list, tuple)) else [v]:
                if hasattr(sub, "eqns"):  # a Jaxpr
                    total += times * _dot_flops(sub)
                elif hasattr(getattr(sub, "jaxpr", None), "eqns"):  # a ClosedJaxpr
                    total += times * _dot_flops(sub.jaxpr)
    return total


def _loop_model(cell):
    """The cell stepped in a plain Python loop, batched by vmap: an independent
    implementation whose jaxpr lists every matrix product."""

    def apply(p, xs):  # xs (B, T, I)
        s = jax.vmap(lambda _: cell.initial_state())(xs[:, 0])
        ys = []
        for t in range(xs.shape[1]):
            s, y = jax.vmap(cell.step, (None, 0, 0))(p, s, xs[:, t])
            ys.append(y)
        return jnp.stack(ys, 1)

    return apply


@pytest.mark.parametrize("name,make", [("lstm", rj.LSTM), ("gru", rj.GRU), ("rnn", rj.SimpleRNN)])
def test_flop_counts_match_the_jaxpr(name, make):
    B, T, I, H = TINY
    cell = make(I, H)
    p = cell.init(jax.random.key(0))
    xs = jnp.ones((B, T, I))
    apply = _loop_model(cell)
    fwd = _dot_flops(jax.make_jaxpr(apply)(p, xs).jaxpr)
    assert fwd == core.flops(name, TINY, train=False)
    train = _dot_flops(jax.make_jaxpr(jax.grad(lambda p: apply(p, xs).sum()))(p).jaxpr)
    # autodiff skips dh for the constant zero initial state: one step's H x GH product
    skipped = 2 * B * H * core.GATES[name] * H
    assert train == core.flops(name, TINY, train=True) - skipped


def test_flop_count_esn_and_errors():
    assert (
        core.flops("esn", TINY, True) == core.flops("esn", TINY, False) == 2 * 2 * 3 * 4 * (5 + 4)
    )
    with pytest.raises(ValueError, match="cell"):
        core.flops("transformer", TINY, True)


# --------------------------------------------------------------------------- statistics


def test_summarize_matches_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 8):
        xs = rng.exponential(size=n).tolist()
        s = core.summarize(xs)
        assert s["median"] == pytest.approx(np.median(xs))
        assert s["q1"] == pytest.approx(np.percentile(xs, 25))
        assert s["q3"] == pytest.approx(np.percentile(xs, 75))
        assert (s["min"], s["max"], s["n"]) == (min(xs), max(xs), n)
    with pytest.raises(ValueError, match="values"):
        core.summarize([])


def test_paired_ratios_arithmetic():
    ours = [1.0, 2.0, 4.0, 3.0]
    theirs = [2.0, 2.0, 2.0, 12.0]
    q = core.paired_ratios(ours, theirs)
    per_pair = [a / b for a, b in zip(ours, theirs)]
    assert q["median"] == pytest.approx(np.median(per_pair))
    assert (q["min"], q["max"]) == (min(per_pair), max(per_pair))
    assert q["of_medians"] == pytest.approx(np.median(ours) / np.median(theirs))
    with pytest.raises(ValueError, match="equally long"):
        core.paired_ratios([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        core.paired_ratios([1.0], [0.0])


def test_adaptive_reps_and_shapes():
    assert core.adaptive_reps([0.5, 0.5], budget_s=10, lo=3, hi=7) == 7
    assert core.adaptive_reps([0.5, 0.5], budget_s=4, lo=3, hi=7) == 4
    assert core.adaptive_reps([5.0], budget_s=4, lo=3, hi=7) == 3
    assert core.parse_shape("32, 128,64,128") == core.Shape(32, 128, 64, 128)
    for bad in ("1,2,3", "1,2,3,0", "a,b,c,d"):
        with pytest.raises(ValueError, match="B,T,I,H"):
            core.parse_shape(bad)


def test_rss_probe_sees_an_allocation():
    with core.RSSPeak() as probe:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        block += 1
    del block
    assert probe.peak_bytes >= 32 * 2**20


# --------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def tiny_report():
    """A report made by the harness itself from a real measurement at a tiny shape."""
    from experiments import bench_measure as measure
    from experiments import bench_peers as peers

    pytest.importorskip("torch")
    preset = core.Preset("test", (TINY,), 2, 2, 0.0, 0.1, 1500, 100, cells=("lstm",))
    impls = [i for i in peers.available("cpu") if i in ("rnnjax", "torch")]
    results = measure.measure_shape(
        TINY, "lstm", impls, "float32", preset, peak_gflops=100.0, log=lambda *a: None
    )
    report = {
        "environment": measure.environment(),
        "config": {"preset": "test", "dtype": "float32", "shapes": [core.shape_dict(TINY)]},
        "matmul_peak": {"gflops": 100.0},
        "results": results,
        "ratios": measure.ratio_rows(results),
    }
    return json.loads(json.dumps(report))  # what a reader of the JSON file gets


def test_report_schema_holds_for_a_real_measurement(tiny_report):
    assert core.validate_report(tiny_report) == []
    r = tiny_report["results"][0]
    assert len(r["fwd_s"]) == len(r["train_s"]) == 2
    assert r["flops"]["train"] == core.flops("lstm", TINY, True)
    assert r["gflops"]["train"] == pytest.approx(
        r["flops"]["train"] / statistics.median(r["train_s"]) / 1e9
    )
    assert r["peak_fraction"]["train"] == pytest.approx(r["gflops"]["train"] / 100.0)
    assert r["memory"]["train_xla_bytes"] > 0
    assert {q["peer"] for q in tiny_report["ratios"]} == {"torch"}


def test_report_schema_catches_problems(tiny_report):
    def broken(edit):
        report = json.loads(json.dumps(tiny_report))
        edit(report)
        return core.validate_report(report)

    errors = broken(lambda r: r["environment"].pop("backend"))
    assert any("environment.backend is missing" in e for e in errors)
    errors = broken(lambda r: r["results"][0].__setitem__("train_s", [-1.0, 0.1]))
    assert any("train_s must hold positive seconds" in e for e in errors)
    errors = broken(lambda r: r["ratios"][0].__setitem__("median", r["ratios"][0]["median"] + 1))
    assert any("does not match" in e for e in errors)
    errors = broken(lambda r: r["results"][0].pop("flops"))
    assert any("flops is missing" in e for e in errors)


def test_targets_read_the_right_ratios():
    from experiments import bench_targets

    s1, s3 = core.DEFAULT_SHAPES[0], core.DEFAULT_SHAPES[2]

    def q(shape, cell, peer, value):
        return {
            "shape": core.shape_dict(shape),
            "cell": cell,
            "impl": "rnnjax",
            "peer": peer,
            "mode": "train",
            "median": value,
            "min": value,
            "max": value,
            "of_medians": value,
        }

    report = {
        "config": {"shapes": [core.shape_dict(s1), core.shape_dict(s3)]},
        "results": [],
        "ratios": [
            q(s1, "lstm", "torch", 0.9),
            q(s3, "lstm", "torch", 1.2),
            q(s1, "gru", "rnnjax_autodiff", 0.95),
            q(s3, "rnn", "rnnjax_autodiff", 1.05),
            q(s1, "lstm", "flax", 0.5),
            q(s1, "lstm", "equinox", 0.85),
        ],
        "compile_bidirectional": [{"T": 128, "compile_s": 1.5}, {"T": 4096, "compile_s": 2.5}],
        "remat": {"T": 10000, "peak_ratio": 0.2},
        "esn_sweep": {"N": 500, "sweep_over_floor": 1.5, "reservoirpy_over_sweep": 4.0},
        "flax_modules": {
            "ratio_to_functional": {
                "functional": 1.0,
                "linen": 1.03,
                "nnx split": 1.06,
                "nnx.jit": 1.2,
            }
        },
    }
    rows = {r["target"]: r for r in bench_targets.targets(report)}
    flax = "Flax {} within 5% of the functional layer (2-layer BiLSTM)"
    assert rows[flax.format("linen")]["met"] is True
    assert rows[flax.format("nnx split")]["met"] is False  # 1.06 > 1.05
    assert rows[f"LSTM <= 1.0x torch at {s1.label()}"]["met"] is True
    assert rows[f"LSTM <= 1.0x torch at {s3.label()}"]["met"] is False  # 1.2 > 1.0
    assert rows[f"GRU default <= 1.0x reference (same run) at {s1.label()}"]["met"] is True
    assert rows[f"RNN default <= 1.0x reference (same run) at {s3.label()}"]["met"] is False
    assert rows[f"LSTM default <= 1.0x reference (same run) at {s1.label()}"]["met"] is None
    best = rows[f"LSTM <= 0.8x best Flax/Equinox at {s1.label()}"]
    assert best["value"] == 0.85 and best["met"] is False  # the faster peer decides
    assert rows[f"GRU <= 0.8x torch at {s1.label()}"]["met"] is None  # not measured
    assert rows["2-layer bidirectional LSTM compiles < 2 s at T=4096"]["met"] is False
    assert rows["remat peak memory <= 1/4 of default at T=10000"]["met"] is True
    assert rows["ESN sweep (64 models, N=500) <= 2x the dense-matmul floor"]["met"] is True
    assert rows["ReservoirPy loop >= 5x the ESN sweep's time"]["met"] is False  # 4 < 5


# --------------------------------------------------------------------------- peers


def test_cudnn_weight_layout_against_jax_reference():
    """The flat cuDNN weights drive jax.experimental.rnn's reference LSTM (which runs on
    CPU) to rnnjax's outputs."""
    from jax.experimental import rnn as jrnn

    from experiments.bench_peers import cudnn_lstm_weights

    B, T, I, H = TINY
    cell = rj.LSTM(I, H)
    p = cell.init(jax.random.key(0))
    p["b"] = p["b"] + 0.1 * jax.random.normal(jax.random.key(1), p["b"].shape)
    xs = jax.random.normal(jax.random.key(2), (B, T, I))
    w = cudnn_lstm_weights(p, I, H)
    assert w.shape == (jrnn.get_num_params_in_lstm(I, H, 1, False),)
    W_ih, W_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(w, I, H, 1, False)
    zeros = jnp.zeros((1, B, H))
    ys, h, c = jrnn.lstm_ref(
        xs, zeros, zeros, W_ih, W_hh, b_ih, b_hh, jnp.full((B,), T, jnp.int32), I, H, 1, 0.0, False
    )
    st, ys_rj = rj.unroll_batch(cell, p, xs)
    np.testing.assert_allclose(np.asarray(ys), np.asarray(ys_rj), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(c[0]), np.asarray(st.c), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="params"):
        cudnn_lstm_weights(p, I + 1, H)


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    """The whole --quick preset writes a valid JSON and a PNG (about a minute)."""
    from experiments import benchmark

    report = benchmark.main(["--quick", "--out", str(tmp_path)])
    with open(tmp_path / "benchmark.json") as f:
        assert core.validate_report(json.load(f)) == []
    assert (tmp_path / "benchmark.png").stat().st_size > 10_000
    assert report["quality"]["models"]
    assert set(report["flax_modules"]["ratio_to_functional"]) == {
        "functional",
        "linen",
        "nnx.jit",
        "nnx split",
    }


def test_profile_step_names_the_operations_of_a_step(tmp_path):
    """experiments/profile_step.py traces a tiny training step with jax.profiler (in a
    fresh process: the XLA flag for per-operation events must be set before JAX starts)
    and reports operations that ran once per time step."""
    import subprocess
    import sys

    out = tmp_path / "profile.json"
    T = 12
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.profile_step",
            "--shape",
            f"2,{T},3,4",
            "--cell",
            "lstm",
            "--steps",
            "2",
            "--top",
            "40",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    ops = report["top_ops"]
    assert ops and report["step_ms"] > 0
    assert all(op["ms"] >= 0 and op["calls"] >= 1 for op in ops)
    assert [op["ms"] for op in ops] == sorted((op["ms"] for op in ops), reverse=True)
    assert any(op["name"].startswith("while") for op in ops)  # the scans
    assert any(op["calls"] == T for op in ops)  # per-step operations inside them
    assert not any(op["name"].startswith(("ThunkExecutor", "Pjit")) for op in ops)
    bad = subprocess.run(
        [sys.executable, "-m", "experiments.profile_step", "--shape", "2,3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "--shape must be four positive integers" in bad.stderr


# --------------------------------------------------------------------------- output


def _ratio(shape, cell, peer, median, lo, hi, mode="train"):
    return {
        "shape": core.shape_dict(shape),
        "cell": cell,
        "impl": "rnnjax",
        "peer": peer,
        "mode": mode,
        "median": median,
        "min": lo,
        "max": hi,
        "of_medians": median,
    }


def test_targets_are_judged_only_where_they_were_set():
    from experiments import bench_targets

    s1 = core.DEFAULT_SHAPES[0]
    base = {
        "results": [],
        "ratios": [_ratio(s1, "lstm", "torch", 0.9, 0.8, 1.0)],
        "compile_bidirectional": [{"T": 128, "compile_s": 1.5}],
        "remat": {"T": 1000, "peak_ratio": 0.3},
        "flax_modules": {"ratio_to_functional": {"linen": 1.0, "nnx split": 1.0, "nnx.jit": 1.0}},
    }
    quick = dict(base, config={"preset": "quick", "shapes": [core.shape_dict(s1)]})
    assert bench_targets.targets(quick) == []  # the tiny --quick shapes judge nothing
    default = dict(base, config={"preset": "default", "shapes": [core.shape_dict(s1)]})
    names = [r["target"] for r in bench_targets.targets(default)]
    assert f"LSTM <= 1.0x torch at {s1.label()}" in names
    assert not any("remat" in n for n in names)  # set for T=10000, measured at T=1000
    custom = dict(
        base, config={"preset": "default", "shapes": [core.shape_dict(core.Shape(3, 5, 7, 9))]}
    )
    assert not any("torch at" in r["target"] for r in bench_targets.targets(custom))


def test_reference_rows_are_labelled_and_drawn_apart(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rich.console import Console

    from experiments import bench_peers as peers
    from experiments import bench_tables as tables

    ref = peers.alternative_name()
    assert tables.is_reference(ref) and not tables.is_reference("torch")
    assert "reference" in tables.impl_label(ref)
    s = core.DEFAULT_SHAPES[0]
    rows = [_ratio(s, "lstm", "torch", 0.9, 0.8, 40.0), _ratio(s, "lstm", ref, 0.8, 0.7, 0.9)]
    fig, ax = plt.subplots()
    tables._ratio_axis(ax, rows[:1], "t", lambda m: "g", 1.5)
    assert ax.get_xlim() == (0.0, 1.5)  # the whisker to 40 does not rescale the axis
    assert any(t.get_text() == "40" for t in ax.texts)  # its end is written at the edge
    assert all(t.get_fontsize() >= 9 for t in ax.get_yticklabels())
    plt.close(fig)
    report = {
        "config": {"dtype": "float32", "preset": "quick", "shapes": [core.shape_dict(s)]},
        "environment": {"backend": "cpu"},
        "matmul_peak": {"gflops": 100.0},
        "results": [],
        "ratios": rows,
        "targets": [],
    }
    tables.plot(report, tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 10_000
    console = Console(record=True, width=200)
    tables.print_tables(report, console)
    text = console.export_text()
    assert "rnnjax time / peer time" in text and "median [min-max]" in text
    peers_part, ref_part = text.split("default / reference (same run)")
    assert "torch" in peers_part and "autodiff" not in peers_part
    assert "rnnjax autodiff (reference)" in ref_part
    assert "not judged" in text


def test_no_internal_references_in_what_users_read():
    import pathlib
    import re

    root = pathlib.Path(core.__file__).parent
    for name in (
        "benchmark.py",
        "bench_run.py",
        "bench_measure.py",
        "bench_quality.py",
        "bench_targets.py",
        "bench_tables.py",
        "bench_peers.py",
        "bench_core.py",
    ):
        text = (root / name).read_text()
        assert not re.search(r"\b(issue|ticket)s?\b\s*#?\d", text, re.I), name
        assert "issue's" not in text, name

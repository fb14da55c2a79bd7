"""Smoke test of the parallel-in-time experiments: each ``--quick`` preset runs in a
subprocess and writes its JSON with the expected figures.

Marked slow: on the shared 2-core CPU the presets took 25 s to 2.5 min each (over the
30 s a default-run test may take)."""

import math

import pytest
from experiment_runner import run_quick


def _run(name, tmp_path):
    return run_quick(name, tmp_path)[0]


@pytest.mark.slow
def test_parallel_speed_quick(tmp_path):
    out = _run("parallel_speed", tmp_path)
    kinds = {r["kind"] for r in out["rows"]}
    assert {"gru", "mingru", "lru", "gru_deer", "gru_qdeer", "lstm_deer", "lstm_qdeer"} <= kinds
    for r in out["rows"]:
        assert r["train_s"] > 0 and not r["fell_back"]
        if r["kind"].endswith("deer"):
            assert r["max_dev_from_sequential"] < 1e-4 and r["iterations"] >= 1
    assert out["targets"]["mingru_vs_gru_train"]["speedup"] > 0


@pytest.mark.slow
def test_parallel_speed_table_quick(tmp_path):
    out = _run("parallel_speed_table", tmp_path)
    assert [(r["B"], r["T"]) for r in out["rows"]] == [(1, 1024), (16, 256)]
    for r in out["rows"]:
        assert set(r["ms"]) == {"gru", "mingru", "lru", "scan", "proj"}
        assert all(v > 0 for v in r["ms"].values())
        want = r["ms"]["mingru"] / (r["ms"]["scan"] + r["ms"]["proj"])
        assert math.isclose(r["mingru/(scan+proj)"], want, rel_tol=1e-9)


@pytest.mark.slow
def test_parallel_convergence_quick(tmp_path):
    out = _run("parallel_convergence", tmp_path)
    rows = {r["rho"]: r for r in out["rows"]}
    assert rows[0.5]["deer"]["converged"] and rows[0.5]["deer"]["iterations"] < 10
    assert all(r["deer_damped"]["converged"] for r in out["rows"])
    assert not rows[5.0]["deer"]["converged"]  # chaotic: undamped DEER fails
    for r in out["rows"][:3] + [out["gru"]]:  # ELK converges on the easy cases
        assert r["elk"]["converged"] and r["qelk"]["converged"], r


@pytest.mark.slow
def test_parallel_quality_quick(tmp_path):
    out = _run("parallel_quality", tmp_path)
    for name in ("mingru", "minlstm", "lru", "gru", "lstm"):
        assert math.isfinite(out["adding"][name]["final_test_mse"])
        assert math.isfinite(out["language_model"][name]["perplexity"])


@pytest.mark.slow
def test_repro_deep_parallel_quick(tmp_path):
    """The deep-block reproductions' quick preset (about 80 s alone: it compiles a train
    step and an evaluation per model) writes the figures its REPRODUCTIONS row reports."""
    out = _run("repro_deep_parallel", tmp_path)
    assert out["quick"] is True and out["seed"] == 0
    assert (tmp_path / "repro_deep_parallel_quick.png").exists()

    sc = out["selective_copying"]
    assert sc["runs"] and sc["K"] == 4
    for run in sc["runs"]:
        r = sc[run]
        for acc in r["test_accuracy_curve"] + [r["best_test_accuracy"]]:
            assert 0.0 <= acc <= 1.0
        assert r["final_test_accuracy"] == r["test_accuracy_curve"][-1]
        assert all(math.isfinite(v) for v in r["train_loss_curve"])
        assert len(r["train_loss_curve"]) == sc["steps"] and r["params"] > 0
    # deeper is bigger: a block's worth of parameters per layer
    assert sc["minlstm_x2"]["params"] > sc["mingru_x1"]["params"]

    for task in ("language_model", "adding"):
        t = out[task]
        counts = t["param_counts"]
        assert set(counts) == {"mingru", "minlstm", "lru", "gru"}
        for name, c in counts.items():
            # the GRU and the three-block parallel models have equal parameter counts
            assert abs(c - counts["mingru"]) <= out["tolerance"] * counts["mingru"], (task, name)
            assert t["param_gap_vs_mingru"][name] <= out["tolerance"]
        for name in ("mingru", "gru"):
            assert t[name]["params"] == counts[name]
    for name in ("mingru", "gru"):
        lm = out["language_model"][name]
        assert math.isfinite(lm["perplexity"]) and lm["perplexity"] > 1.0
        assert all(math.isfinite(v) for v in lm["train_loss_curve"])
        ad = out["adding"][name]
        assert math.isfinite(ad["final_test_mse"]) and ad["final_test_mse"] >= 0.0
        assert ad["final_test_mse"] == ad["test_mse_curve"][-1]

"""Smoke runs of the reservoir experiments (slow: each compiles a sweep or two deep ESNs)."""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

pytest.importorskip("reservoirpy")


@pytest.mark.slow
def test_deep_esn_experiment_agrees_with_reservoirpy(tmp_path):
    # its own process: the script switches x64 on for the whole process
    out = tmp_path / "deep.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "experiments" / "esn_deep.py"), "--quick", "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, cwd=tmp_path, capture_output=True)
    res = json.loads(out.read_text())
    for task in ("mackey_glass", "narma10"):
        for model in ("single", "deep"):
            row = res["results"][task][model]
            assert row["max_abs_diff"] < 1e-8  # same weights, same numbers
            assert math.isclose(row["nrmse"], row["reservoirpy_nrmse"], rel_tol=1e-6)


@pytest.mark.slow
def test_sweep_floor_experiment_reports_the_three_times(tmp_path):
    from experiments import esn_sweep_floor

    res = esn_sweep_floor.main(["--quick", "--no-reservoirpy", "--out", str(tmp_path / "s.json")])
    assert res["models"] == 64 and res["floor_s"] > 0 and res["sweep_s"] > 0
    assert res["sweep_over_floor"] == pytest.approx(res["sweep_s"] / res["floor_s"])
    assert math.isfinite(res["best_nrmse"]) and res["best_nrmse"] < 1.5

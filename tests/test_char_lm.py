"""The character-level language model example: its quick preset runs end to end in a
fresh process (train on Python's own source, validate, checkpoint, restore from the
directory alone, sample). The README's code blocks run in tests/test_readme.py."""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "experiments")


def test_char_lm_quick_preset_trains_validates_restores_and_samples(tmp_path):
    env = dict(
        os.environ,
        MPLBACKEND="Agg",
        PYTHONPATH=os.pathsep.join([ROOT, EXPERIMENTS, os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(EXPERIMENTS, "char_lm.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        cwd=EXPERIMENTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # progress lines appeared as it ran (stdout is a pipe here, not a terminal)
    assert re.search(r"^train 30/90 .*valid_ppl", proc.stdout, re.M), proc.stdout[:2000]
    r = json.loads((tmp_path / "char_lm_quick.json").read_text())
    assert r["quick"] is True and r["seed"] == 0
    ppl = r["valid_ppl_by_position"]
    assert sorted(map(int, ppl)) == [30, 60, 90]
    # it learnt: far below the uniform perplexity, and better at the end than at 30
    assert r["restored_valid_ppl_stream"] < r["uniform_ppl"] / 4
    assert ppl["90"] < ppl["30"]
    assert r["best_step"] == min(map(int, ppl), key=lambda p: ppl[str(p)])
    assert r["restored_equals_logged"] is True
    assert len(r["sample_greedy"]) == len(r["sample_temperature_0.8"]) == 80
    run_dir = tmp_path / "char_lm_quick_run"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["trainer"]["model"]["class"] == "rnnjax.models.SequenceModel"
    rows = [json.loads(x) for x in (tmp_path / "char_lm_quick.jsonl").read_text().splitlines()]
    assert [x["position"] for x in rows] == list(range(1, 91))

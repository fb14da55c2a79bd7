"""The character-level language model example: its quick preset runs end to end in a
fresh process (train on Python's own source, validate, checkpoint, restore from the
directory alone, sample). The README's code blocks run in tests/test_readme.py."""

import json
import re

from experiment_runner import run_quick


def test_char_lm_quick_preset_trains_validates_restores_and_samples(tmp_path):
    r, stdout = run_quick("char_lm", tmp_path)
    # progress lines appeared as it ran (stdout is a pipe here, not a terminal)
    assert re.search(r"^train 30/90 .*valid_ppl", stdout, re.M), stdout[:2000]
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
    assert cfg["trainer"]["model"]["class"] == "rnnjax.blocks.models.SequenceModel"
    rows = [json.loads(x) for x in (tmp_path / "char_lm_quick.jsonl").read_text().splitlines()]
    assert [x["position"] for x in rows] == list(range(1, 91))

"""benchmarks.training end to end with a tiny model (the figures themselves are in BUILD.md, never asserted)."""

import json

import pytest

from benchmarks import training


@pytest.mark.slow
def test_training_benchmark_reports_the_input_ratio_and_the_share_of_peak(tmp_path, capsys):
    out = tmp_path / "training.json"
    assert training.main(["--work_dir", str(tmp_path / "work"), "--num_clips", "1000", "--hidden_units", "16",
                          "--batch_sizes", "32", "--steps", "4", "--warmup", "2", "--steps_per_execution", "2",
                          "--peak_seconds", "0.05", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["batch_size"]) for r in rows] == [("average_pooling", 32), ("feature_attention", 32)]
    for r in rows:
        assert r["input_ratio"] == pytest.approx(r["cached_step_ms"] / r["real_step_ms"])
        assert r["fraction_of_peak"] == pytest.approx(r["train_flops_per_s"] / r["peak_flops"]) and r["peak_flops"] > 0
    assert "input ratio" in text and "of peak" in text

"""benchmarks.training end to end with a tiny model (the figures themselves are in docs/benchmarks.md, never asserted)."""

import json

import pytest

from benchmarks import all as all_benchmarks
from benchmarks import training


@pytest.mark.slow
def test_training_benchmark_reports_the_input_ratio_and_the_share_of_peak(tmp_path, benchmark_work, capsys):
    out = tmp_path / "training.json"
    num_clips = str(all_benchmarks.TINY.num_clips)  # the data benchmark_work holds
    assert training.main(["--work_dir", str(benchmark_work), "--num_clips", num_clips, "--hidden_units", "16",
                          "--batch_sizes", "32", "--steps", "4", "--warmup", "2", "--steps_per_execution", "2",
                          "--peak_seconds", "0.05", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    envelope = json.loads(out.read_text())
    assert envelope["benchmark"] == "training" and envelope["config"]["batch_sizes"] == "32"
    rows = envelope["results"]["rows"]
    assert [(r["model"], r["batch_size"]) for r in rows] == [("average_pooling", 32), ("feature_attention", 32)]
    for r in rows:
        assert r["input_ratio"] == pytest.approx(r["cached_step_ms"] / r["real_step_ms"])
        assert r["fraction_of_peak"] == pytest.approx(r["train_flops_per_s"] / r["peak_flops"]) and r["peak_flops"] > 0
    assert "input ratio" in text and "of peak" in text


@pytest.mark.slow
def test_throughput_mode_times_each_model_plain_jit_and_mixed_on_a_cached_batch(tmp_path, capsys):
    """models.benchmark's table, now --throughput: no shards, one row per model, three settings."""
    out = tmp_path / "throughput.json"
    assert training.main(["--throughput", "--models", "average_pooling", "--hidden_units", "8", "--batch_sizes", "16",
                          "--steps", "2", "--warmup", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    (row,) = json.loads(out.read_text())["results"]["rows"]
    assert row["model"] == "average_pooling" and row["batch_size"] == 16
    assert all(row[k] > 0 for k in ("clips_per_s", "jit_clips_per_s", "mixed_clips_per_s"))
    assert "clips/s" in text and "mixed" in text and "(batch 16, 3 x 8 trunk)" in text


def test_work_dir_is_required_but_with_throughput(capsys):
    with pytest.raises(SystemExit):
        training.parse_args(["--models", "average_pooling"])
    assert "--work_dir is required (or use --throughput)" in capsys.readouterr().err
    assert training.model_names("all")[-1] == "multi_head_attention"

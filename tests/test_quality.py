"""The documented quality command, on a small slice of the real bal_train split, for a few steps."""

import json

import pytest

from models import quality


def test_train_args_of_research_runs_and_best():
    assert quality.train_args("feature_attention") == ["--model", "feature_attention", "--mixup", "0", "--ema", "0"]
    assert quality.train_args("best") == []
    with pytest.raises(ValueError, match="unknown run 'nope'"):
        quality.train_args("nope")


def test_quality_command_on_a_slice_of_real_data(tmp_path, audioset_dir, capsys):
    work = tmp_path / "quality"
    code = quality.main(["--input", str(audioset_dir / "bal_train" / "a*.tfrecord"), "--work_dir", str(work),
                         "--runs", "single_attention,best", "--steps", "2", "--eval_every", "1", "--snapshots", "2",
                         "--train_args", "--batch_size 50 --hidden_units 32"])
    assert code == 0
    manifest = json.loads((work / "shards" / "manifest.json").read_text())
    holdout = manifest["splits"]["holdout"]["clips"]
    assert 0 < holdout < manifest["written_clips"]
    for run in ("single_attention", "best"):
        summary = json.loads((work / "results" / f"{run}.json").read_text())
        for name in ("final", "snapshots"):
            m = summary[name]
            assert m["num_clips"] == holdout and 0 < m["mAP"] <= 1 and 0 <= m["AUC"] <= 1
            assert m["num_classes_scored"] > 0
        assert summary["snapshots"]["num_models"] == 2 and len(summary["validation_mAP"]) == 2
    assert json.loads((work / "results" / "single_attention.json").read_text())["train_args"][:2] == [
        "--model", "single_attention"]
    table = (work / "results.md").read_text()
    assert "| single_attention |" in table and "| best |" in table
    assert table in capsys.readouterr().out

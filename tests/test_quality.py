"""The documented quality command, on a small slice of the real bal_train split, for a few steps."""

import json
import os
import subprocess
import sys
import types

import pytest

from experiments import quality
from models.config import parse_args
from tests import in_process
from tfdata import schema


def test_research_runs_use_the_research_recipe_and_best_the_defaults():
    from models import trainer, zoo

    def config(run):
        return parse_args([*quality.train_args(run), "--train_data", "s", "--model_dir", "m"])

    research = config("feature_attention")
    assert research.model == zoo.ModelConfig("feature_attention", hidden_units=1024, num_layers=3, dropout=0.5,
                                             input_dropout=0, frame_dropout=0)
    assert (research.learning_rate, research.lr_schedule, research.batch_size, research.mixup, research.ema,
            research.weight_decay) == (1e-3, "constant", 500, 0, 0, 0)
    previous = config("previous_best")
    assert (previous.weight_decay, previous.model.input_dropout, previous.model.frame_dropout) == (0, 0, 0)
    assert previous.model.dropout == zoo.ModelConfig().dropout and previous.mixup == trainer.TrainConfig("s", "m").mixup
    assert config("best") == trainer.TrainConfig("s", "m") and config("best").sampling == "uniform"
    assert config("best_balanced") == trainer.TrainConfig("s", "m", sampling="balanced")
    assert {config(run).sampling for run in quality.VARIANTS if run.startswith("previous_best")} == {"balanced"}
    assert research.sampling == "balanced"  # the research code's balanced batches
    assert config("multi_head_attention").model.name == "multi_head_attention"
    assert len({config(run) for run in quality.ENSEMBLE_MEMBERS}) == len(quality.ENSEMBLE_MEMBERS)  # all differ
    with pytest.raises(ValueError, match="unknown run 'nope'"):
        quality.train_args("nope")


def test_runs_train_train_py_default_steps_but_the_previous_best_runs_their_measured_1000():
    config = quality.QualityConfig("in", "w", class_labels="labels.csv")

    def steps(run, config=config):
        return parse_args(quality.train_command(config, "w", run)).steps

    assert steps("best") == parse_args(["--train_data", "s", "--model_dir", "m"]).steps
    assert "--steps" not in quality.train_command(config, "w", "best")
    assert {steps(run) for run in quality.VARIANTS if run.startswith("previous_best")} == {1000}
    assert steps("best", quality.QualityConfig("in", "w", steps=40, class_labels="l")) == 40  # --steps: every run
    assert steps("previous_best", quality.QualityConfig("in", "w", steps=40, class_labels="l")) == 40
    assert quality._steps(1200) == "1200" and quality._steps([1200, 1000]) == "1200/1000"


def test_validation_is_the_eval_input_else_a_holdout():
    assert quality.validation_data(quality.QualityConfig("in", "w", eval_input="e"), "w") == "w/eval_shards"
    assert quality.validation_data(quality.QualityConfig("in", "w"), "w") == "w/shards/holdout"


def test_a_work_dir_with_shards_of_other_input_is_refused_not_reused_or_rebuilt(tmp_path, capsys, monkeypatch):
    shards = tmp_path / "shards"
    assert not quality._built(str(shards), "data/*.tfrecord", 0)  # nothing built yet
    shards.mkdir()
    args = {"input": str(tmp_path / "data" / ".." / "data" / "*.tfrecord"), "holdout_fraction": 0.0}
    schema.Manifest(args=args, input_records=1, written_clips=1, rejected=0, rejected_reasons={}, class_counts=[],
                    splits={}).write(str(shards))
    manifest = json.loads((shards / schema.MANIFEST_FILE).read_text())
    assert quality._built(str(shards), str(tmp_path / "data" / "*.tfrecord"), 0)  # the same files, spelt otherwise
    relative = os.path.relpath(tmp_path / "data" / "*.tfrecord", quality.REPO_ROOT)  # build_shards runs there
    assert quality._built(str(shards), relative, 0)
    for other_input, holdout in (("other/*.tfrecord", 0), (str(tmp_path / "data" / "*.tfrecord"), 0.1),
                                 (str(tmp_path / "data" / "a*.tfrecord"), 0)):
        with pytest.raises(ValueError, match="another --work_dir"):
            quality._built(str(shards), other_input, holdout)
    monkeypatch.setattr(quality, "_run", lambda command, log: pytest.fail(f"ran {command}"))
    (tmp_path / "runs" / "best").mkdir(parents=True)
    argv = ["--input", "other/*.tfrecord", "--work_dir", str(tmp_path), "--runs", "best", "--class_labels", "l.csv"]
    assert quality.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not of other/*.tfrecord" in err and len(err.splitlines()) == 1
    assert json.loads((shards / schema.MANIFEST_FILE).read_text()) == manifest and (tmp_path / "runs" / "best").is_dir()
    (shards / schema.MANIFEST_FILE).write_text(json.dumps(manifest | {"complete": False}))  # a build that stopped
    with pytest.raises(ValueError, match="did not finish"):
        quality._built(str(shards), str(tmp_path / "data" / "*.tfrecord"), 0)


@pytest.fixture
def commands_in_process(monkeypatch):
    """The quality command's commands (train.py, evaluate.py, build_shards, models.exporting --average) run
    in this process (TensorFlow loads once), each checked to be a command that a subprocess would run."""
    import evaluate
    import train
    from beam_pipelines import build_shards
    from models import exporting

    mains = {("train.py",): train.main, ("evaluate.py",): evaluate.main,
             ("-m", "beam_pipelines.build_shards"): build_shards.main, ("-m", "models.exporting"): exporting.main}

    def run(command, cwd, stdout, stderr):
        for head, main in mains.items():
            if tuple(command[1:1 + len(head)]) == head:
                assert command[0] == sys.executable and stderr == subprocess.STDOUT, command
                assert head[0] == "-m" or os.path.isfile(os.path.join(cwd, head[0])), (cwd, command)
                with in_process.isolated(stdout, stdout):
                    return subprocess.CompletedProcess(command, in_process.exit_status(main, command[1 + len(head):]))
        raise AssertionError(f"a command the quality tests do not know: {command}")

    monkeypatch.setattr(quality, "subprocess", types.SimpleNamespace(run=run, STDOUT=subprocess.STDOUT))


@pytest.mark.slow
def test_quality_command_on_a_slice_of_real_data(tmp_path, audioset_dir, capsys, monkeypatch, commands_in_process):
    import numpy as np

    monkeypatch.setattr(quality, "ENSEMBLE_MEMBERS", quality.ENSEMBLE_MEMBERS[:2])  # two members train in half the time
    work = tmp_path / "quality"
    argv = ["--input", str(audioset_dir / "bal_train" / "a*.tfrecord"), "--work_dir", str(work),
            "--eval_input", str(audioset_dir / "eval_a" / "a*.tfrecord"),
            "--runs", "best,ensemble", "--steps", "2", "--eval_every", "1", "--snapshots", "2",
            "--train_args", "--batch_size 50 --hidden_units 32"]
    assert quality.main(argv) == 0
    manifest = json.loads((work / "shards" / "manifest.json").read_text())
    assert "holdout" not in manifest["splits"]  # all of --input trains; --eval_input validates
    holdout = json.loads((work / "eval_shards" / "manifest.json").read_text())["written_clips"]
    assert holdout > 100
    for run in quality.ENSEMBLE_MEMBERS:  # best and best_balanced
        summary = json.loads((work / "results" / f"{run}.json").read_text())
        for name in ("final", "snapshots"):
            m = summary[name]
            assert m["num_clips"] == holdout and 0 < m["mAP"] <= 1 and 0 <= m["AUC"] <= 1
            assert m["num_classes_scored"] > 0
            low, high = m["mAP_95_interval"]  # on ~150 clips it need not hold the estimate (test_metrics checks that)
            assert 0 <= low < high <= 1 and high - low > 0.001
        assert summary["exported_weights"] in ("raw", "ema")
        assert summary["eval_data"] == str(audioset_dir / "eval_a" / "a*.tfrecord")
        assert summary["snapshots"]["num_models"] == 2 and len(summary["validation_mAP"]) == 2
    assert json.loads((work / "results" / "best_balanced.json").read_text())["train_args"][:2] == [
        *quality.VARIANTS["best_balanced"]]
    # The ensemble is one SavedModel whose scores are the mean of its members' scores.
    ensemble = json.loads((work / "results" / "ensemble.json").read_text())
    assert ensemble["members"] == list(quality.ENSEMBLE_MEMBERS) and ensemble["final"]["num_models"] == 1
    recipes = [(tuple(s["train_args"]), s["seed"]) for s in
               (json.loads((work / "results" / f"{r}.json").read_text()) for r in quality.ENSEMBLE_MEMBERS)]
    assert len(set(recipes)) == len(recipes)  # every member trains differently
    scores = {r: np.load(work / "results" / r / "scores.npz")["scores"] for r in ("ensemble", *quality.ENSEMBLE_MEMBERS)}
    members = np.mean([scores[r] for r in quality.ENSEMBLE_MEMBERS], axis=0)
    assert np.allclose(scores["ensemble"], members, atol=1e-6)
    table = (work / "results.md").read_text()
    assert "| best |" in table and "| ensemble |" in table
    assert table in capsys.readouterr().out
    # Running the same command again reuses the finished runs instead of training them again.
    logs = {p: p.stat().st_mtime_ns for p in (work / "results").glob("*.train.log")}
    assert quality.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in (work / "results").glob("*.train.log")} == logs
    out = capsys.readouterr().out
    assert "best: finished before" in out and "ensemble: its members are the runs it averaged before" in out
    assert json.loads((work / "results" / "ensemble.json").read_text()) == ensemble


def test_an_ensemble_of_other_members_is_made_again_and_the_earlier_one_kept(tmp_path, monkeypatch):
    config = quality.QualityConfig("in", str(tmp_path), eval_input="e")
    (tmp_path / "results").mkdir()
    made = []

    def run(command, log):  # models.exporting --average: a stand-in export
        made.append(command)
        os.makedirs(command[command.index("--output") + 1])

    monkeypatch.setattr(quality, "_run", run)
    monkeypatch.setattr(quality, "_evaluate", lambda config, work, name, models: {"mAP": 0.3 + len(made)})
    monkeypatch.setattr(quality.time, "strftime", lambda _: "20261202-080000")  # every set-aside in one second
    members = [{"run": "best", "steps": 1200, "train_seconds": 100}, {"run": "previous_best", "steps": 1000,
                                                                     "train_seconds": 90}]
    first = quality._ensemble(config, str(tmp_path), members)
    assert first["final"]["mAP"] == 1.3 and len(made) == 1
    assert quality._ensemble(config, str(tmp_path), members) == first and len(made) == 1  # the same members
    variables = tmp_path / "runs" / "best" / "saved_model" / "variables"
    variables.mkdir(parents=True)
    (variables / "variables.data-00000-of-00001").write_bytes(b"weights of another training")
    second = quality._ensemble(config, str(tmp_path), members)  # as many seconds, other weights
    assert second["final"]["mAP"] == 2.3 and len(made) == 2
    [aside] = (tmp_path / "results").glob("ensemble.json.replaced-*")
    assert json.loads(aside.read_text()) == first
    assert len(list((tmp_path / "runs").glob("ensemble.replaced-*/saved_model"))) == 1
    retrained = [members[0] | {"train_seconds": 101}, members[1]]  # trained again: other seconds, same weights
    third = quality._ensemble(config, str(tmp_path), retrained)  # in the same second: another name, not over it
    assert third["final"]["mAP"] == 3.3
    (tmp_path / "runs" / "ensemble" / "members.json").unlink()  # an ensemble made before the digests were kept
    assert quality._ensemble(config, str(tmp_path), retrained)["final"]["mAP"] == 4.3
    assert sorted(json.loads(p.read_text())["final"]["mAP"] for p in (tmp_path / "results").glob("ensemble.json.*")) == [
        1.3, 2.3, 3.3]


def test_a_finished_run_is_reused_only_while_train_py_would_train_the_same_config(tmp_path):
    args = [*quality.train_args("best"), "--train_data", "s", "--model_dir", str(tmp_path / "runs" / "best"), "--seed", "0"]
    run_dir = tmp_path / "runs" / "best"
    assert not quality._same_training(str(run_dir), args)  # nothing trained yet
    run_dir.mkdir(parents=True)
    saved = parse_args(args).to_json() | {"model_dir": "/elsewhere/runs/best"}  # a moved work dir still counts
    (run_dir / "config.json").write_text(json.dumps(saved))
    assert quality._same_training(str(run_dir), args)
    before_a_default_changed = saved | {"weight_decay": 0.0}
    (run_dir / "config.json").write_text(json.dumps(before_a_default_changed))
    assert not quality._same_training(str(run_dir), args)
    (run_dir / "config.json").write_text(json.dumps(saved | {"model": saved["model"] | {"frame_dropout": 0.0}}))
    assert not quality._same_training(str(run_dir), args)
    (run_dir / "config.json").write_text("{not json")
    assert not quality._same_training(str(run_dir), args)


def test_a_run_trained_with_other_arguments_is_kept_aside_not_deleted(tmp_path, monkeypatch):
    config = quality.QualityConfig("in", str(tmp_path), class_labels="labels.csv")
    old = parse_args(quality.train_command(config, str(tmp_path), "best")).to_json() | {"steps": 10}
    (tmp_path / "runs" / "best" / "saved_model").mkdir(parents=True)
    (tmp_path / "runs" / "best" / "config.json").write_text(json.dumps(old))
    (tmp_path / "results" / "best").mkdir(parents=True)
    (tmp_path / "results" / "best.json").write_text("{}")
    (tmp_path / "results" / "best" / "metrics.json").write_text("{}")

    def run(command, log):
        assert not (tmp_path / "runs" / "best").exists()  # set aside before train.py starts
        raise RuntimeError("stop here")

    monkeypatch.setattr(quality, "_run", run)
    with pytest.raises(RuntimeError, match="stop here"):
        quality._trained(config, str(tmp_path), "best")
    [aside] = (tmp_path / "runs").glob("best.replaced-*")
    assert json.loads((aside / "config.json").read_text()) == old and (aside / "saved_model").is_dir()
    suffix = aside.name[len("best"):]
    assert (tmp_path / "results" / f"best.json{suffix}").read_text() == "{}"
    assert (tmp_path / "results" / f"best{suffix}" / "metrics.json").exists()


def test_each_run_is_compared_with_the_baseline_on_the_same_clips(tmp_path):
    import numpy as np

    from models import metrics

    rng = np.random.default_rng(0)
    labels = (rng.random([300, 8]) < 0.1).astype(np.uint8)
    ids = np.array([f"v{i}" for i in range(300)])
    scores = {"previous_best": rng.random([300, 8]), "best": rng.random([300, 8]) + 0.3 * labels}
    for run, s in scores.items():
        (tmp_path / "results" / run).mkdir(parents=True)
        np.savez(tmp_path / "results" / run / "scores.npz", video_id=ids, start_time_seconds=np.zeros(300),
                 labels=labels, scores=s)
    summary = {"run": "best"}
    quality._compare(str(tmp_path), summary, "previous_best")
    expected = metrics.bootstrap_difference(labels, scores["best"], scores["previous_best"])
    assert summary["vs_previous_best"] == [round(v, 4) for v in expected] and expected[1] > 0
    assert json.loads((tmp_path / "results" / "best.json").read_text())["vs_previous_best"] == summary["vs_previous_best"]
    baseline = {"run": "previous_best"}
    quality._compare(str(tmp_path), baseline, "previous_best")
    assert "vs_previous_best" not in baseline
    np.savez(tmp_path / "results" / "best" / "scores.npz", video_id=ids[::-1], start_time_seconds=np.zeros(300),
             labels=labels, scores=scores["best"])  # each clip with another clip's labels
    other_clips = {"run": "best"}
    quality._compare(str(tmp_path), other_clips, "previous_best")
    assert "vs_previous_best" not in other_clips

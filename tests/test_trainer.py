"""train.py: strategies, weight averaging and export, resumption after kill -9, user errors.

Most runs call train.main in this process (TensorFlow loads once per session, not once per run); a
subprocess only where a fresh process is what the test needs: logical CPU devices (mirrored), two
workers, kill -9, and one user error as the shell sees it."""

import csv
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from tests import in_process
from tests.conftest import REPO_ROOT

SMALL = ["--hidden_units", "32", "--batch_size", "64", "--seed", "0"]


def _argv(shards, model_dir, *extra):
    return ["--train_data", str(shards), "--model_dir", str(model_dir),
            "--class_labels", str(shards.parent.parent / "class_labels_indices.csv"), *SMALL, *extra]


def _main(argv) -> in_process.Run:
    """`python train.py ARGV`, run as train.main in this process."""
    import train

    return in_process.run(train.main, argv)


def _train(shards, model_dir, *extra) -> in_process.Run:
    return _main(_argv(shards, model_dir, *extra))


def _start_subprocess(shards, model_dir, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", *_argv(shards, model_dir, *extra)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> in_process.Run:
    stdout, stderr = proc.communicate(timeout=300)
    return in_process.Run(proc.returncode, stdout, stderr)


def _train_subprocess(shards, model_dir, *extra) -> in_process.Run:
    return _finish(_start_subprocess(shards, model_dir, *extra))


@pytest.fixture(scope="module")
def shards(beam_shards, synthetic_tfrecords, tmp_path_factory):
    # class_labels_indices.csv lives beside the synthetic data; the shards are in another tmp dir.
    root = tmp_path_factory.mktemp("train") / "data"
    (root / "x").mkdir(parents=True)
    os.symlink(beam_shards, root / "x" / "shards")
    (root / "class_labels_indices.csv").write_text((synthetic_tfrecords / "class_labels_indices.csv").read_text())
    return root / "x" / "shards"


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    """Like `shards` (class_labels_indices.csv two levels up) but written directly by tests.shard_fixtures,
    without a Beam job: for the tests that stop before the first step."""
    from tests import shard_fixtures
    from tfdata import synthetic

    root = tmp_path_factory.mktemp("small") / "data"
    clips = next(synthetic.generate(synthetic.SyntheticConfig(num_clips=200, seed=3)))
    shard_fixtures.write_balanced(str(root / "x" / "shards"), clips)
    (root / "class_labels_indices.csv").write_text(synthetic.class_labels().to_csv())
    return root / "x" / "shards"


UNVALIDATED = ["--steps", "4", "--steps_per_epoch", "2", "--model", "average_pooling", "--learning_rate", "0.01",
               "--ema", "0.9"]


@pytest.fixture(scope="module")
def unvalidated(shards, tmp_path_factory):
    """One finished run without validation data (2 epochs of 2 steps, EMA on), shared by the tests that
    read its output, logs and export: (model dir, run)."""
    model_dir = tmp_path_factory.mktemp("unvalidated") / "m"
    result = _train(shards, model_dir, *UNVALIDATED)
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, result


def _losses(stdout):
    return [float(x) for x in re.findall(r"- loss: ([0-9.e-]+)", stdout)]


@pytest.mark.slow
def test_default_and_mirrored_follow_the_same_trajectory_and_validation(shards, tmp_path):
    args = ["--steps", "4", "--steps_per_epoch", "1", "--dropout", "0", "--input_dropout", "0", "--frame_dropout", "0",
            "--model", "single_attention", "--mixup", "0", "--eval_data", str(shards / "holdout")]  # no random masks
    # Two logical CPUs exist only in a process that sets them up before TensorFlow starts (it runs beside this one).
    mirrored = _start_subprocess(shards, tmp_path / "mirrored", *args, "--strategy", "mirrored", "--cpu_replicas", "2")
    default = _train(shards, tmp_path / "default", *args)
    mirrored = _finish(mirrored)
    assert default.returncode == 0, default.stderr[-3000:]
    assert mirrored.returncode == 0, mirrored.stderr[-3000:]
    a, b = _losses(default.stdout), _losses(mirrored.stdout)
    assert len(a) == len(b) == 4 and a[-1] < a[0]
    # Same seed, data and initial weights; only BatchNorm statistics differ (per replica: half batches).
    for x, y in zip(a, b):
        assert abs(x - y) < 0.05 * x, (a, b)
    assert (tmp_path / "mirrored" / "saved_model" / "saved_model.pb").exists()
    # Validation of the EMA weights (the default) swaps them into the mirrored variables too: after 4 steps
    # at 0.99 they are 96% the initial weights, so they score unlike the raw weights and like the EMA
    # weights of the single-device run.
    default_rows, mirrored_rows = _history(tmp_path / "default"), _history(tmp_path / "mirrored")
    assert len(default_rows) == len(mirrored_rows) == 4
    assert any(abs(float(r["val_mAP_ema"]) - float(r["val_mAP"])) > 1e-4 for r in mirrored_rows)
    assert [float(r["val_mAP_ema"]) for r in mirrored_rows] == pytest.approx(
        [float(r["val_mAP_ema"]) for r in default_rows], abs=1e-4)


def _history(model_dir):
    with open(model_dir / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_ema_export_holds_the_averaged_weights_and_cosine_decays_to_zero(shards, tmp_path):
    holdout = shards / "holdout"
    args = ["--steps", "4", "--steps_per_epoch", "1", "--model", "average_pooling", "--eval_data", str(holdout),
            "--lr_schedule", "cosine", "--learning_rate", "0.01"]
    ema = _train(shards, tmp_path / "ema", *args, "--ema", "0.5")
    raw = _train(shards, tmp_path / "raw", *args, "--ema", "0")
    assert ema.returncode == 0 and raw.returncode == 0, (ema.stderr[-3000:], raw.stderr[-3000:])
    rows = _history(tmp_path / "ema")
    # Step k (1-based) uses the rate at k - 1, 0.01 * (1 + cos(pi * (k - 1) / 4)) / 2, logged after it.
    expected = [0.01 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx(expected, abs=1e-6)
    assert all("val_mAP_ema" in r for r in rows) and "val_mAP_ema" not in _history(tmp_path / "raw")[0]
    # Same seed and data: the raw weights of the two runs are the same; only the EMA run exports an average.
    import tensorflow as tf

    embedding = tf.constant(np.random.default_rng(0).integers(0, 256, [8, 10, 128]), tf.uint8)

    def exported_scores(d):
        return tf.saved_model.load(str(d / "saved_model")).signatures["serving_default"](embedding=embedding)[
            "scores"].numpy()

    def last_checkpoint(d):
        with h5py.File(sorted((d / "checkpoints").glob("*.h5"))[-1]) as f:
            return sorted(np.asarray(f[k]).tobytes() for k in _datasets(f))

    assert last_checkpoint(tmp_path / "ema") == last_checkpoint(tmp_path / "raw")
    # The EMA run exports its averaged weights when they validate better, else the same raw weights.
    from models import exporting

    same = np.allclose(exported_scores(tmp_path / "ema"), exported_scores(tmp_path / "raw"), atol=1e-4)
    assert same == (exporting.read_metadata(str(tmp_path / "ema" / "saved_model"))["weights"] == "raw")


@pytest.mark.slow
def test_export_holds_the_weights_that_validate_better_and_says_which(shards, unvalidated, tmp_path):
    """With validation data the export holds raw or EMA weights, whichever scored the higher mAP at the
    last epoch, and its metadata says which; without validation data, the EMA weights."""
    import tensorflow as tf

    from models import exporting, metrics
    from tfdata import datasets

    validated = _train(shards, tmp_path / "validated", *UNVALIDATED, "--eval_data", str(shards / "holdout"))
    assert validated.returncode == 0, validated.stderr[-3000:]
    last = _history(tmp_path / "validated")[-1]
    raw, ema = float(last["val_mAP"]), float(last["val_mAP_ema"])
    assert abs(raw - ema) > 1e-3, (raw, ema)  # the two differ, so the choice matters
    meta = exporting.read_metadata(str(tmp_path / "validated" / "saved_model"))
    winner = "raw" if raw > ema else "ema"
    assert meta["weights"] == winner and meta["validation_mAP"] == pytest.approx({"raw": raw, "ema": ema}, abs=1e-6)
    assert f"exporting the {winner} weights" in validated.stdout
    # The export scores the validation clips exactly as the winning weights did.
    serve = tf.saved_model.load(str(tmp_path / "validated" / "saved_model")).signatures["serve_examples"]
    records = [r.numpy() for r in tf.data.TFRecordDataset(datasets.eval_files(str(shards / "holdout")))]
    scores = serve(examples=tf.constant(records))["scores"].numpy()
    label_ids = tf.io.parse_sequence_example(records, context_features={"labels": tf.io.VarLenFeature(tf.int64)})[0][
        "labels"]
    labels = np.zeros_like(scores)
    labels[label_ids.indices[:, 0].numpy(), label_ids.values.numpy()] = 1
    assert metrics.compute(labels, scores).mAP == pytest.approx(max(raw, ema), abs=1e-4)
    meta = exporting.read_metadata(str(unvalidated[0] / "saved_model"))  # the same run without --eval_data
    assert meta["weights"] == "ema" and meta["validation_mAP"] is None and "no validation data" in meta["why"]


@pytest.mark.parametrize("raw_map, ema_map, exported", [(0.3, 0.2, "raw"), (0.2, 0.3, "ema"), (0.2, 0.2, "ema")])
def test_choose_weights_keeps_the_better_validating_weights(raw_map, ema_map, exported):
    from models import trainer, zoo

    model = zoo.build(zoo.ModelConfig("average_pooling", hidden_units=8, num_layers=1))
    ema_weights = [v.numpy() for v in model.trainable_variables]  # what fit leaves in the model
    validation = trainer.EvalMetrics("unused", 1)
    validation.last_mAP = {"raw": raw_map, "ema": ema_map}
    validation.raw_weights = [w + 1 for w in ema_weights]
    config = trainer.TrainConfig("s", "m", ema=0.99, eval_data="e")
    meta = trainer.choose_weights(model, config, validation)
    assert meta["weights"] == exported and meta["validation_mAP"] == {"raw": raw_map, "ema": ema_map}
    expected = validation.raw_weights if exported == "raw" else ema_weights
    for variable, value in zip(model.trainable_variables, expected):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert trainer.choose_weights(model, trainer.TrainConfig("s", "m", ema=0), None)["weights"] == "raw"


@pytest.mark.slow
def test_a_run_that_starts_over_starts_a_new_history(shards, tmp_path):
    args = ["--steps", "2", "--steps_per_epoch", "1", "--model", "average_pooling"]
    for _ in range(2):  # the second run finds no backup (the first finished), so it trains from step 0 again
        result = _train(shards, tmp_path / "m", *args)
        assert result.returncode == 0, result.stderr[-3000:]
    assert [row["epoch"] for row in _history(tmp_path / "m")] == ["0", "1"]


def _datasets(group, prefix=""):
    for key, item in group.items():
        if isinstance(item, h5py.Dataset):
            yield prefix + key
        else:
            yield from _datasets(item, prefix + key + "/")


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_trains_and_exports_once(shards, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        cmd = [sys.executable, "train.py", *_argv(shards, tmp_path / "mw", "--strategy", "multi_worker", "--steps", "3",
                                                   "--steps_per_epoch", "3", "--model", "average_pooling")]
        procs.append(subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = [p.communicate(timeout=400) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-6000:] for o in outputs]
    exports = [root for root, _, files in os.walk(tmp_path) if "saved_model.pb" in files]
    assert exports == [str(tmp_path / "mw" / "saved_model")]


@pytest.mark.slow
def test_killed_run_resumes_and_finishes(shards, tmp_path):
    # Validation after every 1-step epoch makes epochs last long enough to kill the run between two of them.
    args = ["--steps", "8", "--steps_per_epoch", "1", "--model", "average_pooling", "--eval_data", str(shards / "holdout")]
    cmd = [sys.executable, "train.py", *_argv(shards, tmp_path / "m", *args)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoints = tmp_path / "m" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(checkpoints.glob("*.h5"))) < 3 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(checkpoints.glob("*.h5")))
    assert 3 <= done_before < 8, "the run finished before it could be killed"
    resumed = _train(shards, tmp_path / "m", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epochs = [int(e) for e in re.findall(r"epoch (\d+)/8", resumed.stdout)]
    assert epochs[0] > 1 and epochs[-1] == 8, epochs  # it did not start again from the beginning
    assert (tmp_path / "m" / "saved_model" / "saved_model.pb").exists()


@pytest.mark.parametrize("problem, message", [
    ("model", "unknown model 'resnet'; known models: average_pooling"),
    # A subprocess (logical CPUs need a fresh process): also the exit status and stderr as the shell sees them.
    pytest.param("batch", "--batch_size 63 is not divisible by the 2 replicas", marks=pytest.mark.slow),
    ("shards", "no such directory"),
    ("config", "was trained with another configuration (differs in model)"),
])
def test_user_errors_are_one_line(small_shards, tmp_path, problem, message):
    shards = small_shards
    model_dir = tmp_path / "m"
    args = {"model": ["--model", "resnet"],
            "batch": ["--strategy", "mirrored", "--cpu_replicas", "2", "--batch_size", "63"],
            "shards": [],
            "config": ["--model", "max_pooling"]}[problem]
    data = shards if problem != "shards" else tmp_path / "missing"
    common = ["--class_labels", str(shards.parent.parent / "class_labels_indices.csv"), *SMALL, "--steps", "1"]
    if problem == "config":  # the model dir of an earlier run with another model
        from models.config import parse_args

        earlier = parse_args(["--train_data", str(data), "--model_dir", str(model_dir), *common])
        model_dir.mkdir()
        (model_dir / "config.json").write_text(json.dumps(earlier.to_json()))
    run = _train_subprocess if problem == "batch" else _train
    result = run(data, model_dir, "--steps", "1", *args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_raw_tfrecords_as_train_data_print_the_build_shards_command(synthetic_tfrecords, tmp_path):
    for data in (synthetic_tfrecords / "*.tfrecord", synthetic_tfrecords):
        result = _main(["--train_data", str(data), "--model_dir", str(tmp_path / "m"), *SMALL])
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        command = (f"python -m beam_pipelines.build_shards --input '{synthetic_tfrecords / '*.tfrecord'}' "
                   "--output_dir shards")
        assert "not shards" in result.stderr and command in result.stderr, result.stderr[-2000:]


def test_progress_lines_give_steps_rates_and_eta():
    import tf_keras as keras

    from models import trainer

    model = keras.Sequential([keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    out = io.StringIO()
    model.fit(np.zeros([8, 2]), np.zeros([8, 1]), batch_size=2, epochs=2, verbose=0,
              callbacks=[trainer.Progress(8, 2, seconds=0, out=out)])
    lines = out.getvalue().splitlines()
    steps = [l for l in lines if l.startswith("step ")]
    assert [int(re.match(r"step (\d+)/8 ", l).group(1)) for l in steps] == list(range(1, 9)), lines
    assert all(re.fullmatch(r"step \d+/8  [0-9.]+ steps/s  \d+ clips/s  loss \S+  ETA (\d+m\d\ds|\?)", l) for l in steps)
    epochs = [l for l in lines if l.startswith("epoch ")]
    assert len(epochs) == 2 and all(re.fullmatch(rf"epoch {e}/2  step {4 * e}/8  \d+s - loss: \S+", l)
                                    for e, l in zip((1, 2), epochs)), lines


@pytest.mark.slow
def test_a_logged_run_prints_lines_and_tensorboard_uses_the_global_step(unvalidated):
    import tensorflow as tf

    model_dir, result = unvalidated  # --steps 4 --steps_per_epoch 2
    assert "\r" not in result.stdout and "\b" not in result.stdout and "━" not in result.stdout
    epochs = [l for l in result.stdout.splitlines() if l.startswith("epoch ")]
    assert [l.split("  ")[:2] for l in epochs] == [["epoch 1/2", "step 2/4"], ["epoch 2/2", "step 4/4"]], result.stdout
    assert len(_losses(result.stdout)) == 2
    events = {}
    for path in tf.io.gfile.glob(str(model_dir / "logs" / "train" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                events.setdefault(value.tag, []).append(event.step)
    assert events["epoch_loss"] == [2, 4] and events["epoch_steps_per_second"] == [2, 4], events


# --- Reliability, round 2 (issue #14). ---------------------------------------------------------------

def test_a_config_json_from_before_precision_resumes_as_it_was(tmp_path):
    from models import trainer
    from models.config import parse_args

    config = parse_args(["--train_data", str(tmp_path), "--model_dir", str(tmp_path), "--mixed_precision"])
    old = {k: v for k, v in config.to_json().items() if k not in ("precision", "steps_per_execution")}
    (tmp_path / "config.json").write_text(json.dumps(old | {"mixed_precision": True}))
    trainer.check_resume(config)  # the same run: accepted
    (tmp_path / "config.json").write_text(json.dumps(old | {"mixed_precision": False}))
    with pytest.raises(trainer.ConfigError, match="differs in precision"):
        trainer.check_resume(config)


def _bad_csv(good: str, problem: str) -> bytes:
    lines = good.splitlines(keepends=True)
    return {"row_missing": "".join(lines[:100] + lines[101:]),
            "row_duplicated": "".join(lines[:101] + lines[100:]),
            "extra_rows": good + "527,/m/extra,Extra\n528,/m/extra2,Extra 2\n",
            "index_not_a_number": good.replace("\n5,", "\nfive,", 1),
            "mid_twice": good.replace("/m/synthetic001", "/m/synthetic000", 1),
            "not_utf8": good.replace("Synthetic class 7", "Synth\xe9tic", 1)}[problem].encode(
        "latin-1" if problem == "not_utf8" else "utf-8")


@pytest.mark.parametrize("problem", ["row_missing", "row_duplicated", "extra_rows", "index_not_a_number", "mid_twice",
                                     "not_utf8", "wrong_name"])
def test_a_bad_class_csv_is_refused_before_the_first_step(small_shards, tmp_path, problem):
    from models import trainer, zoo

    shards = small_shards
    good = (shards.parent.parent / "class_labels_indices.csv").read_text()
    name = "labels.csv" if problem == "wrong_name" else "class_labels_indices.csv"
    (tmp_path / name).write_bytes(good.encode() if problem == "wrong_name" else _bad_csv(good, problem))
    config = trainer.TrainConfig(train_data=str(shards), model_dir=str(tmp_path / "m"), class_labels=str(tmp_path / name),
                                 model=zoo.ModelConfig(name="average_pooling", hidden_units=8), steps=1, batch_size=8)
    with pytest.raises(trainer.ConfigError, match=f"--class_labels: {tmp_path / name}: .*fix or replace the file"):
        trainer.train(config)
    assert not (tmp_path / "m" / "config.json").exists()  # a rerun with the fixed file is not a "changed configuration"


def test_a_class_csv_with_a_utf8_bom_is_read_like_without(small_shards, tmp_path):
    from tfdata import schema

    shards = small_shards
    good = (shards.parent.parent / "class_labels_indices.csv").read_text()
    (tmp_path / "class_labels_indices.csv").write_bytes(b"\xef\xbb\xbf" + good.encode())
    assert schema.read_class_labels(str(tmp_path / "class_labels_indices.csv")) == schema.read_class_labels(
        str(shards.parent.parent / "class_labels_indices.csv"))


@pytest.mark.slow
def test_a_run_whose_loss_becomes_nan_stops_with_one_line_and_exports_nothing(shards, tmp_path):
    result = _train(shards, tmp_path / "m", "--steps", "40", "--steps_per_epoch", "20", "--learning_rate", "1e35",
                    "--lr_schedule", "constant", "--ema", "0", "--mixup", "0")
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the training loss became NaN or infinite at step") and "--learning_rate" in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m" / "saved_model").exists()


# Largest |score difference| from the float32 export of the same seeded run, over 512 clips. XLA and steps per
# execution only reorder float32 sums (without dropout: XLA draws other masks); float16 / bfloat16 compute
# (11 / 8 significant bits) shifts every step.
OPTION_TOLERANCE = {"jit_compile": 1e-4, "steps_per_execution": 1e-4, "mixed_float16": 0.02, "mixed_bfloat16": 0.05}


@pytest.mark.slow
def test_precision_jit_and_steps_per_execution_train_resume_and_export_float32(shards, tmp_path, monkeypatch):
    import tensorflow as tf

    from models import trainer
    from models.config import parse_args
    from tfdata import synthetic

    class Interrupted(Exception):
        pass

    class StopAfterFirstEpoch(trainer.Progress):  # the last callback: it raises after BackupAndRestore saved
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if epoch == 0:
                raise Interrupted()

    common = ["--steps", "4", "--steps_per_epoch", "2", "--model", "feature_attention", "--ema", "0",
              "--learning_rate", "0.01", "--dropout", "0", "--input_dropout", "0", "--frame_dropout", "0"]
    # (XLA draws other dropout masks from the same seed)
    options = {"float32": [], "jit_compile": ["--jit_compile"], "steps_per_execution": ["--steps_per_execution", "2"],
               "mixed_float16": ["--precision", "mixed_float16"], "mixed_bfloat16": ["--precision", "mixed_bfloat16"]}
    # Each run --steps 4 --steps_per_epoch 2 is interrupted after its first epoch, then run again: it resumes.
    results, stdout = {}, io.StringIO()
    for name, extra in options.items():
        config = parse_args(_argv(shards, tmp_path / name, *common, *extra))
        with in_process.isolated(stdout, io.StringIO()), monkeypatch.context() as patch, pytest.raises(Interrupted):
            patch.setattr(trainer, "Progress", StopAfterFirstEpoch)
            trainer.train(config)
        backup = tf.train.latest_checkpoint(config.model_dir + "/backup/chief") or ""
        names = [n for n, _ in tf.train.list_variables(backup)] if backup else []
        with in_process.isolated(stdout, io.StringIO()):
            export = trainer.train(config)
        results[name] = {"backup": bool(backup), "loss_scale": any("loss_scale" in n for n in names), "export": export}
    assert all(r["backup"] for r in results.values()), results  # each run was interrupted with a backup ...
    epochs = re.findall(r"epoch (\d+)/2", stdout.getvalue())  # ... and resumed at epoch 2, not from the beginning
    assert sorted(epochs) == ["1"] * len(options) + ["2"] * len(options), epochs
    assert [name for name, r in results.items() if r["loss_scale"]] == ["mixed_float16"]  # loss scaling: float16 only

    clips = next(synthetic.generate(synthetic.SyntheticConfig(num_clips=512, seed=11)))
    embedding = tf.constant(clips["embedding"])  # [512, 10, 128] uint8, padding read as frames (same for all)

    def scores(name):
        model = tf.saved_model.load(results[name]["export"])
        graph = model.signatures["serving_default"].graph.as_graph_def()
        nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
        low = {tf.float16.as_datatype_enum, tf.bfloat16.as_datatype_enum}
        assert not [n.name for n in nodes if any(a.type in low for a in n.attr.values())], name  # float32 export
        out = model.signatures["serving_default"](embedding=embedding)["scores"]  # [512, 527]
        assert out.dtype == tf.float32
        return out.numpy()

    reference = scores("float32")
    differences = {name: float(np.abs(scores(name) - reference).max()) for name in OPTION_TOLERANCE}
    assert all(differences[name] <= tolerance for name, tolerance in OPTION_TOLERANCE.items()), differences
    assert differences["mixed_float16"] > 0 and differences["mixed_bfloat16"] > 0, differences  # they took effect


def test_a_config_json_from_before_the_regularisers_resumes_as_it_was(tmp_path):
    from models import config as model_config, trainer

    # An earlier run trained what the fields' absence meant: no weight decay, no input or frame dropout.
    config = model_config.TrainConfig(str(tmp_path), str(tmp_path), weight_decay=0.0,
                                      model=model_config.ModelConfig(input_dropout=0.0, frame_dropout=0.0))
    old = config.to_json()
    for key in ("weight_decay", "label_smoothing"):
        del old[key]
    for key in ("frame_dropout", "input_dropout"):
        del old["model"][key]
    (tmp_path / "config.json").write_text(json.dumps(old))
    trainer.check_resume(config)  # the same run: resumes
    changed = model_config.TrainConfig(str(tmp_path), str(tmp_path), weight_decay=0.1, model=config.model)
    with pytest.raises(model_config.ConfigError, match="weight_decay"):
        trainer.check_resume(changed)


@pytest.mark.parametrize("weight_decay", [0.5, 0.0])
def test_weight_decay_shrinks_weights_that_get_no_gradient(tmp_path, weight_decay):
    import tensorflow as tf

    from models import config as model_config, trainer

    config = model_config.TrainConfig(str(tmp_path), str(tmp_path), learning_rate=0.1, lr_schedule="constant",
                                      weight_decay=weight_decay, ema=0.0)
    variable = tf.Variable(tf.ones([4]))
    trainer.make_optimizer(config).apply_gradients([(tf.zeros([4]), variable)])
    np.testing.assert_allclose(variable.numpy(), 1 - 0.1 * weight_decay, rtol=1e-5)  # decoupled: w -= lr * wd * w

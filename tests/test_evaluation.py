"""evaluate.py and predict.py against small SavedModels with a known scoring function."""

import csv
import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import evaluate
import predict
from evaluation import plots, report, scoring
from models import metrics
from tfdata import readers, schema, synthetic


class _LinearScorer(tf.Module):
    """scores = sigmoid(mean over real frames of dequantized frames @ w): a stand-in exported model."""

    def __init__(self, seed: int):
        super().__init__()
        self.w = tf.Variable(np.random.default_rng(seed).normal(0, 0.3, [128, 527]).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples):
        clips = readers.parse_sequence_examples(examples)
        x = schema.dequantize(clips["embedding"])  # [B, 10, 128]
        mask = tf.sequence_mask(clips["num_frames"], schema.NUM_FRAMES, tf.float32)[..., None]  # [B, 10, 1]
        mean = tf.reduce_sum(x * mask, 1) / tf.reduce_sum(mask, 1)  # [B, 128]
        return {"scores": tf.sigmoid(mean @ self.w)}


def _export(path, seed, labels_csv):
    module = _LinearScorer(seed)
    module.labels = tf.saved_model.Asset(str(labels_csv))
    tf.saved_model.save(module, str(path), signatures={"serve_examples": module.serve_examples})
    return str(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, synthetic_tfrecords):
    root = tmp_path_factory.mktemp("models")
    csv = synthetic_tfrecords / "class_labels_indices.csv"
    return _export(root / "a", 1, csv), _export(root / "b", 2, csv)


def _evaluate(tmp_path, models, data, name="r"):
    out = tmp_path / name
    assert evaluate.main(["--saved_model", *models, "--data", str(data), "--output_dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, exported, synthetic_tfrecords):
    """evaluated(0), evaluated(0, 1), ...: evaluate.py's output dir for those exported models on all 2,000
    synthetic clips, each set of models scored once per module (the tests only read the output)."""
    root, runs = tmp_path_factory.mktemp("evaluated"), {}

    def run(*which):
        if which not in runs:
            runs[which] = _evaluate(root, [exported[i] for i in which], synthetic_tfrecords / "*.tfrecord",
                                    "".join("ab"[i] for i in which))
        return runs[which]

    return run


def test_metrics_equal_sklearn_over_the_saved_scores(evaluated):
    from sklearn.metrics import average_precision_score

    out = evaluated(0)
    saved = np.load(out / "scores.npz")
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_clips"] == len(saved["scores"]) == 2000
    labels = saved["labels"].astype(bool)
    scored = [c for c in range(527) if labels[:, c].any()]
    assert m["num_classes_scored"] == len(scored) and m["num_classes_left_out"] == 527 - len(scored)
    expected = np.mean([average_precision_score(labels[:, c], saved["scores"][:, c]) for c in scored])
    assert abs(m["mAP"] - expected) < 1e-9
    assert len(m["per_class"]) == 527 and m["per_class"][0]["name"] == "Synthetic class 0"
    assert (out / "per_class.csv").read_text().startswith("index,name,positives,AP,AUC\n")


@pytest.mark.slow  # scores more model sets on the 2,000 clips than the fast tests share
def test_snapshot_averaging(evaluated):
    a, b = (np.load(evaluated(i) / "scores.npz")["scores"] for i in (0, 1))
    same = np.load(evaluated(0, 0) / "scores.npz")["scores"]
    mean = np.load(evaluated(0, 1) / "scores.npz")["scores"]
    np.testing.assert_allclose(same, a, atol=1e-7)
    np.testing.assert_allclose(mean, (a + b) / 2, atol=1e-6)
    assert not np.allclose(a, b)


def test_plot_is_a_png_of_the_expected_size(evaluated):
    out = evaluated(0)
    png = (out / "per_class.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    w, h = plots.PLOT_SIZE_INCHES
    assert (width, height) == (w * plots.PLOT_DPI, h * plots.PLOT_DPI)


@pytest.mark.slow  # scores more model sets on the 2,000 clips than the fast tests share
def test_compare_lists_every_run(tmp_path, evaluated, capsys):
    runs = [str(evaluated(0)), str(evaluated(1))]
    capsys.readouterr()
    assert evaluate.main(["--compare", *runs, "--output", str(tmp_path / "table.md")]) == 0
    table = (tmp_path / "table.md").read_text()
    assert capsys.readouterr().out == table
    for run in runs:
        m = json.loads((Path(run) / "metrics.json").read_text())
        assert f"| {run} |" in table and f"{m['mAP']:.3f}" in table


def test_predict_equals_evaluation_scores(tmp_path, exported, evaluated, synthetic_tfrecords, capsys):
    out = evaluated(0)
    saved = np.load(out / "scores.npz")
    files = sorted(synthetic_tfrecords.glob("*.tfrecord"))[:3]
    capsys.readouterr()
    assert predict.main(["--saved_model", exported[0], "--input", ",".join(map(str, files)), "--top_k", "3",
                         "--output", str(tmp_path / "p.jsonl")]) == 0
    lines = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
    printed = capsys.readouterr().out.splitlines()
    assert len(lines) == len(printed) > 0
    row = {v.decode(): i for i, v in enumerate(saved["video_id"])}
    for line in lines:
        scores = saved["scores"][row[line["video_id"]]]
        assert [t["index"] for t in line["top"]] == np.argsort(-scores, kind="stable")[:3].tolist()
        np.testing.assert_allclose([t["score"] for t in line["top"]], np.sort(scores)[::-1][:3], rtol=1e-6)
        assert line["top"][0]["name"].startswith("Synthetic class")


def test_predict_accepts_clips_longer_than_ten_seconds(tmp_path, exported):
    clip = next(synthetic.generate(synthetic.SyntheticConfig(num_clips=1, seed=9)))
    record = tf.train.SequenceExample.FromString(synthetic.sequence_example(clip, 0))
    frames = record.feature_lists.feature_list[schema.EMBEDDING_KEY].feature
    for _ in range(50):  # a 60-second recording
        frames.add().bytes_list.value.append(bytes(128))
    with tf.io.TFRecordWriter(str(tmp_path / "long.tfrecord")) as w:
        w.write(record.SerializeToString())
    assert predict.main(["--saved_model", exported[0], "--input", str(tmp_path / "long.tfrecord"),
                         "--output", str(tmp_path / "p.jsonl")]) == 0
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--saved_model", "{tmp}", "--data", "{data}", "--output_dir", "{tmp}/r"], "not a SavedModel"),
    (["--saved_model", "{model}", "--data", "{tmp}/none/*.tfrecord", "--output_dir", "{tmp}/r"], "no files match"),
    (["--compare", "{tmp}"], "no metrics.json"),
])
def test_user_errors_are_one_line(tmp_path, exported, synthetic_tfrecords, capsys, args, message):
    fill = {"tmp": str(tmp_path), "data": str(synthetic_tfrecords / "*.tfrecord"), "model": exported[0]}
    assert evaluate.main([a.format(**fill) for a in args]) != 0
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_records_are_skipped_and_counted(tmp_path, exported, synthetic_tfrecords, capsys):
    good = sorted(synthetic_tfrecords.glob("*.tfrecord"))[0]
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(good))]
    with tf.io.TFRecordWriter(str(tmp_path / "mixed.tfrecord")) as w:
        w.write(b"not a sequence example")
        for r in records:
            w.write(r)
    out = _evaluate(tmp_path, exported[:1], tmp_path / "mixed.tfrecord")
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_clips"] == len(records) and m["skipped_records"] == {"not_a_sequence_example": 1}
    assert "skipped invalid records" in capsys.readouterr().out


def test_a_truncated_file_is_named_in_a_one_line_error(tmp_path, exported, synthetic_tfrecords, capsys):
    data = sorted(synthetic_tfrecords.glob("*.tfrecord"))[0].read_bytes()
    (tmp_path / "cut.tfrecord").write_bytes(data[: len(data) - 100])
    assert evaluate.main(["--saved_model", exported[0], "--data", str(tmp_path / "cut.tfrecord"),
                          "--output_dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'cut.tfrecord'}: truncated record" in err and err.count("\n") == 1


def test_predict_on_a_sound_file_points_to_the_own_audio_path(tmp_path, capsys):
    (tmp_path / "dog.wav").write_bytes(b"RIFF\0\0\0\0WAVEfmt ")
    (tmp_path / "clip.bin").write_bytes(b"fLaC\0\0\0\x22")
    for path in (tmp_path / "dog.wav", tmp_path / "clip.bin", tmp_path / "song.MP3"):
        assert predict.main(["--saved_model", str(tmp_path), "--input", str(path)]) == 2
        err = capsys.readouterr().err
        assert "looks like a sound file" in err and "--audio FILE" in err and err.count("\n") == 1, err


def test_predict_and_evaluate_take_the_model_dir_of_train_py(tmp_path, exported, synthetic_tfrecords, capsys):
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(exported[0], run / "saved_model")
    files = str(sorted(synthetic_tfrecords.glob("*.tfrecord"))[0])
    assert predict.main(["--saved_model", str(run), "--input", files, "--top_k", "1"]) == 0
    assert evaluate.main(["--saved_model", str(run), "--data", files, "--output_dir", str(tmp_path / "r")]) == 0
    assert "using its export" in capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["saved_models"] == [str(run / "saved_model")]


def test_evaluate_checks_its_output_dir_before_scoring(tmp_path, exported, synthetic_tfrecords, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(scoring, "score", lambda *a, **k: pytest.fail("scored before checking --output_dir"))
    for out in (tmp_path / "file", tmp_path / "file" / "r"):
        assert evaluate.main(["--saved_model", exported[0], "--data", str(synthetic_tfrecords / "*.tfrecord"),
                              "--output_dir", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: --output_dir") and err.count("\n") == 1, err


@pytest.mark.slow
def test_predict_accepts_a_plain_split_directory_like_evaluate(tmp_path, exported, beam_shards, capsys):
    assert evaluate.main(["--saved_model", exported[0], "--data", str(beam_shards / "holdout"),
                          "--output_dir", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert predict.main(["--saved_model", exported[0], "--input", str(beam_shards / "holdout"), "--top_k", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == json.loads((tmp_path / "r" / "metrics.json").read_text())["num_clips"]


def test_predict_prints_true_labels_and_writes_csv(tmp_path, exported, synthetic_tfrecords, capsys):
    files = str(sorted(synthetic_tfrecords.glob("*.tfrecord"))[0])
    assert predict.main(["--saved_model", exported[0], "--input", files, "--top_k", "2",
                         "--output", str(tmp_path / "p.csv")]) == 0
    printed = capsys.readouterr().out.splitlines()
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["video_id", "start_time_seconds", "label_1", "score_1", "label_2", "score_2",
                             "true_labels"]
    assert len(rows) == len(printed) > 0
    clips = {(c.video_id, c.start): c for c in _clips(files)}
    for row, line in zip(rows, printed):
        clip = clips[(row["video_id"].encode(), float(row["start_time_seconds"]))]
        true = [f"Synthetic class {c}" for c in clip.labels]
        assert row["true_labels"].split("; ") == true and line.endswith("[true: " + ", ".join(true) + "]")
        assert row["label_1"] in line and float(row["score_1"]) >= float(row["score_2"])


def _clips(path):
    import collections

    Clip = collections.namedtuple("Clip", "video_id start labels")
    for batch in readers.read_tfrecords(path).as_numpy_iterator():
        for v, s, l in zip(batch["video_id"], batch["start_time_seconds"], batch["labels"]):
            yield Clip(v, float(s), np.flatnonzero(l).tolist())


def test_best_classes_leave_out_classes_with_few_positives():
    rng = np.random.default_rng(0)
    labels = (rng.random([400, 527]) < 0.05).astype(np.uint8)
    labels[:, 0] = 0
    labels[0, 0] = 1  # class 0: one positive, scored perfectly (AP 1.0)
    scores = rng.random([400, 527]).astype(np.float32)
    scores[0, 0] = 1.0
    result = metrics.compute(labels, scores)
    assert result.per_class[0].ap == 1.0
    out = io.StringIO()
    report.print_table(result, tuple(f"class {c}" for c in range(527)), out)
    assert "class 0 " not in out.getvalue() and "at least 5 positives" in out.getvalue()
    assert all(m.positives >= 5 for m in plots.ranked_classes(result))


@pytest.mark.slow  # scores more model sets on the 2,000 clips than the fast tests share
def test_compare_shows_the_data_and_warns_when_it_differs(tmp_path, exported, evaluated, synthetic_tfrecords, capsys):
    files = sorted(synthetic_tfrecords.glob("*.tfrecord"))
    a, b = evaluated(0), evaluated(1)
    c = _evaluate(tmp_path, exported[1:], files[0], "c")
    same = report.compare([str(a), str(b)])
    assert "warning" not in same
    scores = [np.load(d / "scores.npz") for d in (a, b)]
    difference = metrics.bootstrap_difference(scores[1]["labels"], scores[1]["scores"], scores[0]["scores"])
    assert "| {:+.4f} ({:+.4f} to {:+.4f}) |".format(*difference) in same.splitlines()[3]  # b minus a, paired
    table = report.compare([str(a), str(c)])
    assert f"| {synthetic_tfrecords / '*.tfrecord'} |" in table and f"| {files[0]} |" in table
    assert "warning: these results were measured on different data" in table
    assert "| n/a |" in table.splitlines()[3]  # other clips: no paired difference


def test_paired_difference_matches_clips_by_id_and_start_time(tmp_path):
    rng = np.random.default_rng(0)
    ids, starts = np.array([f"v{i % 150}".encode() for i in range(300)]), np.repeat([0.0, 30.0], 150)
    labels = (rng.random([300, 6]) < 0.2).astype(np.uint8)
    scores = {"a": rng.random([300, 6]), "b": rng.random([300, 6]) + 0.5 * labels}

    def save(name, order, labels=labels):
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "scores.npz", video_id=ids[order], start_time_seconds=starts[order],
                 scores=scores[name[0]][order], labels=labels[order])
        return str(tmp_path / name)

    a, b = save("a", np.arange(300)), save("b", np.arange(300))
    expected = metrics.bootstrap_difference(labels, scores["b"], scores["a"])
    assert report.paired_difference(b, a) == pytest.approx(expected) and expected[1] > 0
    shuffled = save("a_shuffled", rng.permutation(300))  # the baseline's clips in another order: the same figures
    assert report.paired_difference(b, shuffled) == pytest.approx(expected, abs=1e-12)
    assert report.paired_difference(save("b_fewer", np.arange(299)), a) is None
    assert report.paired_difference(save("b_relabelled", np.arange(300), 1 - labels), a) is None
    assert report.paired_difference(b, str(tmp_path / "missing")) is None


def test_scoring_progress_is_lines_when_not_a_terminal(exported, synthetic_tfrecords, monkeypatch):
    monkeypatch.setattr(scoring, "PROGRESS_SECONDS", 0)
    log = io.StringIO()  # not a terminal
    scoring.score(exported[:1], sorted(map(str, synthetic_tfrecords.glob("*.tfrecord"))), 256, progress=log)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) > 2 and all(l.startswith("scored ") for l in lines)


# --- Reliability, round 2 (issue #14). ---------------------------------------------------------------

def _huge_length_file(path, good_records):
    """Good records, then a header claiming 2**62 bytes with a valid header CRC (TensorFlow's reader crashes)."""
    from beam_pipelines import read

    with tf.io.TFRecordWriter(str(path)) as w:
        for r in good_records:
            w.write(r)
    header = struct.pack("<Q", 2 ** 62)
    with open(path, "ab") as f:
        f.write(header + struct.pack("<I", read.masked_crc32c(header)) + bytes(64))


@pytest.mark.parametrize("tool", ["evaluate", "predict"])
def test_a_record_length_beyond_the_file_is_named_not_a_crash(tmp_path, exported, synthetic_tfrecords, capsys, tool):
    good = sorted(synthetic_tfrecords.glob("*.tfrecord"))[0]
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(good))]
    _huge_length_file(tmp_path / "huge.tfrecord", records)
    if tool == "evaluate":
        status = evaluate.main(["--saved_model", exported[0], "--data", str(tmp_path / "huge.tfrecord"),
                                "--output_dir", str(tmp_path / "r")])
    else:
        status = predict.main(["--saved_model", exported[0], "--input", str(tmp_path / "huge.tfrecord")])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1, err
    assert (f"{tmp_path / 'huge.tfrecord'}: truncated record or corrupt length field (record {len(records)} claims "
            "4611686018427387904 bytes") in err


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_glob_that_matches_something_other_than_a_file_is_one_line(tmp_path, exported, synthetic_tfrecords, capsys,
                                                                     kind):
    good = sorted(synthetic_tfrecords.glob("*.tfrecord"))[0]
    (tmp_path / "a.tfrecord").write_bytes(good.read_bytes())
    (tmp_path / "b.tfrecord").mkdir() if kind == "directory" else os.mkfifo(tmp_path / "b.tfrecord")
    assert predict.main(["--saved_model", exported[0], "--input", str(tmp_path / "*.tfrecord")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'b.tfrecord'}: a " in err and "narrow the input glob" in err and err.count("\n") == 1


def test_a_degenerate_set_writes_valid_json_with_null_and_why(tmp_path, exported, synthetic_tfrecords):
    good = sorted(synthetic_tfrecords.glob("*.tfrecord"))[0]
    with tf.io.TFRecordWriter(str(tmp_path / "one.tfrecord")) as w:  # one clip: no class has a negative clip
        w.write(next(iter(tf.data.TFRecordDataset(str(good)))).numpy())
    out = _evaluate(tmp_path, exported[:1], tmp_path / "one.tfrecord")

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    m = json.loads((out / "metrics.json").read_text(), parse_constant=refuse)
    assert m["AUC"] is None and m["d_prime"] is None and "AUC" in m["null_values"]
    assert "undefined" in m["null_values"]["AUC"]
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]
    assert "| n/a | n/a |" in report.compare([str(out)])


@pytest.mark.parametrize("value", ["-1", "0"])
def test_predict_max_clips_must_be_positive(exported, synthetic_tfrecords, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        predict.main(["--saved_model", exported[0], "--input", str(synthetic_tfrecords / "*.tfrecord"),
                      "--max_clips", value])
    assert exit_.value.code == 2 and "--max_clips must be positive" in capsys.readouterr().err


def test_a_truncated_train_manifest_is_named(tmp_path, exported, synthetic_tfrecords, capsys):
    (tmp_path / "manifest.json").write_text('{"schema_version": 2, "class_counts": [1, 2')
    assert evaluate.main(["--saved_model", exported[0], "--data", str(synthetic_tfrecords / "*.tfrecord"),
                          "--output_dir", str(tmp_path / "r"), "--train_manifest", str(tmp_path / "manifest.json")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'manifest.json'}: not a valid manifest" in err and "rebuild" in err and err.count("\n") == 1


def test_a_video_id_that_is_not_utf8_is_skipped_and_counted_not_a_crash(tmp_path, exported, synthetic_tfrecords, capsys):
    good = sorted(synthetic_tfrecords.glob("*.tfrecord"))[0]
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(good))]
    bad = tf.train.SequenceExample.FromString(records[0])
    bad.context.feature["video_id"].bytes_list.value[:] = [b"caf\xe9\xff"]
    with tf.io.TFRecordWriter(str(tmp_path / "ids.tfrecord")) as w:
        for r in [bad.SerializeToString()] + records:
            w.write(r)
    assert predict.main(["--saved_model", exported[0], "--input", str(tmp_path / "ids.tfrecord"),
                         "--output", str(tmp_path / "p.jsonl")]) == 0
    captured = capsys.readouterr()
    assert "bad_video_id': 1" in captured.err
    assert len(captured.out.splitlines()) == len(records) == len((tmp_path / "p.jsonl").read_text().splitlines())


def test_predict_output_is_written_whole_or_not_at_all(tmp_path, exported, synthetic_tfrecords, capsys, monkeypatch):
    """A full disk while --output is written leaves no partial file and says so in one line."""
    from tfdata import fileio

    def full_disk(path, data):
        with open(path, "wb") as f:
            f.write(data[:len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio, "_write_file", full_disk)
    files = str(sorted(synthetic_tfrecords.glob("*.tfrecord"))[0])
    for name in ("p.csv", "p.jsonl"):
        assert predict.main(["--saved_model", exported[0], "--input", files, "--output", str(tmp_path / name)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot write --output {tmp_path / name}") and "No space left" in err
    assert list(tmp_path.iterdir()) == []

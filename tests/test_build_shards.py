"""The Beam job end to end: shards, accounting, rejections, determinism, HDF5 input, errors, real bal_train."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from beam_pipelines import build_shards
from tests.conftest import REPO_ROOT
from tests.test_readers import _sequence_example
from tfdata import readers, schema, synthetic


def _build(out, input_glob, *extra):
    manifest = build_shards.run(["--input", str(input_glob), "--output_dir", str(out), *extra])
    assert json.loads((out / "manifest.json").read_text()) == manifest
    return manifest


def _plain(out, manifest, split):
    files = [str(out / f) for f in manifest["splits"][split]["files"]]
    batches = list(readers.read_tfrecords(files, batch_size=512).as_numpy_iterator())
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def _records(pattern):
    return [r for r in tf.data.TFRecordDataset(readers.list_files(str(pattern))).as_numpy_iterator()]


def _blocks(out, manifest, files=None):
    split = manifest["splits"]["train"]
    paths = [str(out / f) for f in (files or split["files"])]
    serialized = [r for r in tf.data.TFRecordDataset(paths).as_numpy_iterator()]
    return {k: v.numpy() for k, v in schema.decode_blocks(tf.constant(serialized), split["block_size"]).items()}


def _digests(out):
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def _direct(pattern):
    """Every clip of the input, read with the readers (the reference for the job's counts)."""
    batches = list(readers.read_tfrecords(str(pattern)).as_numpy_iterator())
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


@pytest.fixture(scope="module")
def built(tmp_path_factory, synthetic_tfrecords):
    out = tmp_path_factory.mktemp("built") / "out"
    return out, _build(out, synthetic_tfrecords / "*.tfrecord", "--holdout_fraction", "0.2", "--block_size", "16")


@pytest.mark.slow
def test_every_record_is_accounted_for_and_class_counts_match(built, synthetic_tfrecords):
    out, manifest = built
    direct = _direct(synthetic_tfrecords / "*.tfrecord")["labels"].sum(axis=0)
    assert manifest["input_records"] == manifest["written_clips"] + manifest["rejected"] == 2000
    assert manifest["rejected"] == 0 and list(manifest["rejected_reasons"]) == list(schema.REJECT_REASONS)
    assert manifest["class_counts"] == direct.tolist()
    train, holdout = manifest["splits"]["train"], manifest["splits"]["holdout"]
    assert train["clips"] + holdout["clips"] == 2000 and 300 < holdout["clips"] < 500
    assert (np.array(train["class_counts"]) + holdout["class_counts"]).tolist() == direct.tolist()
    assert manifest["complete"] is True and manifest["schema_version"] == schema.SHARD_SCHEMA_VERSION
    assert manifest["args"]["input"] == str(synthetic_tfrecords / "*.tfrecord") and manifest["args"]["block_size"] == 16
    listed = set(train["files"]) | set(holdout["files"]) | {manifest["rejected_file"]}
    assert listed == set(_digests(out))  # every file listed, nothing else left (no spilled parts)
    assert (out / manifest["rejected_file"]).read_text() == ""


@pytest.mark.slow
def test_holdout_is_a_stable_hash_of_the_video_id_and_disjoint_from_train(built, synthetic_tfrecords):
    out, manifest = built
    everything = _direct(synthetic_tfrecords / "*.tfrecord")
    holdout = _plain(out, manifest, "holdout")
    hashed = {v: int.from_bytes(hashlib.sha256(v).digest()[:8], "big") for v in everything["video_id"]}
    expected = {v for v, h in hashed.items() if h < 0.2 * 2 ** 64}
    assert sorted(holdout["video_id"]) == sorted(expected)  # each once, exactly the hashed ones
    for f in manifest["splits"]["holdout"]["files"]:  # each file sorted by video id
        ids = [v for b in readers.read_tfrecords(str(out / f)).as_numpy_iterator() for v in b["video_id"]]
        assert ids == sorted(ids)
    # the training blocks hold exactly the other clips (synthetic embeddings identify clips)
    in_blocks = {e.tobytes() for e in _blocks(out, manifest)["embedding"].reshape(-1, 10, 128)}
    kept = ~np.isin(everything["video_id"], list(expected))
    assert in_blocks == {e.tobytes() for e in everything["embedding"][kept]}


@pytest.mark.slow
def test_blocks_hold_their_class_and_cycle_through_its_clips(built, synthetic_tfrecords):
    out, manifest = built
    split = manifest["splits"]["train"]
    k = split["block_size"]
    blocks = _blocks(out, manifest)
    assert all(blocks["labels"][b, :, c].all() for b, c in enumerate(blocks["class_index"]))
    per_class = np.bincount(blocks["class_index"], minlength=schema.NUM_CLASSES)
    counts = np.array(split["class_counts"])
    assert per_class.tolist() == [max(8, -(-n // k)) if n else 0 for n in counts]  # --min_blocks_per_class 8
    assert per_class.sum() == split["blocks"]
    for c in (0, 100, 526):
        if not counts[c]:
            continue
        assert split["class_files"][c] == [f"train/class-{c:03d}-00000-of-00001.tfrecord"]
        mine = _blocks(out, manifest, split["class_files"][c])
        seen = {}
        for e in mine["embedding"].reshape(-1, 10, 128):
            seen[e.tobytes()] = seen.get(e.tobytes(), 0) + 1
        assert len(seen) == counts[c]  # every clip of the class is there
        assert max(seen.values()) - min(seen.values()) <= 1  # and repeated evenly by the cycles
    assert all(f.startswith(f"train/class-{c:03d}-") for c, files in enumerate(split["class_files"]) for f in files)


@pytest.mark.slow
def test_same_input_gives_the_same_bytes_on_other_runner_modes(built, tmp_path, synthetic_tfrecords):
    out, manifest = built
    other = _build(tmp_path / "again", synthetic_tfrecords / "*.tfrecord", "--holdout_fraction", "0.2",
                   "--block_size", "16", "--shuffle_values", "beam", "--records_per_batch", "300",
                   "--direct_running_mode=multi_threading", "--direct_num_workers=2")
    assert _digests(tmp_path / "again") == _digests(out) and len(_digests(out)) > 400
    assert {k: v for k, v in other.items() if k != "args"} == {k: v for k, v in manifest.items() if k != "args"}


@pytest.mark.slow
def test_plain_layout_writes_every_original_record_once(tmp_path, synthetic_tfrecords):
    out = tmp_path / "plain"
    manifest = _build(out, synthetic_tfrecords / "*.tfrecord", "--layout", "plain", "--num_plain_shards", "5")
    assert set(manifest["splits"]) == {"eval"} and manifest["splits"]["eval"]["layout"] == "plain"
    written = _records(out / "eval" / "*.tfrecord")
    assert len(written) == 2000 and sorted(written) == sorted(_records(synthetic_tfrecords / "*.tfrecord"))
    assert len(manifest["splits"]["eval"]["files"]) == 5


def _write(path, records):
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in records:
            w.write(r)


@pytest.mark.slow
def test_malformed_records_are_rejected_with_their_reasons(tmp_path):
    good = [_sequence_example(video_id=f"good{i:07d}".encode(), labels=(i % 5,)) for i in range(6)]
    bad = {
        "bad_frame_length": _sequence_example(video_id=b"badframelen", frames=[b"\x01" * 100] * 10),
        "missing_video_id": _sequence_example(drop=("video_id",)),
        "missing_labels": _sequence_example(video_id=b"nolabels000", drop=("labels",)),
        "no_frames": _sequence_example(video_id=b"noframes000", frames=[]),
        "too_many_frames": _sequence_example(video_id=b"toolong0000", frames=[b"\x01" * 128] * 11),
        "label_out_of_range": _sequence_example(video_id=b"badlabel000", labels=(527,)),
        "not_a_sequence_example": b"\x00\x01garbage",
    }
    negative = _sequence_example(video_id=b"neglabel000", labels=(-3,))
    relabelled = _sequence_example(video_id=b"good0000000", labels=(300,))  # a copy of good[0] with other labels
    (tmp_path / "in").mkdir()
    _write(tmp_path / "in" / "a.tfrecord", good[:3] + list(bad.values()) + [good[0]])  # a duplicate in the file
    _write(tmp_path / "in" / "b.tfrecord", good[3:] + [negative, good[1], relabelled])  # and across files
    out = tmp_path / "out"
    manifest = _build(out, tmp_path / "in" / "*.tfrecord")
    expected = {reason: 1 for reason in bad} | {"label_out_of_range": 2, "duplicate": 2, "conflicting_duplicate": 1}
    assert {r: n for r, n in manifest["rejected_reasons"].items() if n} == expected
    assert manifest["input_records"] == 17 == manifest["written_clips"] + manifest["rejected"]
    assert manifest["written_clips"] == 6
    assert manifest["class_counts"][300] == 0 and sum(manifest["class_counts"]) == 6  # the first copy's labels
    rejected = [json.loads(line) for line in (out / manifest["rejected_file"]).read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == sorted(r for r, n in expected.items() for _ in range(n))
    where = [(r["file"].rsplit("/", 1)[-1], r["position"], r["reason"]) for r in rejected]
    assert where == sorted(where)  # sorted by file and position
    assert [w[:2] for w in where if w[2] == "duplicate"] == [("a.tfrecord", 10), ("b.tfrecord", 4)]
    assert [w[:2] for w in where if w[2] == "conflicting_duplicate"] == [("b.tfrecord", 5)]  # the first copy is kept
    assert {w[:2]: w[2] for w in where}[("a.tfrecord", 3)] == "bad_frame_length"


@pytest.mark.slow
def test_corrupt_and_truncated_files_keep_their_readable_records(tmp_path):
    def file_bytes(prefix):
        path = tmp_path / f"{prefix}.tmp"
        records = [_sequence_example(video_id=f"{prefix}{i:07d}".encode()) for i in range(4)]
        _write(path, records)
        data = path.read_bytes()
        path.unlink()
        return data, len(records[0]) + 16

    (tmp_path / "in").mkdir()
    crc, size = file_bytes("crcc")
    corrupt = bytearray(crc)
    corrupt[size + 12 + 50] ^= 0xFF  # a byte inside the second record's data: its CRC fails
    (tmp_path / "in" / "crc.tfrecord").write_bytes(bytes(corrupt))
    cut, size = file_bytes("cutc")
    (tmp_path / "in" / "cut.tfrecord").write_bytes(cut[: 2 * size + 30])  # cut inside the third record
    (tmp_path / "in" / "text.tfrecord").write_bytes(b"this is not a TFRecord file\n" * 3)
    (tmp_path / "in" / "empty.tfrecord").write_bytes(b"")
    manifest = _build(tmp_path / "out", tmp_path / "in" / "*.tfrecord")
    # crc: 3 readable + 1 rejected; cut: 2 readable + the unreadable rest; text: unreadable from the start
    assert manifest["written_clips"] == 5
    assert manifest["rejected_reasons"]["unreadable_data"] == 3 == manifest["rejected"]
    assert manifest["input_records"] == manifest["written_clips"] + manifest["rejected"] == 8
    rejected = [json.loads(line) for line in (tmp_path / "out" / manifest["rejected_file"]).read_text().splitlines()]
    assert [(r["file"].rsplit("/", 1)[-1], r["position"]) for r in rejected] == [
        ("crc.tfrecord", 1), ("cut.tfrecord", 2), ("text.tfrecord", 0)]


@pytest.mark.slow
def test_hdf5_input_gives_the_same_shards_as_tfrecords(tmp_path):
    config = synthetic.SyntheticConfig(num_clips=500, seed=4)
    synthetic.write_hdf5(config, str(tmp_path / "clips.h5"))
    synthetic.write_tfrecords(config, str(tmp_path / "tfrecords"))
    args = ["--holdout_fraction", "0.3", "--block_size", "8"]
    from_h5 = _build(tmp_path / "h5", tmp_path / "clips.h5", *args, "--records_per_batch", "128")
    from_tf = _build(tmp_path / "tf", tmp_path / "tfrecords" / "*.tfrecord", *args)
    assert from_h5["written_clips"] == 500 and from_h5["class_counts"] == from_tf["class_counts"]
    h5, tf_ = _digests(tmp_path / "h5"), _digests(tmp_path / "tf")
    train = [f for f in tf_ if f.startswith("train/")]
    assert train and {f: h5.get(f) for f in train} == {f: tf_[f] for f in train}  # byte-identical blocks
    a, b = _plain(tmp_path / "h5", from_h5, "holdout"), _plain(tmp_path / "tf", from_tf, "holdout")
    for key in ("video_id", "embedding", "num_frames", "labels", "start_time_seconds", "reason"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.slow
def test_user_errors_are_one_line_and_write_nothing(tmp_path, synthetic_tfrecords, capsys):
    import h5py

    with h5py.File(tmp_path / "bad.h5", "w") as h5:
        h5["x"] = np.zeros([4, 10, 128], np.uint8)
        h5["y"] = np.zeros([4, 527], np.float32)
        h5["video_id_list"] = np.array([b"a"] * 4)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.tfrecord").write_bytes(b"")
    glob = str(synthetic_tfrecords / "*.tfrecord")
    cases = [
        ([str(tmp_path / "none" / "*.tfrecord"), str(tmp_path / "new")], "no files match"),
        ([str(tmp_path / "bad.h5"), str(tmp_path / "new")], "bad.h5: y is float32"),
        ([glob, str(tmp_path / "full")], "is not empty (1 files)"),
        ([glob, str(tmp_path / "full"), "--overwrite"], "--overwrite refused"),
    ]
    for (input_glob, out, *extra), message in cases:
        assert build_shards.main(["--input", input_glob, "--output_dir", out, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "new").exists() and [p.name for p in (tmp_path / "full").iterdir()] == ["old.tfrecord"]
    # and from the command line: exit status 2, our one line, no traceback
    input_glob, out = cases[0][0]
    command = [sys.executable, "-m", "beam_pipelines.build_shards", "--input", input_glob, "--output_dir", out]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    ours = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(ours) == 1 and "no files match" in ours[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_an_output_dir_that_is_a_file_is_one_line_without_beam_warnings(tmp_path, synthetic_tfrecords):
    """Was a NotADirectoryError traceback, after Beam's `apitools not found` warning."""
    (tmp_path / "file").write_text("x")
    glob = str(synthetic_tfrecords / "*.tfrecord")
    procs = [subprocess.Popen([sys.executable, "-m", "beam_pipelines.build_shards", "--input", glob, "--output_dir",
                               str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
             for out in (tmp_path / "file", tmp_path / "file" / "shards")]  # the two side by side
    for proc in procs:
        stderr = proc.communicate()[1]
        ours = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(ours) == 1 and "is a file" in ours[0], stderr
        assert "Traceback" not in stderr and "apitools" not in stderr
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.slow
def test_overwrite_replaces_an_earlier_output(tmp_path, synthetic_tfrecords):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train").mkdir()
    (out / "train" / "stale.tfrecord").write_bytes(b"stale")
    (out / "_tmp").mkdir()
    manifest = _build(out, synthetic_tfrecords / "*.tfrecord", "--overwrite", "--layout", "plain")
    assert not (out / "train").exists() and not (out / "_tmp").exists()
    assert manifest["written_clips"] == 2000 and set(_digests(out)) == set(manifest["splits"]["eval"]["files"]) | {
        manifest["rejected_file"]}


@pytest.mark.slow
def test_real_bal_train(tmp_path, audioset_dir):
    pattern = audioset_dir / "bal_train" / "*.tfrecord"
    out = tmp_path / "real"
    manifest = _build(out, pattern, "--holdout_fraction", "0.1")
    assert manifest["input_records"] == 22_160 and manifest["written_clips"] == 22_160 and manifest["rejected"] == 0
    clips = _direct(pattern)
    assert manifest["class_counts"] == clips["labels"].sum(axis=0).tolist()
    # the holdout is exactly the clips whose video id hashes below 0.1, recomputed here independently
    threshold = 0.1 * 2 ** 64
    held = np.array([int.from_bytes(hashlib.sha256(v).digest()[:8], "big") < threshold for v in clips["video_id"]])
    holdout = _plain(out, manifest, "holdout")
    assert sorted(holdout["video_id"]) == sorted(clips["video_id"][held]) and 0.08 < held.mean() < 0.12
    assert manifest["splits"]["holdout"]["class_counts"] == clips["labels"][held].sum(axis=0).tolist()
    assert manifest["splits"]["train"]["class_counts"] == clips["labels"][~held].sum(axis=0).tolist()
    # no held-out clip is in a training block (real embeddings are distinct per clip)
    in_blocks = {e.tobytes() for e in _blocks(out, manifest)["embedding"].reshape(-1, 10, 128)}
    assert in_blocks == {e.tobytes() for e in clips["embedding"][~held]}


# --- Reliability, round 2 (issue #14): the output directory. ---------------------------------------

def _small_input(directory, n=6):
    directory.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(directory / "clips.tfrecord")) as w:
        for i in range(n):
            w.write(_sequence_example(video_id=f"small{i:06d}".encode(), labels=(i % 3,)))
    return directory / "*.tfrecord"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.slow
def test_a_second_run_into_the_same_output_dir_refuses_while_the_first_holds_the_lock(tmp_path, synthetic_tfrecords,
                                                                                      capsys):
    out = tmp_path / "out"
    glob = str(synthetic_tfrecords / "*.tfrecord")
    first = subprocess.Popen([sys.executable, "-m", "beam_pipelines.build_shards", "--input", glob, "--output_dir",
                              str(out)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = out / build_shards.LOCK_FILE
    deadline = __import__("time").monotonic() + 120
    while not lock.exists() and first.poll() is None and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.02)
    assert lock.exists(), "the first run did not take the lock"
    for extra in ([], ["--overwrite"]):  # --overwrite does not break a live lock either
        assert build_shards.main(["--input", glob, "--output_dir", str(out), *extra]) == 2
        assert "is locked by another build_shards run" in _error_line(capsys)
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["written_clips"] == 2000 and not lock.exists()  # the first run's output, whole; lock released


@pytest.mark.slow
def test_a_stale_lock_of_a_killed_run_is_reported_and_taken_over_only_with_overwrite(tmp_path, capsys):
    import socket

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    out = tmp_path / "out"
    out.mkdir()
    (out / build_shards.LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                          "started": "2026-01-01T00:00:00"}))
    glob = _small_input(tmp_path / "in")
    assert build_shards.main(["--input", str(glob), "--output_dir", str(out)]) == 2
    line = _error_line(capsys)
    assert "stale lock" in line and f"pid {dead.pid}" in line and "--overwrite" in line
    assert build_shards.main(["--input", str(glob), "--output_dir", str(out), "--overwrite"]) == 0
    assert "taking over the stale lock" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text())["written_clips"] == 6
    assert not (out / build_shards.LOCK_FILE).exists()


@pytest.mark.parametrize("pattern", ["d/*", "d/o*", "d/ou?", "d/[o]ut", "d/*/*/*", "d/*,d/*.tfrecord"])
def test_an_input_glob_that_matches_the_output_dir_is_refused_before_anything_is_deleted(tmp_path, capsys, pattern):
    data = tmp_path / "d"
    _small_input(data)
    out = data / "out"
    (out / "train").mkdir(parents=True)  # an earlier output of this job
    (out / "train" / "class-000-00000-of-00001.tfrecord").write_bytes(b"earlier")
    (out / "manifest.json").write_text("{}")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    glob = ",".join(str(tmp_path / p) for p in pattern.split(","))
    assert build_shards.main(["--input", glob, "--output_dir", str(out), "--overwrite"]) == 2
    assert "matches the output directory" in _error_line(capsys)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


@pytest.mark.slow
@pytest.mark.parametrize("name", ["runs[v2]", "runs*", "r?ns", "runs[!x]"])
def test_an_output_dir_with_glob_characters_is_a_literal_path(tmp_path, capsys, name):
    glob = _small_input(tmp_path / "in")
    out = tmp_path / name
    (out / "train").mkdir(parents=True)  # the stale output of an earlier run
    (out / "train" / "class-999-00000-of-00001.tfrecord").write_bytes(b"stale")
    (out / "manifest.json").write_text("{}")
    assert build_shards.main(["--input", str(glob), "--output_dir", str(out)]) == 2
    assert "is not empty (2 files" in _error_line(capsys)
    manifest = build_shards.run(["--input", str(glob), "--output_dir", str(out), "--overwrite"])
    assert not (out / "train" / "class-999-00000-of-00001.tfrecord").exists()
    assert sorted(p.relative_to(out).as_posix() for p in (out / "train").iterdir()) == manifest["splits"]["train"]["files"]


@pytest.mark.parametrize("problem", ["parent_is_a_file", "permission_denied"])
def test_an_output_dir_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch, problem):
    glob = _small_input(tmp_path / "in")
    (tmp_path / "file").write_bytes(b"")
    out = tmp_path / "file" / "out"
    if problem == "permission_denied":  # chmod does not stop root: simulate what a read-only directory does
        out = tmp_path / "readonly" / "out"

        def makedirs(path, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(build_shards.os, "makedirs", makedirs)
    assert build_shards.main(["--input", str(glob), "--output_dir", str(out)]) == 2
    line = _error_line(capsys)
    assert f"cannot write to --output_dir {out}" in line


def test_max_labels_is_a_positive_flag(capsys):
    with pytest.raises(SystemExit):
        build_shards.parse_args(["--input", "x", "--output_dir", "y", "--max_labels", "0"])
    assert "--max_labels must be positive" in capsys.readouterr().err
    config, _ = build_shards.parse_args(["--input", "x", "--output_dir", "y"])
    assert config.max_labels == schema.MAX_LABELS == 32


@pytest.mark.slow
def test_a_full_disk_while_the_manifest_is_written_leaves_no_manifest(tmp_path, monkeypatch):
    import errno

    from tfdata import datasets, fileio

    real = fileio._write_file

    def write(path, data):
        if "manifest.json" in path:
            real(path, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(path, data)

    monkeypatch.setattr(fileio, "_write_file", write)
    out = tmp_path / "out"
    with pytest.raises(Exception, match="No space left on device"):
        build_shards.run(["--input", str(_small_input(tmp_path / "in")), "--output_dir", str(out)])
    assert not [p for p in out.rglob("*manifest*")]  # neither a truncated manifest nor its temporary
    with pytest.raises(datasets.ShardsError, match="no manifest.json"):
        datasets.read_manifest(str(out))
    assert not (out / build_shards.LOCK_FILE).exists()  # a failed run releases its lock


@pytest.mark.slow
def test_max_labels_lifts_or_tightens_the_label_limit_in_the_job(tmp_path):
    data = _small_input(tmp_path / "in", n=4)
    with tf.io.TFRecordWriter(str(tmp_path / "in" / "many.tfrecord")) as w:
        w.write(_sequence_example(video_id=b"labels33000", labels=range(33)))  # 33 distinct: over the default
        w.write(_sequence_example(video_id=b"labels05000", labels=[1, 2, 3, 4, 5] * 20))  # 5 distinct
    lifted = _build(tmp_path / "lifted", data, "--max_labels", "40")
    assert lifted["written_clips"] == 6 and lifted["rejected"] == 0
    tightened = _build(tmp_path / "tight", data, "--max_labels", "4")
    assert tightened["written_clips"] == 4 and tightened["rejected_reasons"]["too_many_labels"] == 2


def test_the_shard_job_takes_only_the_schema_from_tfdata():
    """The Beam stages depend on tfdata.schema (the wire format) alone, and on nothing in models/."""
    import ast

    for path in sorted((REPO_ROOT / "beam_pipelines").glob("*.py")):
        if path.name in ("embed_audio.py", "benchmark.py"):  # the audio front end; a benchmark
            continue
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
        ours = {name for name in imported if name.split(".")[0] in ("tfdata", "models")}
        assert ours <= {"tfdata.schema"}, f"{path.name} imports {sorted(ours - {'tfdata.schema'})}"

"""The Beam job end to end: shards, accounting, rejections, determinism, HDF5 input, real bal_train."""

import hashlib
import json

import numpy as np
import pytest
import tensorflow as tf

from beam_pipelines import build_shards, transforms
from tests.test_readers import _sequence_example
from tfdata import readers, schema, synthetic


def _build(tmp_path, input_glob, name="out", *extra):
    out = tmp_path / name
    manifest = build_shards.run(["--input", str(input_glob), "--output_dir", str(out), *extra])
    return out, manifest


def _plain(out, split):
    files = [str(out / f) for f in json.loads((out / "manifest.json").read_text())["splits"][split]["files"]]
    batches = list(readers.read_tfrecords(files, batch_size=512).as_numpy_iterator())
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def _blocks(out, manifest):
    split = manifest["splits"]["train"]
    files = [str(out / f) for f in split["files"]]
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(files)]
    return {k: v.numpy() for k, v in schema.decode_blocks(tf.constant(serialized), split["block_size"]).items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory, synthetic_tfrecords):
    tmp = tmp_path_factory.mktemp("built")
    return _build(tmp, synthetic_tfrecords / "*.tfrecord", "out", "--holdout_fraction", "0.2", "--block_size", "16")


def test_accounting_and_class_counts(built, synthetic_tfrecords):
    out, manifest = built
    direct = np.concatenate([b["labels"] for b in readers.read_tfrecords(
        str(synthetic_tfrecords / "*.tfrecord")).as_numpy_iterator()]).sum(axis=0)
    assert manifest["input_records"] == manifest["written_clips"] + manifest["rejected"] == 2000
    assert manifest["rejected"] == 0 and set(manifest["rejected_reasons"]) == set(schema.REJECT_REASONS)
    assert manifest["class_counts"] == direct.tolist()
    train, holdout = manifest["splits"]["train"], manifest["splits"]["holdout"]
    assert train["clips"] + holdout["clips"] == 2000 and 300 < holdout["clips"] < 500
    assert (np.array(train["class_counts"]) + holdout["class_counts"]).tolist() == direct.tolist()
    assert manifest["complete"] is True and manifest["schema_version"] == schema.SHARD_SCHEMA_VERSION


def test_holdout_is_plain_sorted_and_disjoint_from_train(built):
    out, manifest = built
    holdout = _plain(out, "holdout")
    assert len(holdout["video_id"]) == manifest["splits"]["holdout"]["clips"]
    assert len(set(holdout["video_id"])) == len(holdout["video_id"])
    assert all(transforms.hash_fraction(v) < 0.2 for v in holdout["video_id"])
    for f in manifest["splits"]["holdout"]["files"]:  # each file sorted by video id
        ids = [r["video_id"] for r in readers.read_tfrecords(str(out / f)).unbatch().as_numpy_iterator()]
        assert ids == sorted(ids)
    blocks = _blocks(out, manifest)
    held_out_labels = holdout["labels"].sum(axis=0)
    # every training block clip comes from the training side: its clip count per class matches
    seen = {}
    for c, emb in zip(blocks["class_index"], blocks["embedding"]):
        seen.setdefault(int(c), set()).update(e.tobytes() for e in emb)
    counts = manifest["splits"]["train"]["class_counts"]
    assert all(len(seen.get(c, ())) == counts[c] for c in range(schema.NUM_CLASSES))
    assert held_out_labels.sum() > 0


def test_blocks_hold_their_class_and_rare_classes_repeat(built):
    out, manifest = built
    blocks = _blocks(out, manifest)
    k = manifest["splits"]["train"]["block_size"]
    assert blocks["embedding"].shape[1:] == (k, schema.NUM_FRAMES, schema.EMBEDDING_DIM)
    assert all(blocks["labels"][b, :, c].all() for b, c in enumerate(blocks["class_index"]))
    per_class = np.bincount(blocks["class_index"], minlength=schema.NUM_CLASSES)
    counts = np.array(manifest["splits"]["train"]["class_counts"])
    assert (per_class[counts > 0] >= 8).all()  # --min_blocks_per_class default
    assert per_class.sum() == manifest["splits"]["train"]["blocks"]
    for c, files in enumerate(manifest["splits"]["train"]["class_files"]):
        assert all(f.startswith(f"train/class-{c:03d}-") for f in files)


def test_same_input_same_bytes(tmp_path, synthetic_tfrecords):
    def digests(out):
        return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*.tfrecord"))}

    a, _ = _build(tmp_path, synthetic_tfrecords / "*.tfrecord", "a", "--holdout_fraction", "0.2", "--block_size", "16")
    b, _ = _build(tmp_path, synthetic_tfrecords / "*.tfrecord", "b", "--holdout_fraction", "0.2", "--block_size", "16")
    assert digests(a) == digests(b) and len(digests(a)) > 400


def test_plain_layout_writes_every_clip_once(tmp_path, synthetic_tfrecords):
    out, manifest = _build(tmp_path, synthetic_tfrecords / "*.tfrecord", "plain", "--layout", "plain")
    assert set(manifest["splits"]) == {"eval"}
    clips = _plain(out, "eval")
    assert len(clips["video_id"]) == len(set(clips["video_id"])) == 2000


def _write(path, records):
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in records:
            w.write(r)


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
    _write(tmp_path / "a.tfrecord", good[:3] + list(bad.values()) + [good[0]])  # a duplicate in the same file
    _write(tmp_path / "b.tfrecord", good[3:] + [negative, good[1]])  # and one across files
    out, manifest = _build(tmp_path, tmp_path / "*.tfrecord")
    expected = {reason: 1 for reason in bad} | {"label_out_of_range": 2, "duplicate": 2}
    assert {r: n for r, n in manifest["rejected_reasons"].items() if n} == expected
    assert manifest["input_records"] == 16 == manifest["written_clips"] + manifest["rejected"]
    assert manifest["written_clips"] == 6
    rejected = [json.loads(line) for f in sorted((out / "rejected").glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == sorted(r for r, n in expected.items() for _ in range(n))
    duplicates = sorted((r["file"].rsplit("/", 1)[-1], r["position"]) for r in rejected if r["reason"] == "duplicate")
    assert duplicates == [("a.tfrecord", 10), ("b.tfrecord", 4)]  # the later copies; the first one is kept


def test_corrupt_and_truncated_files_keep_their_readable_records(tmp_path):
    def file_bytes(prefix):
        path = tmp_path / f"{prefix}.tmp"
        records = [_sequence_example(video_id=f"{prefix}{i:07d}".encode()) for i in range(4)]
        _write(path, records)
        data = path.read_bytes()
        path.unlink()
        return data, len(records[0]) + 16

    crc, size = file_bytes("crcc")
    corrupt = bytearray(crc)
    corrupt[size + 12 + 50] ^= 0xFF  # a byte inside the second record's data: its CRC fails
    (tmp_path / "crc.tfrecord").write_bytes(bytes(corrupt))
    cut, size = file_bytes("cutc")
    (tmp_path / "cut.tfrecord").write_bytes(cut[: 2 * size + 30])  # cut inside the third record
    (tmp_path / "text.tfrecord").write_bytes(b"this is not a TFRecord file\n" * 3)
    (tmp_path / "empty.tfrecord").write_bytes(b"")
    out, manifest = _build(tmp_path, tmp_path / "*.tfrecord")
    # crc: 3 readable + 1 rejected; cut: 2 readable + the unreadable rest; text: unreadable from the start
    assert manifest["written_clips"] == 5
    assert manifest["rejected_reasons"]["unreadable_data"] == 3
    assert manifest["input_records"] == manifest["written_clips"] + manifest["rejected"] == 8
    rejected = [json.loads(line) for f in (out / "rejected").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert sorted((r["file"].rsplit("/", 1)[-1], r["position"]) for r in rejected) == [
        ("crc.tfrecord", 1), ("cut.tfrecord", 2), ("text.tfrecord", 0)]


def test_hdf5_input(tmp_path):
    config = synthetic.SyntheticConfig(num_clips=500, seed=4)
    synthetic.write_hdf5(config, str(tmp_path / "clips.h5"))
    synthetic.write_tfrecords(config, str(tmp_path / "tfrecords"))
    out_h5, from_h5 = _build(tmp_path, tmp_path / "clips.h5", "h5", "--layout", "plain", "--records_per_batch", "128")
    out_tf, from_tf = _build(tmp_path, tmp_path / "tfrecords" / "*.tfrecord", "tf", "--layout", "plain")
    assert from_h5["written_clips"] == 500 and from_h5["class_counts"] == from_tf["class_counts"]
    a, b = _plain(out_h5, "eval"), _plain(out_tf, "eval")
    for key in ("video_id", "embedding", "num_frames", "labels", "start_time_seconds"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_hdf5_with_disagreeing_shapes_stops_before_writing(tmp_path, capsys):
    import h5py

    with h5py.File(tmp_path / "bad.h5", "w") as h5:
        h5["x"] = np.zeros([4, 10, 128], np.uint8)
        h5["y"] = np.zeros([4, 527], np.float32)
        h5["video_id_list"] = np.array([b"a"] * 4)
    assert build_shards.main(["--input", str(tmp_path / "bad.h5"), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bad.h5: y is float32" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["no_match", "not_empty"])
def test_user_errors_are_one_line(tmp_path, synthetic_tfrecords, capsys, case):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.tfrecord").write_bytes(b"")
    glob = str(tmp_path / "none" / "*.tfrecord") if case == "no_match" else str(synthetic_tfrecords / "*.tfrecord")
    assert build_shards.main(["--input", glob, "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert ("no files match" if case == "no_match" else "already holds 1 files") in err and err.count("\n") == 1
    assert (tmp_path / "out" / "old.tfrecord").exists()


def test_real_bal_train(tmp_path, audioset_dir):
    out, manifest = _build(tmp_path, audioset_dir / "bal_train" / "*.tfrecord", "real", "--holdout_fraction", "0.1")
    assert manifest["input_records"] == 22_160 and manifest["written_clips"] == 22_160 and manifest["rejected"] == 0
    direct = np.zeros(schema.NUM_CLASSES, np.int64)
    for batch in readers.read_tfrecords(str(audioset_dir / "bal_train" / "*.tfrecord")).as_numpy_iterator():
        direct += batch["labels"].sum(axis=0, dtype=np.int64)
    assert manifest["class_counts"] == direct.tolist()
    holdout = _plain(out, "holdout")
    assert len(holdout["video_id"]) == manifest["splits"]["holdout"]["clips"]
    assert 0.08 < len(holdout["video_id"]) / 22_160 < 0.12
    # stable: the split is a pure function of the video id, recomputed here independently
    expected = {v for b in readers.read_tfrecords(str(audioset_dir / "bal_train" / "*.tfrecord")).as_numpy_iterator()
                for v in b["video_id"] if int.from_bytes(hashlib.sha256(v).digest()[:8], "big") < 0.1 * 2 ** 64}
    assert set(holdout["video_id"]) == expected

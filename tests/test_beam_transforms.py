"""Each PTransform of the shard-building stages (beam_pipelines.read, validate, dedup, layout, write,
manifest) in a TestPipeline on beam.Create inputs, and the Beam-free functions they are built from."""

import hashlib
import io
import json
import struct

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as _TestPipeline  # not collected by pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines import clips, dedup, layout, manifest, read, shuffle, validate, write
from tests.test_readers import _sequence_example
from tfdata import schema, synthetic


def _write(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def _example(video_id: bytes, labels=(0,), start=0.0, frames=None):
    frames = [hashlib.sha256(video_id + bytes([i])).digest() * 4 for i in range(10)] if frames is None else frames
    return _sequence_example(video_id=video_id, labels=labels, start=start, frames=frames)


def _batch(records, file=0, positions=None, holdout=None):
    """A parsed clip batch of the given records, as Validate passes it on (with a holdout column)."""
    positions = np.arange(len(records)) if positions is None else np.asarray(positions)
    batch = read.parse_batch(records, np.full(len(records), file), positions)
    batch["holdout"] = np.zeros(len(records), bool) if holdout is None else np.asarray(holdout)
    return batch


def _valid(batch):
    """A parsed batch without its reason column, as Validate's `valid` output has it."""
    return {k: v for k, v in batch.items() if k != "reason"}


def _rows(batch, *columns):
    """Batch -> sorted list of tuples of plain Python values (what equal_to can compare)."""
    values = [batch[c].tolist() if batch[c].dtype != object else list(batch[c]) for c in columns]
    return sorted(zip(*values))


# --- Reading ----------------------------------------------------------------------------------------

def test_read_tfrecords_batches_records_across_files_with_their_positions(tmp_path):
    records = {name: [_example(f"{name}{i}".encode()) for i in range(n)] for name, n in (("a", 2), ("b", 0), ("c", 3))}
    files = []
    for name, recs in records.items():
        _write(tmp_path / f"{name}.tfrecord", recs)
        files.append(str(tmp_path / f"{name}.tfrecord"))
    expected = [(f, p, r) for f, name in enumerate(records) for p, r in enumerate(records[name])]
    with _TestPipeline() as p:
        out = p | read.ReadTFRecords(files, sizes=[1, 1, 1], batch_size=2, group_bytes=10)
        rows = out["batches"] | beam.FlatMap(lambda b: zip(b["file"].tolist(), b["position"].tolist(), b["records"]))
        assert_that(rows, equal_to(expected), label="AllRecords")
        sizes = out["batches"] | beam.Map(lambda b: len(b["records"]))
        assert_that(sizes, equal_to([2, 2, 1]), label="BatchesSpanFiles")  # one group: a0 a1 | c0 c1 | c2
        assert_that(out["unreadable"], equal_to([]), label="NothingUnreadable")


def _framed(records):
    """TFRecord framing of records, written here independently of TensorFlow's writer."""
    buffer = io.BytesIO()
    for r in records:
        length = struct.pack("<Q", len(r))
        crc = read.masked_crc32c
        buffer.write(length + struct.pack("<I", crc(length)) + r + struct.pack("<I", crc(r)))
    return buffer.getvalue()


def test_read_tfrecords_rejects_corrupt_records_and_unreadable_rests(tmp_path):
    records = [_example(f"vid{i}".encode()) for i in range(4)]
    data = bytearray(_framed(records))
    size = len(records[0]) + 16
    data[size + 12 + 40] ^= 0xFF  # inside the data of record 1: its CRC fails, records 2 and 3 are still read
    (tmp_path / "crc.tfrecord").write_bytes(bytes(data))
    (tmp_path / "cut.tfrecord").write_bytes(_framed(records)[:2 * size + 20])  # record 2 truncated
    (tmp_path / "text.tfrecord").write_bytes(b"plain text, not a TFRecord file\n")
    files = [str(tmp_path / n) for n in ("crc.tfrecord", "cut.tfrecord", "text.tfrecord")]
    with _TestPipeline() as p:
        out = p | read.ReadTFRecords(files, sizes=[1, 1, 1], batch_size=10)
        rows = out["batches"] | beam.FlatMap(lambda b: zip(b["file"].tolist(), b["position"].tolist()))
        assert_that(rows, equal_to([(0, 0), (0, 2), (0, 3), (1, 0), (1, 1)]), label="Readable")
        entries = out["unreadable"] | beam.Map(lambda e: (e["file"].rsplit("/", 1)[-1], e["position"], e["reason"]))
        assert_that(entries, equal_to([("crc.tfrecord", 1, "unreadable_data"), ("cut.tfrecord", 2, "unreadable_data"),
                                       ("text.tfrecord", 0, "unreadable_data")]), label="Unreadable")


def test_parse_records_gives_clip_batches_with_reasons():
    raw = {"file": np.array([3, 3, 4]), "position": np.array([7, 8, 0]),
           "records": [_example(b"one", labels=(1, 526)), b"garbage", _example(b"two", labels=(527,))]}
    with _TestPipeline() as p:
        batches = p | beam.Create([raw]) | read.ParseRecords()
        rows = batches | beam.FlatMap(lambda b: zip(
            b["file"].tolist(), b["position"].tolist(), list(b["video_id"]),
            [schema.REASON_CODES[r] for r in b["reason"]],
            [np.flatnonzero(labels).tolist() for labels in clips.unpack_labels(b["labels"])]))
        assert_that(rows, equal_to([(3, 7, b"one", "ok", [1, 526]), (3, 8, b"", "not_a_sequence_example", []),
                                    (4, 0, b"two", "label_out_of_range", [])]))


def test_read_hdf5_reads_row_ranges_and_validates_rows(tmp_path):
    import h5py

    clips = next(synthetic.generate(synthetic.SyntheticConfig(num_clips=10, seed=2)))
    synthetic.write_hdf5(synthetic.SyntheticConfig(num_clips=10, seed=2), str(tmp_path / "ours.h5"))
    x, y, ids = clips["embedding"].copy(), clips["labels"].astype(bool), clips["video_id"].copy()
    x[0] = 0  # no frames
    y[1] = False  # no labels
    ids[2] = b""  # no video id
    with h5py.File(tmp_path / "research.h5", "w") as h5:  # the research layout: no num_frames, no start times
        h5["x"], h5["y"], h5["video_id_list"] = x, y, ids
    files = [str(tmp_path / "ours.h5"), str(tmp_path / "research.h5")]
    expected = [(0, i, clips["video_id"][i], "ok", int(clips["num_frames"][i]), float(clips["start_time_seconds"][i]))
                for i in range(10)]
    expected += [(1, i, ids[i], {0: "no_frames", 1: "missing_labels", 2: "missing_video_id"}.get(i, "ok"),
                  0 if i == 0 else int(clips["num_frames"][i]), "nan") for i in range(10)]
    with _TestPipeline() as p:
        batches = p | read.ReadHdf5(files, rows_per_range=4)
        rows = batches | beam.FlatMap(lambda b: zip(
            b["file"].tolist(), b["position"].tolist(), list(b["video_id"]),
            [schema.REASON_CODES[r] for r in b["reason"]], b["num_frames"].tolist(),
            [s if s == s else "nan" for s in b["start_time_seconds"].tolist()]))
        assert_that(rows, equal_to(expected), label="Rows")
        sizes = batches | beam.Map(lambda b: len(b["uid"]))
        assert_that(sizes, equal_to([4, 4, 2, 4, 4, 2]), label="Ranges")


def test_hdf5_batch_zeroes_frames_past_num_frames_and_rejects_too_many():
    x = np.full([3, 10, 128], 7, np.uint8)
    y = np.zeros([3, 527], bool)
    y[:, 5] = True
    batch = read.hdf5_batch(x, y, np.array([b"a", b"b", b"c"]), np.array([3, 10, 11]), None, file=0, begin=5)
    assert [schema.REASON_CODES[r] for r in batch["reason"]] == ["ok", "ok", "too_many_frames"]
    assert batch["embedding"][0, :3].all() and not batch["embedding"][0, 3:].any()
    assert batch["position"].tolist() == [5, 6, 7] and np.isnan(batch["start_time_seconds"]).all()


# --- Validation, duplicates, accounting -------------------------------------------------------------

def test_validate_passes_valid_clips_with_their_side_and_rejects_the_rest():
    ids = [f"video{i:03d}".encode() for i in range(40)]
    records = [_example(v) for v in ids] + [_example(b"bad", labels=(-1,)), _example(b"", labels=(2,))]
    files = ["a.tfrecord"]
    with _TestPipeline() as p:
        batch = read.parse_batch(records, np.zeros(len(records)), np.arange(len(records)))
        out = p | beam.Create([batch]) | validate.Validate(files, holdout_fraction=0.5)
        valid = out["valid"] | beam.FlatMap(lambda b: zip(list(b["video_id"]), b["holdout"].tolist()))
        assert_that(valid, equal_to([(v, clips.in_holdout(v, 0.5)) for v in ids]), label="Valid")
        rejected = out["rejected"] | beam.FlatMap(lambda entries: [json.dumps(e, sort_keys=True) for e in entries])
        assert_that(rejected, equal_to([
            json.dumps({"file": "a.tfrecord", "position": 40, "video_id": "bad", "reason": "label_out_of_range"},
                       sort_keys=True),
            json.dumps({"file": "a.tfrecord", "position": 41, "reason": "missing_video_id"}, sort_keys=True)]),
            label="Rejected")
        stats = out["stats"] | beam.Map(lambda s: (s["input_records"], s["rejected_reasons"]))
        assert_that(stats, equal_to([(42, {"label_out_of_range": 1, "missing_video_id": 1})]), label="Stats")
    assert 10 < sum(clips.in_holdout(v, 0.5) for v in ids) < 30


def test_find_duplicates_keeps_the_first_copy_by_file_and_position():
    a = _batch([_example(b"x", labels=(1,), start=0.0), _example(b"y", labels=(2,)),
                _example(b"x", labels=(3,), start=0.0), _example(b"x", labels=(4,), start=10.0)], file=0)
    # y in file 1 repeats y in file 0 with the same labels: a duplicate; x@0 in file 0 row 2 has other
    # labels than x@0 row 0: a conflicting duplicate (the first copy is kept, the other counted apart)
    b = _batch([_example(b"y", labels=(2,)), _example(b"z", labels=(6,))], file=1, holdout=[False, True])
    files = ["f0", "f1"]
    with _TestPipeline() as p:
        out = p | beam.Create([_valid(b), _valid(a)]) | dedup.FindDuplicates(files, num_buckets=3)
        keys = out["duplicates"] | beam.FlatMap(lambda k: k.tolist())
        assert_that(keys, equal_to(clips.record_keys(np.array([0, 1]), np.array([2, 0])).tolist()), label="Keys")
        entries = out["rejected"] | beam.FlatMap(
            lambda es: [(e["file"], e["position"], e["video_id"], e["reason"]) for e in es])
        assert_that(entries, equal_to([("f0", 2, "x", "conflicting_duplicate"), ("f1", 0, "y", "duplicate")]),
                    label="Entries")
        total = out["stats"] | manifest.Summarize() | beam.Map(lambda s: (
            s["main_clips"], s["holdout_clips"], np.flatnonzero(s["main"]).tolist(),
            np.flatnonzero(s["holdout"]).tolist(), s["rejected_reasons"]))
        # kept: x@0 (class 1), y (class 2), x@10 (class 4) on the main side, z (class 6) held out
        assert_that(total, equal_to([(3, 1, [1, 2, 4], [6], {"duplicate": 1, "conflicting_duplicate": 1})]),
                    label="Stats")


def test_find_duplicates_compares_clips_exactly_when_hashes_collide():
    # rows 0-2 share a uid although row 1 is another clip (a forged 64-bit collision)
    part = {"uid": np.array([5, 5, 5, 9], np.uint64), "file": np.array([1, 0, 0, 0]),
            "position": np.array([0, 1, 0, 2]), "video_id": np.array([b"a", b"b", b"a", b"c"], object),
            "start_time_seconds": np.array([0, 0, 0, 0], np.float32)}
    assert dedup.find_duplicates(part).tolist() == [True, False, False, False]  # a@(1, 0) repeats a@(0, 0)
    part["start_time_seconds"] = np.array([np.nan, 0, np.nan, 0], np.float32)  # NaN (no start time) equals NaN
    assert dedup.find_duplicates(part).tolist() == [True, False, False, False]
    part["start_time_seconds"] = np.array([-0.0, 0, 0.0, 0], np.float32)  # -0.0 equals 0.0
    assert dedup.find_duplicates(part).tolist() == [True, False, False, False]
    part["start_time_seconds"] = np.array([10, 0, 0, 0], np.float32)  # another start: another clip
    assert dedup.find_duplicates(part).tolist() == [False, False, False, False]


def test_summarize_adds_up_stats():
    one, two = clips.empty_stats(), clips.empty_stats()
    one |= {"input_records": 3, "rejected_reasons": {"no_frames": 1}, "main_clips": 2}
    one["main"] = np.eye(schema.NUM_CLASSES, dtype=np.int64)[4] * 2
    two |= {"input_records": 5, "rejected_reasons": {"no_frames": 2, "duplicate": 1}, "holdout_clips": 2}
    two["holdout"] = np.eye(schema.NUM_CLASSES, dtype=np.int64)[7] * 2
    with _TestPipeline() as p:
        total = p | beam.Create([one, two, clips.empty_stats()]) | manifest.Summarize() | beam.Map(lambda s: (
            s["input_records"], s["rejected_reasons"], s["main_clips"], s["holdout_clips"], int(s["main"][4]),
            int(s["holdout"][7]), int(s["main"].sum() + s["holdout"].sum())))
        assert_that(total, equal_to([(8, {"no_frames": 3, "duplicate": 1}, 2, 2, 2, 2, 4)]))


@pytest.mark.parametrize("total_bytes", [1, 1 << 30])  # flush after every batch, or once at the end
@pytest.mark.parametrize("spill", [False, True])
def test_buffered_parts_gather_every_routed_row_under_its_key(tmp_path, total_bytes, spill):
    batches = [{"x": np.arange(i * 10, i * 10 + 10)} for i in range(4)]

    def route(batch):  # rows not divisible by 5, to key (x % 10) % 3, and all of them also to key 7
        rows = np.flatnonzero(batch["x"] % 5 != 0)
        return batch, np.r_[rows, rows], np.r_[batch["x"][rows] % 10 % 3, np.full(len(rows), 7)]

    xs = [x for x in range(40) if x % 5]
    expected = [(k, [x for x in xs if x % 10 % 3 == k]) for k in range(3)] + [(7, xs)]
    spill_dir = str(tmp_path / "spill") if spill else None
    with _TestPipeline() as p:
        grouped = (p | beam.Create(batches)
                   | beam.ParDo(shuffle.BufferedParts(route, spill_dir, total_bytes))
                   .with_output_types(shuffle.KeyedPart)
                   | beam.GroupByKey()
                   | beam.Map(lambda kv: (kv[0], sorted(shuffle.load_parts(kv[1])["x"].tolist()))))
        assert_that(grouped, equal_to(expected))
    assert (tmp_path / "spill").exists() == spill


# --- Writing ----------------------------------------------------------------------------------------

def _decode(path, block_size):
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    return {k: v.numpy() for k, v in schema.decode_blocks(tf.constant(serialized), block_size).items()}


@pytest.mark.parametrize("spill", [True, False])
def test_write_balanced_shards_writes_blocks_of_each_class(tmp_path, spill):
    ids = [f"clip{i:02d}".encode() for i in range(11)]
    labels = [(3,)] * 9 + [(3, 8), (8,)]  # class 3: 10 clips, class 8: 2 clips
    batch = _batch([_example(v, labels=l) for v, l in zip(ids, labels)])
    batch["holdout"][0] = True  # held out: not in train
    duplicate = clips.record_keys(np.array([0]), np.array([1]))  # clip01 is a later copy of something
    out = tmp_path / "out"
    with _TestPipeline() as p:
        first, second = clips.take(batch, np.arange(5)), clips.take(batch, np.arange(5, 11))
        valid = p | "Batches" >> beam.Create([_valid(first), _valid(second)])
        dups = p | "Duplicates" >> beam.Create([duplicate])
        written = (valid, dups) | layout.WriteBalancedShards(
            str(out), seed=1, block_size=4, min_blocks=2, blocks_per_file=1,
            spill_dir=str(tmp_path / "spill") if spill else None)
        assert_that(written | beam.Map(lambda e: (e["class"], e["file"], e["blocks"])), equal_to([
            (3, "train/class-003-00000-of-00002.tfrecord", 1), (3, "train/class-003-00001-of-00002.tfrecord", 1),
            (8, "train/class-008-00000-of-00001.tfrecord", 2)]))
    class3 = [_decode(out / f"train/class-003-0000{s}-of-00002.tfrecord", 4) for s in range(2)]
    embeddings = np.concatenate([d["embedding"] for d in class3]).reshape(-1, 10, 128)  # 8 clips
    train3 = [i for i in range(2, 10)]  # class 3 minus the held-out clip00 and the duplicate clip01
    expected = {batch["embedding"][i].tobytes() for i in train3}
    assert {e.tobytes() for e in embeddings} == expected and len(embeddings) == 8  # each exactly once
    class8 = _decode(out / "train/class-008-00000-of-00001.tfrecord", 4)
    assert (class8["class_index"] == 8).all() and class8["labels"][..., 8].all()
    counts = {}
    for e in class8["embedding"].reshape(-1, 10, 128):
        counts[e.tobytes()] = counts.get(e.tobytes(), 0) + 1
    assert sorted(counts.values()) == [4, 4]  # 2 clips cycled to fill 2 blocks of 4
    assert not (tmp_path / "spill").exists() or list((tmp_path / "spill").iterdir())  # spilled parts, if any


def test_write_plain_shards_writes_each_clip_once_sorted_by_video(tmp_path):
    ids = [f"v{i:03d}".encode() for i in range(30)]
    records = [_example(v, start=float(i % 3)) for i, v in enumerate(ids)]
    batch = _batch(records, holdout=[i % 2 == 0 for i in range(30)])
    hdf5_like = _valid(_batch([_example(b"h5clip", labels=(9, 10))], file=1, holdout=[True]))
    del hdf5_like["record"]  # HDF5 input carries no serialized record: canonical ones are written
    duplicate = clips.record_keys(np.array([0]), np.array([4]))
    out = tmp_path / "out"
    with _TestPipeline() as p:
        valid = p | "Batches" >> beam.Create([_valid(batch), hdf5_like])
        dups = p | "Duplicates" >> beam.Create([duplicate])
        names = (valid, dups) | write.WritePlainShards(str(out), "holdout", num_shards=3, holdout=True)
        assert_that(names | beam.Map(lambda n: n.rsplit("-of-", 1)[-1]), equal_to(["00003.tfrecord"] * 3))
    written = {}
    for path in sorted((out / "holdout").iterdir()):
        ids_in_file = [readers_id(r) for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]
        assert ids_in_file == sorted(ids_in_file)
        for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            written[readers_id(r)] = r
    expected = {ids[i]: records[i] for i in range(0, 30, 2) if i != 4}
    assert {k: v for k, v in written.items() if k != b"h5clip"} == expected  # the original bytes, each once
    assert b"h5clip" in written


def readers_id(record: bytes) -> bytes:
    example = tf.train.SequenceExample.FromString(record)
    return example.context.feature[schema.VIDEO_ID_KEY].bytes_list.value[0]


def test_write_rejected_sorts_entries(tmp_path):
    lists = [[clips.rejection("b", 1, b"v", "no_frames")], [clips.rejection("a", 9, None, "unreadable_data", "cut")],
             [clips.rejection("a", 10, b"w", "duplicate")]]
    with _TestPipeline() as p:
        name = p | beam.Create(lists) | write.WriteRejected(str(tmp_path))
        assert_that(name, equal_to([write.REJECTED_FILE]))
    lines = [json.loads(line) for line in (tmp_path / write.REJECTED_FILE).read_text().splitlines()]
    assert [(e["file"], e["position"]) for e in lines] == [("a", 9), ("a", 10), ("b", 1)]
    assert lines[0] == {"file": "a", "position": 9, "reason": "unreadable_data", "detail": "cut"}


def test_write_manifest_runs_last_and_lists_everything(tmp_path):
    stats = clips.empty_stats() | {"input_records": 3, "rejected_reasons": {"duplicate": 1}, "main_clips": 2}
    stats["main"] = np.eye(schema.NUM_CLASSES, dtype=np.int64)[5] * 2
    (tmp_path / "_tmp").mkdir()
    with _TestPipeline() as p:
        s = p | "Stats" >> beam.Create([stats])
        main = p | "Main" >> beam.Create([{"class": 5, "file": "train/class-005-00000-of-00001.tfrecord", "blocks": 8}])
        holdout = p | "Holdout" >> beam.Create([])
        rejected = p | "Rejected" >> beam.Create(["rejected/rejected.jsonl"])
        _ = (s, main, holdout, rejected) | manifest.WriteManifest(
            str(tmp_path), {"input": "x"}, "train", "balanced", 64, False, spill_dir=str(tmp_path / "_tmp"))
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert written["complete"] is True
    assert written["input_records"] == 3 == written["written_clips"] + written["rejected"]
    assert list(written["rejected_reasons"]) == list(schema.REJECT_REASONS)
    train = written["splits"]["train"]
    assert train["class_files"][5] == ["train/class-005-00000-of-00001.tfrecord"] and train["blocks"] == 8
    assert train["class_counts"][5] == 2 and written["class_counts"][5] == 2 and set(written["splits"]) == {"train"}
    assert not (tmp_path / "_tmp").exists()


def test_manifest_refuses_counts_that_do_not_add_up():
    stats = clips.empty_stats() | {"input_records": 4, "main_clips": 2}
    with pytest.raises(RuntimeError, match="accounting"):
        manifest.build_manifest(stats, [], [], "rejected/rejected.jsonl", {}, "train", "balanced", 64, False)


# --- Beam-free functions --------------------------------------------------------------------------

def test_class_sequence_cycles_through_all_clips_in_fresh_orders():
    n = 7
    part = {"uid": np.arange(100, 100 + n, dtype=np.uint64), "file": np.zeros(n, int), "position": np.arange(n)}
    sequence = layout.class_sequence(part, class_index=3, seed=0, length=24)
    cycles = [sequence[i:i + n] for i in range(0, 21, n)]
    assert all(sorted(c.tolist()) == list(range(n)) for c in cycles)  # every pass holds every clip once
    assert len({tuple(c) for c in cycles}) == 3  # each pass in a fresh order
    assert np.array_equal(sequence, layout.class_sequence(part, 3, 0, 24))  # deterministic
    assert not np.array_equal(sequence, layout.class_sequence(part, 3, 1, 24))  # the seed matters
    assert not np.array_equal(sequence, layout.class_sequence(part, 4, 0, 24))  # and the class


def test_holdout_is_an_exact_function_of_the_video_id():
    ids = [f"id{i}".encode() for i in range(2000)]
    held = [v for v in ids if clips.in_holdout(v, 0.1)]
    assert 150 < len(held) < 250
    assert all(clips.video_hash(v) < 0.1 * 2 ** 64 for v in held)  # Python compares int and float exactly
    assert all(clips.video_hash(v) >= 0.1 * 2 ** 64 for v in ids if v not in held)
    uid, vhash = clips.hashes(np.array(ids, object), np.zeros(len(ids), np.float32))
    assert vhash.tolist() == [clips.video_hash(v) for v in ids]


def test_iter_tfrecord_frames_reads_small_chunks():
    records = [bytes([i]) * (i * 50) for i in range(6)]
    stream = io.BytesIO(_framed(records))
    assert [(p, r, e) for p, r, e in read.iter_tfrecord_frames(stream, chunk_size=7)] == [
        (i, r, None) for i, r in enumerate(records)]


def test_hdf5_batch_checks_times_video_ids_and_label_counts_like_the_reader():
    x = np.full([6, 10, 128], 7, np.uint8)
    y = np.zeros([6, 527], bool)
    y[:, 5] = True
    y[4, :33] = True  # 33 distinct labels
    ids = np.array([b"a", b"caf\xe9", b"c", b"d", b"e", b"f"])
    starts = np.array([0.0, 0.0, np.nan, -1.0, 0.0, np.inf], np.float32)
    batch = read.hdf5_batch(x, y, ids, None, starts, file=0, begin=0)
    assert [schema.REASON_CODES[r] for r in batch["reason"]] == [
        "ok", "bad_video_id", "bad_time", "bad_time", "too_many_labels", "bad_time"]
    # without a start_time_seconds column the start is unknown (NaN), not bad
    batch = read.hdf5_batch(x[:1], y[:1], ids[:1], None, None, file=0, begin=0)
    assert batch["reason"].tolist() == [0] and np.isnan(batch["start_time_seconds"]).all()


def test_limit_labels_applies_max_labels_in_both_directions():
    labels = np.zeros([3, 527], bool)
    labels[0, :3] = True
    labels[1, :10] = True
    labels[2, :40] = True
    code = schema.REASON_CODES.index("too_many_labels")
    batch = {"labels": np.packbits(labels, axis=1), "reason": np.array([0, 0, code], np.int32)}
    assert validate.limit_labels(batch, 32) is batch["reason"]
    assert validate.limit_labels(batch, 5).tolist() == [0, code, code]
    assert validate.limit_labels(batch, 64).tolist() == [0, 0, 0]
    assert batch["reason"].tolist() == [0, 0, code]  # the batch itself is not changed


def test_read_hdf5_ignores_groups_beside_the_datasets(tmp_path):
    import h5py

    synthetic.write_hdf5(synthetic.SyntheticConfig(num_clips=6, seed=2), str(tmp_path / "f.h5"))
    with h5py.File(tmp_path / "f.h5", "a") as h5:
        h5.create_group("extra").create_dataset("inside", data=np.zeros(3))
        del h5["num_frames"]
        h5.create_group("num_frames")  # a group where an optional dataset would be
    with _TestPipeline() as p:
        rows = p | read.ReadHdf5([str(tmp_path / "f.h5")], rows_per_range=4) | beam.FlatMap(
            lambda b: b["reason"].tolist())
        assert_that(rows, equal_to([0] * 6))

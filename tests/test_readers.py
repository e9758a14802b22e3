import csv
import re

import numpy as np
import pytest
import tensorflow as tf

from tfdata import readers, schema, synthetic


def _concat(dataset):
    batches = list(dataset.as_numpy_iterator())
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def _sequence_example(video_id=b"abcdefghijk", frames=None, labels=(0,), start=10.0, drop=()):
    frames = [bytes(range(128))] * 10 if frames is None else frames
    example = tf.train.SequenceExample()
    context = example.context.feature
    if "video_id" not in drop:
        context[schema.VIDEO_ID_KEY].bytes_list.value.append(video_id)
    context[schema.START_TIME_KEY].float_list.value.append(start)
    context[schema.END_TIME_KEY].float_list.value.append(start + 10)
    if "labels" not in drop:
        context[schema.LABELS_KEY].int64_list.value.extend(labels)
    if "audio_embedding" not in drop:
        feature_list = example.feature_lists.feature_list[schema.EMBEDDING_KEY]
        for frame in frames:
            feature_list.feature.add().bytes_list.value.append(frame)
    return example.SerializeToString()


def test_real_bal_train_counts(audioset_dir):
    clips = _concat(readers.read_tfrecords(str(audioset_dir / "bal_train" / "*.tfrecord")))
    assert len(clips["video_id"]) == 22_160
    assert (clips["reason"] == 0).all()
    assert (clips["num_frames"] < 10).sum() == 378
    assert clips["num_frames"].min() >= 1
    assert clips["labels"].sum() == 52_882
    assert (clips["labels"].sum(axis=0) > 0).all()
    short = clips["num_frames"] < 10
    assert not clips["embedding"][short][:, -1].any()  # short clips are zero-padded


def test_real_labels_match_the_segments_csv(audioset_dir):
    clips = _concat(readers.read_tfrecords(str(audioset_dir / "bal_train" / "*.tfrecord")))
    index_of_mid = schema.read_class_labels(str(audioset_dir / "class_labels_indices.csv")).index_of_mid()
    with open(audioset_dir / "balanced_train_segments.csv") as f:
        rows = [r for r in csv.reader(f, skipinitialspace=True) if not r[0].startswith("#")]
    expected = {(r[0], np.float32(r[1])): {index_of_mid[m] for m in r[3].split(",")} for r in rows}
    assert len(expected) == 22_160
    position = {(v.decode(), s): i for i, (v, s) in enumerate(zip(clips["video_id"], clips["start_time_seconds"]))}
    for key in [rows[0], rows[1], rows[777], rows[12345], rows[-1]]:
        clip = (key[0], np.float32(key[1]))
        assert set(np.flatnonzero(clips["labels"][position[clip]])) == expected[clip]
    # and all of them, since it is cheap
    mismatches = [k for k, ids in expected.items() if set(np.flatnonzero(clips["labels"][position[k]])) != ids]
    assert mismatches == []


def test_parse_pads_short_clips_and_keeps_only_ten_frames():
    frames = [bytes([i]) * 128 for i in range(1, 13)]
    short, long = _sequence_example(frames=frames[:3]), _sequence_example(frames=frames)
    clips = readers.parse_records([short, long])
    assert clips["num_frames"].tolist() == [3, 10]
    assert clips["embedding"][0, :3, 0].tolist() == [1, 2, 3] and not clips["embedding"][0, 3:].any()
    assert clips["embedding"][1, :, 0].tolist() == list(range(1, 11))
    # more than 10 frames: the first 10 are kept and the record is marked as not an AudioSet clip
    assert [schema.REASON_CODES[r] for r in clips["reason"]] == ["ok", "too_many_frames"]


@pytest.mark.parametrize("record, reason", [
    (_sequence_example(), "ok"),
    (_sequence_example(drop=("video_id",)), "missing_video_id"),
    (_sequence_example(drop=("labels",)), "missing_labels"),
    (_sequence_example(labels=()), "missing_labels"),
    (_sequence_example(drop=("audio_embedding",)), "no_frames"),
    (_sequence_example(frames=[]), "no_frames"),
    (_sequence_example(frames=[b"\x01" * 127] + [b"\x01" * 128] * 9), "bad_frame_length"),
    (_sequence_example(labels=(3, 527)), "label_out_of_range"),
    (_sequence_example(labels=(-1,)), "label_out_of_range"),
    (b"this is not a protocol buffer", "not_a_sequence_example"),
])
def test_parse_marks_each_bad_record_with_its_reason(record, reason):
    good = _sequence_example(video_id=b"goodgoodgoo")
    clips = readers.parse_records([good, record, good])
    assert [schema.REASON_CODES[r] for r in clips["reason"]] == ["ok", reason, "ok"]
    assert clips["video_id"][0] == b"goodgoodgoo"


def test_a_batch_without_any_frame_parses():
    clips = readers.parse_records([_sequence_example(frames=[])])
    assert [schema.REASON_CODES[r] for r in clips["reason"]] == ["no_frames"]


def test_labels_are_multi_hot_uint8():
    clips = readers.parse_records([_sequence_example(labels=(0, 5, 5, 526))])
    assert clips["labels"].dtype == np.uint8
    assert np.flatnonzero(clips["labels"][0]).tolist() == [0, 5, 526]
    assert clips["labels"].max() == 1


def test_list_files_fails_when_nothing_matches(tmp_path):
    with pytest.raises(FileNotFoundError, match="no files match"):
        readers.list_files(str(tmp_path / "*.tfrecord"))


def test_hdf5_and_tfrecords_read_back_identical(tmp_path):
    config = synthetic.SyntheticConfig(num_clips=300, seed=3)
    synthetic.write_tfrecords(config, str(tmp_path / "tfrecords"))
    synthetic.write_hdf5(config, str(tmp_path / "clips.h5"))
    from_tfrecords = _concat(readers.read_tfrecords(str(tmp_path / "tfrecords" / "*.tfrecord"), batch_size=64))
    from_hdf5 = _concat(readers.read_hdf5(str(tmp_path / "clips.h5"), batch_size=64))
    assert set(from_tfrecords) == set(from_hdf5)
    for key in from_tfrecords:
        np.testing.assert_array_equal(from_tfrecords[key], from_hdf5[key], err_msg=key)
        assert from_tfrecords[key].dtype == from_hdf5[key].dtype, key


def test_research_hdf5_without_extra_columns_infers_num_frames(tmp_path):
    import h5py

    clips = next(synthetic.generate(synthetic.SyntheticConfig(num_clips=50, seed=4)))
    clips["num_frames"][:3] = [1, 4, 9]
    clips["embedding"][:3] = np.where(np.arange(10)[None, :, None] < np.array([1, 4, 9])[:, None, None],
                                      np.maximum(clips["embedding"][:3], 1), 0)
    with h5py.File(tmp_path / "research.h5", "w") as h5:
        h5["x"] = clips["embedding"]
        h5["y"] = clips["labels"].astype(bool)
        h5["video_id_list"] = clips["video_id"]
    read = _concat(readers.read_hdf5(str(tmp_path / "research.h5")))
    np.testing.assert_array_equal(read["num_frames"], clips["num_frames"])
    assert np.isnan(read["start_time_seconds"]).all()


def test_hdf5_with_disagreeing_shapes_is_refused(tmp_path):
    import h5py

    with h5py.File(tmp_path / "bad.h5", "w") as h5:
        h5["x"] = np.zeros([4, 10, 128], np.uint8)
        h5["y"] = np.zeros([5, 527], bool)
        h5["video_id_list"] = np.array([b"a"] * 4)
    with pytest.raises(ValueError, match=r"bad.h5: y is bool \(5, 527\)"):
        readers.hdf5_datasets(str(tmp_path / "bad.h5"))


# --- Reliability, round 2 (issue #14): the HDF5 layout check. -----------------------------------------

def _research_h5(path, extra=None, num_frames=None):
    import h5py

    with h5py.File(path, "w") as h5:
        h5["x"] = np.full([3, 10, 128], 5, np.uint8)
        y = np.zeros([3, 527], bool)
        y[:, 2] = True
        h5["y"], h5["video_id_list"] = y, np.array([b"vid0", b"vid1", b"vid2"])
        if num_frames is not None:
            h5["num_frames"] = num_frames
        if extra:
            extra(h5)


@pytest.mark.parametrize("member", ["group", "group_named_num_frames", "nested", "soft_link_to_nothing"])
def test_hdf5_members_that_are_not_datasets_are_ignored(tmp_path, member):
    import h5py

    def extra(h5):
        if member == "group":
            h5.create_group("metadata").attrs["note"] = "x"
        elif member == "group_named_num_frames":
            h5.create_group("num_frames")
        elif member == "nested":
            h5.create_group("a/b/c")["d"] = np.zeros(3)
        else:
            h5["dangling"] = h5py.SoftLink("/nowhere")

    _research_h5(tmp_path / "f.h5", extra)
    found = readers.hdf5_datasets(str(tmp_path / "f.h5"))
    assert sorted(found) == ["video_id_list", "x", "y"]


@pytest.mark.parametrize("problem, message", [
    ("not_hdf5", "not a readable HDF5 file"),
    ("truncated", "not a readable HDF5 file"),
    ("empty", "not a readable HDF5 file"),
    ("directory", "a directory, not a file"),
    ("num_frames_9.5", "num_frames holds values that are not whole numbers"),
    ("num_frames_nan", "num_frames holds values that are not whole numbers"),
    ("num_frames_text", "num_frames is |S"),
])
def test_an_hdf5_file_that_cannot_be_used_is_named(tmp_path, problem, message):
    path = tmp_path / "bad.h5"
    if problem == "not_hdf5":
        path.write_bytes(b"video_id,labels\n" * 100)
    elif problem in ("truncated", "empty"):
        _research_h5(tmp_path / "whole.h5")
        data = (tmp_path / "whole.h5").read_bytes()
        path.write_bytes(data[: len(data) // 2] if problem == "truncated" else b"")
    elif problem == "directory":
        path.mkdir()
    else:
        values = {"num_frames_9.5": np.array([10, 9.5, 10]), "num_frames_nan": np.array([10, np.nan, 10]),
                  "num_frames_text": np.array([b"10", b"9", b"10"])}[problem]
        _research_h5(path, num_frames=values)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: .*{re.escape(message)}"):
        readers.hdf5_datasets(str(path))


def test_hdf5_num_frames_stored_as_whole_floats_is_accepted(tmp_path):
    _research_h5(tmp_path / "f.h5", num_frames=np.array([10.0, 9.0, 1.0]))
    assert readers.hdf5_datasets(str(tmp_path / "f.h5"))["num_frames"][0] == (3,)


def test_file_problem_names_an_unreadable_file(tmp_path, monkeypatch):
    """chmod 000 does not stop root (these tests run as root), so the refusal is simulated."""
    import builtins

    path = tmp_path / "locked.tfrecord"
    path.write_bytes(b"")
    assert readers.file_problem(str(path)) is None
    real_open = builtins.open

    def open_(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    assert readers.file_problem(str(path)) == "cannot be read (Permission denied)"
    with pytest.raises(ValueError, match="locked.tfrecord: cannot be read .Permission denied.; remove it"):
        readers.check_tfrecord_files([str(path)])

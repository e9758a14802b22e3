"""Every kind of bad input, alone and mixed with good data, through the Beam job and tfdata.eval_dataset.

The corpus is generated here (nothing binary is committed). Record-level problems must be rejected
with their reason while the readable records around them are kept; file-level problems the user must
fix stop the job before it writes anything, with one line naming the file and the problem.
"""

import json
import os
import signal
import struct
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import tensorflow as tf

from beam_pipelines import build_shards
from tests.conftest import REPO_ROOT
from tests.test_build_shards import _write
from tests.test_readers import _sequence_example
from tfdata import datasets, readers


def _good(prefix: str, n: int, marker: int | None = None) -> list[bytes]:
    """n valid clips; with a marker, each also holds that class (which tells whose clips a job wrote)."""
    labels = [(i % 7,) if marker is None else (i % 7, marker) for i in range(n)]
    return [_sequence_example(video_id=f"{prefix}{i:07d}".encode(), labels=labels[i]) for i in range(n)]


def _framed(records: list[bytes]) -> tuple[bytes, list[int]]:
    """The bytes of a TFRecord file holding records, and each record's offset in it."""
    path = "/tmp/_framed_%d.tfrecord" % os.getpid()
    _write(path, records)
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    offsets, at = [], 0
    for r in records:
        offsets.append(at)
        at += len(r) + 16
    return data, offsets


# kind -> (files: {name: bytes}, written clips, {reason: count}) for a file of 2 good records, the bad
# part, then 2 more good records (where the format allows records after it). The good records hold the
# marker class, if any.
def _corpus(kind: str, prefix: str = "", marker: int | None = None) -> tuple[dict[str, bytes], int, dict[str, int]]:
    before, after = _good(prefix + "bef", 2, marker), _good(prefix + "aft", 2, marker)

    def around(bad: bytes) -> bytes:
        return _framed(before + [bad] + after)[0]

    records = {
        "not_a_sequence_example": b"\x00\x01garbage",
        "missing_audio_embedding": _sequence_example(video_id=b"noembedding", drop=("audio_embedding",)),
        "missing_labels": _sequence_example(video_id=b"nolabels000", drop=("labels",)),
        "frame_not_128_bytes": _sequence_example(video_id=b"shortframe0", frames=[b"\x01" * 127] * 10),
        "zero_frames": _sequence_example(video_id=b"noframes000", frames=[]),
        "eleven_frames": _sequence_example(video_id=b"toolong0000", frames=[b"\x01" * 128] * 11),
        "label_527": _sequence_example(video_id=b"label527000", labels=(3, 527)),
        "label_negative": _sequence_example(video_id=b"labelneg000", labels=(-1,)),
    }
    reasons = {"not_a_sequence_example": "not_a_sequence_example", "missing_audio_embedding": "no_frames",
               "missing_labels": "missing_labels", "frame_not_128_bytes": "bad_frame_length",
               "zero_frames": "no_frames", "eleven_frames": "too_many_frames", "label_527": "label_out_of_range",
               "label_negative": "label_out_of_range"}
    if kind in records:
        return {"bad.tfrecord": around(records[kind])}, 4, {reasons[kind]: 1}
    if kind in NEW_RECORD_KINDS:
        record, reason = _new_record(kind, prefix)
        return {"bad.tfrecord": around(record)}, 4 + (reason is None), {reason: 1} if reason else {}
    if kind == "conflicting_duplicate":  # before[0]'s video id and start time with other labels
        record = _sequence_example(video_id=f"{prefix}bef0000000".encode(), labels=(5, 6))
        return {"bad.tfrecord": around(record)}, 4, {"conflicting_duplicate": 1}
    if kind == "length_2_62":  # a header claiming 2**62 bytes with a valid header CRC, after 2 good records
        from beam_pipelines import read

        header = struct.pack("<Q", 2 ** 62)
        tail = header + struct.pack("<I", read.masked_crc32c(header)) + b"\x00" * 64
        return {"bad.tfrecord": _framed(before)[0] + tail}, 2, {"unreadable_data": 1}
    if kind == "duplicate_in_file":
        return {"bad.tfrecord": around(before[0])}, 4, {"duplicate": 1}
    if kind == "duplicate_across_files":
        return {"bad.tfrecord": _framed(before + after)[0], "copy.tfrecord": _framed([after[1]])[0]}, 4, {
            "duplicate": 1}
    if kind == "bad_crc":
        data, offsets = _framed(before + [_good("crc", 1, marker)[0]] + after)
        corrupt = bytearray(data)
        corrupt[offsets[2] + 12 + 40] ^= 0xFF  # inside the third record's data: only its data CRC fails
        return {"bad.tfrecord": bytes(corrupt)}, 4, {"unreadable_data": 1}
    if kind == "truncated_file":
        data, offsets = _framed(before + [_good("cut", 1, marker)[0]] + after)
        return {"bad.tfrecord": data[: offsets[2] + 30]}, 2, {"unreadable_data": 1}  # cut inside record 3
    if kind == "empty_file":
        return {"bad.tfrecord": b""}, 0, {}
    if kind == "text_file":
        return {"bad.tfrecord": b"video_id,start,end,labels\nabc,0,10,1\n" * 20}, 0, {"unreadable_data": 1}
    if kind == "random_bytes":
        return {"bad.tfrecord": np.random.default_rng(0).bytes(5000)}, 0, {"unreadable_data": 1}
    raise ValueError(kind)


def _with_times(record: bytes, start="keep", end="keep") -> bytes:
    """A copy of a serialized SequenceExample with its start / end time replaced (None: removed)."""
    example = tf.train.SequenceExample.FromString(record)
    for key, value in (("start_time_seconds", start), ("end_time_seconds", end)):
        if value is None:
            del example.context.feature[key]
        elif value != "keep":
            example.context.feature[key].float_list.value[:] = [value]
    return example.SerializeToString()


# kind -> a bad record (video id made unique by the prefix) and its reason (None: a valid clip)
NEW_RECORD_KINDS = {
    "labels_10000": lambda p: (_sequence_example(video_id=p + b"manylabels0", labels=[i % 527 for i in range(10000)]),
                               "too_many_labels"),
    "labels_33": lambda p: (_sequence_example(video_id=p + b"labels33000", labels=range(33)), "too_many_labels"),
    "labels_repeated": lambda p: (_sequence_example(video_id=p + b"repeated000", labels=[4] * 1000), None),
    "start_nan": lambda p: (_with_times(_sequence_example(video_id=p + b"startnan000"), start=float("nan")), "bad_time"),
    "start_inf": lambda p: (_with_times(_sequence_example(video_id=p + b"startinf000"), start=float("inf")), "bad_time"),
    "start_negative": lambda p: (_with_times(_sequence_example(video_id=p + b"startneg000"), start=-10.0), "bad_time"),
    "start_missing": lambda p: (_with_times(_sequence_example(video_id=p + b"startnone00"), start=None), "bad_time"),
    "start_after_end": lambda p: (_with_times(_sequence_example(video_id=p + b"startend000"), start=30.0, end=20.0),
                                  "bad_time"),
    "end_nan": lambda p: (_with_times(_sequence_example(video_id=p + b"endnan00000"), end=float("nan")), "bad_time"),
    "end_missing": lambda p: (_with_times(_sequence_example(video_id=p + b"endnone0000"), end=None), None),
    "video_id_latin1": lambda p: (_sequence_example(video_id=p + "caf\xe9".encode("latin-1")), "bad_video_id"),
    "video_id_lone_continuation": lambda p: (_sequence_example(video_id=p + b"ab\x80cd"), "bad_video_id"),
}


def _new_record(kind: str, prefix: str):
    return NEW_RECORD_KINDS[kind](prefix.encode())


# Paths matched by the glob that are not regular readable files: each is one input record, rejected
# unreadable_file, and is never opened (a FIFO would block the job).
NOT_FILE_KINDS = ["directory", "fifo", "socket", "dangling_symlink", "symlink_loop"]


def _make_not_file(path, kind: str) -> None:
    import socket

    if kind == "directory":
        os.mkdir(path)
        (path / "inner.tfrecord").write_bytes(b"")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "dangling_symlink":
        os.symlink(path.parent / "missing-target", path)
    elif kind == "symlink_loop":
        os.symlink(path.name, path)


RECORD_KINDS = ["truncated_file", "bad_crc", "empty_file", "text_file", "random_bytes", "not_a_sequence_example",
                "missing_audio_embedding", "missing_labels", "frame_not_128_bytes", "zero_frames", "eleven_frames",
                "label_527", "label_negative", "duplicate_in_file", "duplicate_across_files"]
FILE_LEVEL = {"truncated_file", "bad_crc", "text_file", "random_bytes"}  # eval_dataset cannot read past them
ROUND_2_KINDS = [*NEW_RECORD_KINDS, "conflicting_duplicate", "length_2_62"]


def _input(tmp_path, kind: str, mixed: bool) -> tuple[str, int, dict[str, int]]:
    files, written, reasons = _corpus(kind)
    data = tmp_path / "in"
    data.mkdir()
    for name, content in files.items():
        (data / name).write_bytes(content)
    if mixed:
        _write(data / "good.tfrecord", _good("good", 5))
        written += 5
    return str(data / "*.tfrecord"), written, reasons


MARKER = {kind: 100 + i for i, kind in enumerate(RECORD_KINDS)}  # a class held only by that kind's good clips


def _all_kinds_input(data) -> tuple[int, dict[str, int], dict[str, tuple[int, dict[str, int]]]]:
    """Every record kind in files of its own ({kind}-{name}: video ids unique per kind, its good clips
    marked), the paths that are not files, and 5 good clips: (written, reasons, per record kind)."""
    data.mkdir()
    written, reasons, per_kind = 5, {}, {}
    _write(data / "good.tfrecord", _good("good", 5))
    for i, kind in enumerate(RECORD_KINDS + ROUND_2_KINDS):
        files, n, kind_reasons = _corpus(kind, prefix=f"k{i:02d}", marker=MARKER.get(kind))
        for name, content in files.items():
            (data / f"{kind}-{name}").write_bytes(content)
        written += n
        for reason, count in kind_reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
        per_kind[kind] = n, kind_reasons
    for kind in NOT_FILE_KINDS:
        _make_not_file(data / f"{kind}.tfrecord", kind)
    reasons["unreadable_file"] = len(NOT_FILE_KINDS)
    return written, reasons, per_kind


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory):
    """One Beam run over every kind of bad input at once (each kind in its own files), mixed with good
    clips: (output dir, manifest, expected written, expected reasons, {kind: (written, reasons)})."""
    root = tmp_path_factory.mktemp("every_kind")
    written, reasons, per_kind = _all_kinds_input(root / "in")
    out = root / "out"
    manifest = build_shards.run(["--input", str(root / "in" / "*.tfrecord"), "--output_dir", str(out),
                                 "--holdout_fraction", "0.3"])
    return out, manifest, written, reasons, per_kind


@pytest.mark.slow
@pytest.mark.parametrize("kind", RECORD_KINDS)
def test_beam_job_rejects_bad_records_with_their_reason_and_keeps_the_rest(every_kind, kind):
    """Per kind, in the shared run: its file's rejections and reasons, and its good clips all written
    (counted by the marker class that only they hold)."""
    out, manifest, _, _, per_kind = every_kind
    written, reasons = per_kind[kind]
    assert manifest["class_counts"][MARKER[kind]] == written
    rejected = [json.loads(line) for line in (out / manifest["rejected_file"]).read_text().splitlines()]
    mine = [r for r in rejected if os.path.basename(r["file"]).split("-")[0] == kind]
    assert sorted(r["reason"] for r in mine) == sorted(r for r, n in reasons.items() for _ in range(n))
    assert all(r["file"].endswith(".tfrecord") and r["position"] >= 0 for r in mine)


@pytest.mark.slow
def test_beam_job_with_nothing_readable_writes_no_clips(tmp_path):
    """The kinds that leave no valid clip, alone in one run: every record rejected, nothing written."""
    data = tmp_path / "in"
    data.mkdir()
    reasons = {}
    for kind in ("empty_file", "text_file", "random_bytes"):
        files, written, kind_reasons = _corpus(kind)
        assert written == 0
        for name, content in files.items():
            (data / f"{kind}-{name}").write_bytes(content)
        for reason, count in kind_reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
    out = tmp_path / "out"
    manifest = build_shards.run(["--input", str(data / "*.tfrecord"), "--output_dir", str(out),
                                 "--holdout_fraction", "0.3"])
    assert manifest["written_clips"] == 0
    assert {r: n for r, n in manifest["rejected_reasons"].items() if n} == reasons == {"unreadable_data": 2}
    assert manifest["input_records"] == manifest["rejected"] == 2
    rejected = [json.loads(line) for line in (out / manifest["rejected_file"]).read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == ["unreadable_data"] * 2
    assert all(r["file"].endswith(".tfrecord") and r["position"] >= 0 for r in rejected)
    splits = manifest["splits"]
    assert splits["train"]["clips"] + splits["holdout"]["clips"] == 0


@pytest.mark.parametrize("kind", RECORD_KINDS)
def test_eval_dataset_skips_bad_records_or_names_the_unreadable_file(tmp_path, kind):
    pattern, written, reasons = _input(tmp_path, kind, mixed=True)
    files = readers.list_files(pattern)
    skipped = datasets.SkippedRecords()
    if kind in FILE_LEVEL:  # refused up front (a length field that overruns the file) or when reading reaches it
        try:
            for _ in datasets.eval_dataset(pattern, 4, skipped=skipped):
                pass
        except ValueError as e:
            message = str(e)
        except tf.errors.DataLossError:
            message = readers.find_data_loss(files)
        else:
            pytest.fail("the damaged file was read without an error")
        assert message.startswith(str(tmp_path / "in" / "bad.tfrecord")) and "\n" not in message
        return
    clips = sum(int(f["num_frames"].shape[0]) for f, _ in datasets.eval_dataset(pattern, 4, skipped=skipped))
    duplicates = reasons.pop("duplicate", 0)  # eval_dataset reads what is there: a copy is scored twice
    assert skipped.as_dict() == reasons
    assert clips == written + duplicates


def _hdf5(path, x_shape=(4, 10, 128), x_dtype=np.uint8, y_shape=(4, 527), y_dtype=np.bool_, ids=4):
    with h5py.File(path, "w") as h5:
        h5["x"] = np.zeros(x_shape, x_dtype)
        h5["y"] = np.zeros(y_shape, y_dtype)
        h5["video_id_list"] = np.array([b"abcdefghijk"] * ids)


@pytest.mark.parametrize("problem, kwargs, message", [
    ("x_rank", {"x_shape": (4, 1280)}, "x"),
    ("x_dtype", {"x_dtype": np.float32}, "x is float32"),
    ("x_frame_size", {"x_shape": (4, 10, 64)}, "x"),
    ("y_rows", {"y_shape": (3, 527)}, "y"),
    ("y_classes", {"y_shape": (4, 500)}, "y"),
    ("y_dtype", {"y_dtype": np.float32}, "y is float32"),
    ("ids", {"ids": 5}, "video_id_list"),
])
@pytest.mark.parametrize("mixed", [False, True], ids=["alone", "mixed"])
def test_hdf5_with_wrong_shapes_or_dtypes_stops_before_writing(tmp_path, capsys, problem, kwargs, message, mixed):
    (tmp_path / "in").mkdir()
    _hdf5(tmp_path / "in" / "bad.h5", **kwargs)
    if mixed:
        _hdf5(tmp_path / "in" / "good.h5")
    assert build_shards.main(["--input", str(tmp_path / "in" / "*.h5"), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.h5" in err and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["glob_matches_nothing", "output_holds_shards"])
def test_file_level_user_errors_stop_before_writing(tmp_path, capsys, beam_shards, synthetic_tfrecords, problem):
    before = sorted(p.relative_to(beam_shards) for p in beam_shards.rglob("*"))
    if problem == "glob_matches_nothing":
        args, message = ["--input", str(tmp_path / "nothing" / "*.tfrecord"), "--output_dir",
                         str(tmp_path / "out")], "no files match"
    else:
        args, message = ["--input", str(synthetic_tfrecords / "*.tfrecord"), "--output_dir",
                         str(beam_shards)], "is not empty"
    assert build_shards.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
    assert sorted(p.relative_to(beam_shards) for p in beam_shards.rglob("*")) == before


@pytest.mark.slow
def test_a_killed_beam_run_leaves_nothing_that_looks_finished(tmp_path, synthetic_tfrecords):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "beam_pipelines.build_shards", "--input", str(synthetic_tfrecords / "*.tfrecord"),
               "--output_dir", str(out), "--holdout_fraction", "0.2"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "train").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the job creates its split directories just before the pipeline starts
    time.sleep(0.25)  # then somewhere in the pipeline (a fixed delay: the same kill point on every run)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the job finished before it could be killed"
    assert out.exists() and not (out / "manifest.json").exists()
    with pytest.raises(datasets.ShardsError, match="no manifest.json"):
        datasets.train_dataset(str(out), 8)
    args = ["--input", str(synthetic_tfrecords / "*.tfrecord"), "--output_dir", str(out), "--holdout_fraction", "0.2"]
    if any(p.is_file() for p in out.rglob("*")):  # killed after it wrote something: a new run refuses
        with pytest.raises(build_shards.UsageError, match="is not empty"):
            build_shards.run(args)
    manifest = build_shards.run(args + ["--overwrite"])
    assert manifest["written_clips"] == 2000 and datasets.read_manifest(str(out))["complete"] is True


@pytest.mark.slow
def test_every_kind_of_bad_input_at_once_adds_up(every_kind):
    """All record kinds (each in its own file, video ids unique per kind), the paths that are not
    files, and good clips, in one Beam run: input = written + rejected, every reason counted."""
    out, manifest, written, reasons, _ = every_kind
    assert {r: n for r, n in manifest["rejected_reasons"].items() if n} == reasons
    assert manifest["written_clips"] == written
    assert manifest["input_records"] == manifest["written_clips"] + manifest["rejected"]
    rejected = [json.loads(line) for line in (out / manifest["rejected_file"]).read_text().splitlines()]
    assert len(rejected) == manifest["rejected"]
    not_files = {os.path.basename(r["file"]): r["detail"] for r in rejected if r["reason"] == "unreadable_file"}
    assert sorted(not_files) == sorted(f"{k}.tfrecord" for k in NOT_FILE_KINDS)
    assert "directory" in not_files["directory.tfrecord"] and "FIFO" in not_files["fifo.tfrecord"]
    assert "dangling" in not_files["dangling_symlink.tfrecord"] and "loop" in not_files["symlink_loop.tfrecord"]
    huge = [r for r in rejected if r["file"].endswith("length_2_62-bad.tfrecord")]
    assert [(r["reason"], r["position"]) for r in huge] == [("unreadable_data", 2)] and "4611686018427387904" in \
        huge[0]["detail"]
    assert manifest["splits"]["train"]["clips"] + manifest["splits"]["holdout"]["clips"] == written
    kept = {c for c, n in enumerate(manifest["class_counts"]) if n}  # no clip of 527 classes got in
    assert kept <= set(range(7)) | set(MARKER.values()), sorted(kept)


@pytest.mark.parametrize("kind", ROUND_2_KINDS)
def test_eval_dataset_skips_round_2_bad_records_or_names_the_file(tmp_path, kind):
    pattern, written, reasons = _input(tmp_path, kind, mixed=True)
    skipped = datasets.SkippedRecords()
    if kind == "length_2_62":  # refused before TensorFlow's reader (which crashes on such a length) starts
        with pytest.raises(ValueError, match=r"bad\.tfrecord: truncated record or corrupt length field \(record 2 claims 4611686018427387904 bytes"):
            datasets.eval_dataset(pattern, 4, skipped=skipped)
        return
    clips = sum(int(f["num_frames"].shape[0]) for f, _ in datasets.eval_dataset(pattern, 4, skipped=skipped))
    duplicates = sum(reasons.pop(r, 0) for r in ("duplicate", "conflicting_duplicate"))  # scored as found
    assert skipped.as_dict() == reasons
    assert clips == written + duplicates


@pytest.mark.parametrize("kind", NOT_FILE_KINDS)
def test_eval_readers_name_a_path_that_is_not_a_file_without_opening_it(tmp_path, kind):
    _write(tmp_path / "good.tfrecord", _good("good", 2))
    _make_not_file(tmp_path / "bad.tfrecord", kind)
    with pytest.raises(ValueError, match=r"bad\.tfrecord: .*remove it or narrow the input glob"):
        datasets.eval_dataset(str(tmp_path / "*.tfrecord"), 4)

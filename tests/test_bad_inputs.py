"""Every kind of bad input, alone and mixed with good data, through the Beam job and tfdata.eval_dataset.

The corpus is generated here (nothing binary is committed). Record-level problems must be rejected
with their reason while the readable records around them are kept; file-level problems the user must
fix stop the job before it writes anything, with one line naming the file and the problem.
"""

import json
import os
import signal
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


def _good(prefix: str, n: int) -> list[bytes]:
    return [_sequence_example(video_id=f"{prefix}{i:07d}".encode(), labels=(i % 7,)) for i in range(n)]


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
# part, then 2 more good records (where the format allows records after it).
def _corpus(kind: str) -> tuple[dict[str, bytes], int, dict[str, int]]:
    before, after = _good("bef", 2), _good("aft", 2)

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
    if kind == "duplicate_in_file":
        return {"bad.tfrecord": around(before[0])}, 4, {"duplicate": 1}
    if kind == "duplicate_across_files":
        return {"bad.tfrecord": _framed(before + after)[0], "copy.tfrecord": _framed([after[1]])[0]}, 4, {
            "duplicate": 1}
    if kind == "bad_crc":
        data, offsets = _framed(before + [_good("crc", 1)[0]] + after)
        corrupt = bytearray(data)
        corrupt[offsets[2] + 12 + 40] ^= 0xFF  # inside the third record's data: only its data CRC fails
        return {"bad.tfrecord": bytes(corrupt)}, 4, {"unreadable_data": 1}
    if kind == "truncated_file":
        data, offsets = _framed(before + [_good("cut", 1)[0]] + after)
        return {"bad.tfrecord": data[: offsets[2] + 30]}, 2, {"unreadable_data": 1}  # cut inside record 3
    if kind == "empty_file":
        return {"bad.tfrecord": b""}, 0, {}
    if kind == "text_file":
        return {"bad.tfrecord": b"video_id,start,end,labels\nabc,0,10,1\n" * 20}, 0, {"unreadable_data": 1}
    if kind == "random_bytes":
        return {"bad.tfrecord": np.random.default_rng(0).bytes(5000)}, 0, {"unreadable_data": 1}
    raise ValueError(kind)


RECORD_KINDS = ["truncated_file", "bad_crc", "empty_file", "text_file", "random_bytes", "not_a_sequence_example",
                "missing_audio_embedding", "missing_labels", "frame_not_128_bytes", "zero_frames", "eleven_frames",
                "label_527", "label_negative", "duplicate_in_file", "duplicate_across_files"]
FILE_LEVEL = {"truncated_file", "bad_crc", "text_file", "random_bytes"}  # eval_dataset cannot read past them


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


@pytest.mark.parametrize("mixed", [False, True], ids=["alone", "mixed"])
@pytest.mark.parametrize("kind", RECORD_KINDS)
def test_beam_job_rejects_bad_records_with_their_reason_and_keeps_the_rest(tmp_path, kind, mixed):
    pattern, written, reasons = _input(tmp_path, kind, mixed)
    out = tmp_path / "out"
    manifest = build_shards.run(["--input", pattern, "--output_dir", str(out), "--holdout_fraction", "0.3"])
    assert manifest["written_clips"] == written
    assert {r: n for r, n in manifest["rejected_reasons"].items() if n} == reasons
    assert manifest["input_records"] == manifest["written_clips"] + manifest["rejected"]
    rejected = [json.loads(line) for line in (out / manifest["rejected_file"]).read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == sorted(r for r, n in reasons.items() for _ in range(n))
    assert all(r["file"].endswith(".tfrecord") and r["position"] >= 0 for r in rejected)
    splits = manifest["splits"]
    assert splits["train"]["clips"] + splits["holdout"]["clips"] == written


@pytest.mark.parametrize("kind", RECORD_KINDS)
def test_eval_dataset_skips_bad_records_or_names_the_unreadable_file(tmp_path, kind):
    pattern, written, reasons = _input(tmp_path, kind, mixed=True)
    files = readers.list_files(pattern)
    skipped = datasets.SkippedRecords()
    if kind in FILE_LEVEL:
        with pytest.raises(tf.errors.DataLossError):
            for _ in datasets.eval_dataset(pattern, 4, skipped=skipped):
                pass
        message = readers.find_data_loss(files)
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


def test_a_killed_beam_run_leaves_nothing_that_looks_finished(tmp_path, synthetic_tfrecords):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "beam_pipelines.build_shards", "--input", str(synthetic_tfrecords / "*.tfrecord"),
               "--output_dir", str(out), "--holdout_fraction", "0.2"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "train").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the job creates its split directories just before the pipeline starts
    time.sleep(np.random.default_rng().uniform(0, 0.5))  # then somewhere in the pipeline
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

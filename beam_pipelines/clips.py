"""Clip batches, the unit every stage of the shard-building job passes on, and their accounting.

A *clip batch* is a dict of numpy arrays, one row per record:
  file               int32   [N]           index into the sorted list of input files
  position           int64   [N]           record index in its TFRecord file, or row of the HDF5 file
  video_id           object  [N]           bytes
  start_time_seconds float32 [N]           NaN when the source does not record it
  embedding          uint8   [N, 10, 128]  zero-padded after num_frames
  num_frames         uint8   [N]
  labels             uint8   [N, 66]       np.packbits of the 527 (+1 padding) multi-hot labels
  reason             int32   [N]           index into schema.REASON_CODES, 0 for a valid clip
  uid                uint64  [N]           hash of (video_id, start_time_seconds): the clip's identity
  video_hash         uint64  [N]           hash of video_id alone: decides holdout and plain shard
  record             object  [N]           the original serialized SequenceExample (TFRecord input only)
Parts that go through a shuffle carry a subset of these columns.

The functions here are Beam-free (the stages wrap them in PTransforms; benchmarks.beam calls
them from one Python loop), so both write byte-identical shards. Hashes are stable across runs,
machines and runners (never Python's hash()). Stats and dead-letter entries count every record.
"""

from __future__ import annotations

import fractions
import hashlib
import math
import struct

import numpy as np

from tfdata import schema

NAMESPACE = "build_shards"  # of the job's Beam counters


OK = schema.REASON_CODES.index(schema.OK)


# --- Hashes. --------------------------------------------------------------------------------------

def video_hash(video_id: bytes) -> int:
    """First 8 bytes of sha256(video_id) as a big-endian integer in [0, 2**64)."""
    return int.from_bytes(hashlib.sha256(video_id).digest()[:8], "big")


def holdout_threshold(fraction: float) -> int:
    """A clip is held out when video_hash(video_id) < fraction * 2**64, compared exactly."""
    return math.ceil(fractions.Fraction(fraction) * 2 ** 64)


def in_holdout(video_id: bytes, fraction: float) -> bool:
    return video_hash(video_id) < holdout_threshold(fraction)


def _start_bits(start: float) -> bytes:
    """float32 bytes of a start time, with every NaN the same and -0.0 equal to 0.0."""
    if math.isnan(start):
        return b"nan!"
    return struct.pack("<f", start + 0.0)


def clip_key(video_id: bytes, start: float) -> tuple[bytes, bytes]:
    """What makes two records the same clip: the video id and the start time."""
    return video_id, _start_bits(start)


def hashes(video_ids, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uid (a hash of video_id and start time: the clip's identity) and video_hash per row, uint64 [N].

    uid = mix(video_hash ^ mix(start time's float32 bits)), with every NaN alike and -0.0 = 0.0;
    mix is a bijection, so clips of one video never share a uid.
    """
    digests = b"".join([hashlib.sha256(v).digest()[:8] for v in video_ids])
    vhash = np.frombuffer(digests, ">u8").astype(np.uint64)
    starts = np.asarray(starts, np.float32) + np.float32(0.0)  # -0.0 -> 0.0
    bits = starts.view(np.uint32).astype(np.uint64)
    bits[np.isnan(starts)] = 0x7FC00000
    return _mix64(vhash ^ _mix64(bits + _salt("start"))), vhash


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 arrays (wrapping arithmetic): a cheap, good bit mixer."""
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _salt(*parts) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big"))


def order_keys(uid: np.ndarray, seed: int, class_index: int, cycle: int) -> np.ndarray:
    """The pseudo-random sort key of clips in one pass (cycle) over a class: a hash of
    (seed, class, cycle, video_id, start_time). uint64 [N]."""
    return _mix64(uid ^ _salt("order", seed, class_index, cycle))


def plain_shard(vhash: np.ndarray, num_shards: int) -> np.ndarray:
    """Plain shard of each clip, by video id (all clips of a video in one file). int64 [N]."""
    return (_mix64(vhash ^ _salt("plain")) % np.uint64(num_shards)).astype(np.int64)


def dedup_bucket(uid: np.ndarray, num_buckets: int) -> np.ndarray:
    return (_mix64(uid ^ _salt("dedup")) % np.uint64(num_buckets)).astype(np.int64)


def record_keys(file: np.ndarray, position: np.ndarray) -> np.ndarray:
    """(file, position) as one int64, to look up duplicates with np.isin."""
    return file.astype(np.int64) * (1 << 40) + position.astype(np.int64)


# --- Columns. -------------------------------------------------------------------------------------

def take(batch: dict, rows, columns=None) -> dict:
    """The given rows (index array or boolean mask) of some columns of a batch."""
    return {key: batch[key][rows] for key in (columns or batch)}


def concat(parts: list[dict]) -> dict:
    if len(parts) == 1:
        return parts[0]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def num_rows(part: dict) -> int:
    return len(next(iter(part.values())))


def nbytes(part: dict) -> int:
    """Bytes of a part's arrays (the bytes objects' lengths for object columns)."""
    total = 0
    for value in part.values():
        total += sum(map(len, value)) if value.dtype == object else value.nbytes
    return total


def row_bytes(part: dict) -> int:
    """Bytes of one row of a part, about (object columns count 1 kB)."""
    return sum(1024 if v.dtype == object else v.itemsize * int(np.prod(v.shape[1:])) for v in part.values())


def object_array(values) -> np.ndarray:
    out = np.empty(len(values), object)
    out[:] = values
    return out


def unpack_labels(packed: np.ndarray) -> np.ndarray:
    """uint8 [N, 66] -> uint8 0/1 [N, 527]."""
    return np.unpackbits(packed, axis=1)[:, :schema.NUM_CLASSES]


# --- Accounting: stats per batch and dead-letter entries. -----------------------------------------

def empty_stats() -> dict:
    zeros = np.zeros(schema.NUM_CLASSES, np.int64)
    return {"input_records": 0, "rejected_reasons": {}, "main": zeros, "main_clips": 0,
            "holdout": zeros.copy(), "holdout_clips": 0}


def add_stats(a: dict, b: dict) -> dict:
    reasons = dict(a["rejected_reasons"])
    for reason, count in b["rejected_reasons"].items():
        reasons[reason] = reasons.get(reason, 0) + count
    return {"input_records": a["input_records"] + b["input_records"], "rejected_reasons": reasons,
            "main": a["main"] + b["main"], "main_clips": a["main_clips"] + b["main_clips"],
            "holdout": a["holdout"] + b["holdout"], "holdout_clips": a["holdout_clips"] + b["holdout_clips"]}


def reason_counts(reasons: np.ndarray) -> dict:
    counts = np.bincount(reasons, minlength=len(schema.REASON_CODES))
    return {schema.REASON_CODES[r]: int(n) for r, n in enumerate(counts) if r != OK and n}


def rejection(file_name: str, position: int, video_id: bytes | None, reason: str, detail: str | None = None) -> dict:
    entry = {"file": file_name, "position": int(position), "reason": reason}
    if video_id:
        entry[schema.VIDEO_ID_KEY] = video_id.decode(errors="backslashreplace")  # a bad_video_id stays identifiable
    if detail:
        entry["detail"] = detail
    return entry


def rejections(part: dict, rows: np.ndarray, reasons, files: list[str]) -> list[dict]:
    """One dead-letter entry per row of a batch (reasons: names, or codes into REASON_CODES)."""
    rows = np.asarray(rows)
    entries = []
    for row, reason in zip(np.flatnonzero(rows) if rows.dtype == bool else rows, reasons):
        name = reason if isinstance(reason, str) else schema.REASON_CODES[int(reason)]
        entries.append(rejection(files[int(part["file"][row])], part["position"][row],
                                 part[schema.VIDEO_ID_KEY][row], name))
    return entries


def counter(name: str):
    """A Beam counter of the job (namespace build_shards)."""
    import apache_beam as beam

    return beam.metrics.Metrics.counter(NAMESPACE, name)

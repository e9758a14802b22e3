"""Beam-free building blocks of the shard-building job: clip batches, hashes, framing, blocks.

`beam_pipelines.transforms` wraps these functions in PTransforms; `beam_pipelines.benchmark` calls
the same functions from one Python loop, so both write byte-identical shards and the benchmark
measures what Beam adds, not a different algorithm.

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
"""

from __future__ import annotations

import fractions
import hashlib
import math
import os
import struct

import numpy as np

from tfdata import fileio, schema

OK = schema.REASON_CODES.index(schema.OK)


# --- Hashes: stable across runs, machines and runners (never Python's hash()). ---------------------

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


write_atomically = fileio.write_atomically


def delete_tree(path: str) -> None:
    """Deletes a directory and everything under it (local, or a gs:// prefix through Beam's FileSystems)."""
    from apache_beam.io import filesystems

    if "://" not in path:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    elif filesystems.FileSystems.match([_literal(path.rstrip("/")) + "/**"])[0].metadata_list:
        filesystems.FileSystems.delete([path.rstrip("/") + "/"])


# --- Reading TFRecord framing. ---------------------------------------------------------------------

def _masked_crc(data: bytes) -> int:
    from apache_beam.io.tfrecordio import _TFRecordUtil  # crcmod's C implementation

    return _TFRecordUtil._masked_crc32c(data)


def read_tfrecord_file(path: str):
    """Yields (position, record, problem) for every record of a TFRecord file (see iter_tfrecord_frames).

    Reads with TensorFlow's C++ record reader (CRC-checked, local or gs://, gzip for *.gz), about 5x
    faster than framing in Python; only when that reader stops at corrupt data is the file read
    again with iter_tfrecord_frames, which rejects a corrupt record alone and goes on where it can.
    """
    import tensorflow as tf
    from apache_beam.io import filesystems
    from tensorflow.python.util import deprecation

    from tfdata import readers

    position = 0
    if readers.tfrecord_length_problem(path) is None:  # TensorFlow's reader trusts length fields
        options = tf.io.TFRecordOptions(compression_type="GZIP" if path.endswith(".gz") else "")
        try:
            with deprecation.silence():
                records = tf.compat.v1.io.tf_record_iterator(path, options)
            for record in records:
                yield position, record, None
                position += 1
            return
        except tf.errors.OpError:  # DataLossError: bad CRC, truncated record; or a file that is not framed
            pass
    size = None if path.endswith(".gz") else filesystems.FileSystems.match([_literal(path)])[0].metadata_list[0].size_in_bytes
    with filesystems.FileSystems.open(path) as f:
        for at, record, problem in iter_tfrecord_frames(f, size=size):
            if at >= position:
                yield at, record, problem


def _literal(path: str) -> str:
    """A path as a FileSystems.match pattern that matches only itself (glob characters escaped)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def iter_tfrecord_frames(f, chunk_size: int = 16 << 20, size: int | None = None):
    """Yields (position, record, problem) for each record of an open TFRecord stream of `size` bytes.

    problem is None for a good record; "record data CRC mismatch" for a record whose data is
    corrupt (reading goes on: its length field was intact); otherwise the rest of the stream
    cannot be framed (truncated record, corrupt length, a length that overruns the file) and the
    last item reports it. Reads at most chunk_size bytes at a time, whatever a length field claims.
    """
    buf, off, position, consumed = b"", 0, 0, 0

    def ensure(n: int) -> bool:
        nonlocal buf, off
        if len(buf) - off >= n:
            return True
        pieces = [buf[off:]]
        have = len(pieces[0])
        while have < n:
            piece = f.read(chunk_size)
            if not piece:
                break
            pieces.append(piece)
            have += len(piece)
        buf, off = b"".join(pieces), 0
        return have >= n

    while True:
        if not ensure(12):
            if len(buf) - off:
                yield position, None, "truncated record: rest of file unreadable"
            return
        length, length_crc = struct.unpack_from("<QI", buf, off)
        if _masked_crc(buf[off:off + 8]) != length_crc:
            yield position, None, "corrupt record length (not a TFRecord file?): rest of file unreadable"
            return
        if size is not None and consumed + 16 + length > size:
            yield position, None, (f"record length claims {length} bytes, {size - consumed - 12} left in the file: "
                                   "rest of file unreadable")
            return
        if not ensure(12 + length + 4):
            yield position, None, "truncated record: rest of file unreadable"
            return
        data = buf[off + 12:off + 12 + length]
        (data_crc,) = struct.unpack_from("<I", buf, off + 12 + length)
        if _masked_crc(data) != data_crc:
            yield position, None, "record data CRC mismatch"
        else:
            yield position, data, None
        off += 16 + length
        consumed += 16 + length
        position += 1


def group_files(sizes: list[int], target_bytes: int) -> list[list[int]]:
    """Consecutive file indices grouped so that each group holds about target_bytes (>= 1 file)."""
    groups, current, total = [], [], 0
    for i, size in enumerate(sizes):
        if current and total + size > target_bytes:
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += size
    if current:
        groups.append(current)
    return groups


# --- Clip batches. ---------------------------------------------------------------------------------

def parse_batch(records: list[bytes], file: np.ndarray, position: np.ndarray) -> dict:
    """Serialized SequenceExamples -> a clip batch (one vectorized TF parse for the whole list)."""
    from tfdata import readers

    parsed = readers.parse_records(records)
    batch = {
        "file": np.asarray(file, np.int32),
        "position": np.asarray(position, np.int64),
        "video_id": parsed["video_id"],
        "start_time_seconds": parsed["start_time_seconds"].astype(np.float32),
        "embedding": parsed["embedding"],
        "num_frames": parsed["num_frames"].astype(np.uint8),
        "labels": np.packbits(parsed["labels"].astype(bool), axis=1),
        "reason": parsed["reason"].astype(np.int32),
        "record": _object_array(records),
    }
    batch["uid"], batch["video_hash"] = hashes(batch["video_id"], batch["start_time_seconds"])
    return batch


def hdf5_batch(x: np.ndarray, y: np.ndarray, video_ids: np.ndarray, num_frames: np.ndarray | None,
               starts: np.ndarray | None, file: int, begin: int) -> dict:
    """Rows of the research HDF5 layout -> a clip batch, validated as readers.read_hdf5 does.

    num_frames, when the file does not store it, is the position of the last frame that is not all
    zeros (readers._finish_hdf5_batch). Frames past num_frames are zeroed, as parsing a
    SequenceExample would give them. A stored num_frames above 10 is `too_many_frames`.
    """
    n = len(x)
    if num_frames is None:
        nonzero = x.any(axis=2)  # [N, 10]
        num_frames = (np.arange(1, schema.NUM_FRAMES + 1) * nonzero).max(axis=1)  # [N]
    num_frames = np.asarray(num_frames, np.int64)
    # Without the column the start time is unknown (NaN) and fine; a stored NaN, inf or negative is bad_time.
    bad_time = np.zeros(n, bool) if starts is None else ~(np.isfinite(starts) & (np.asarray(starts) >= 0))
    starts = np.full(n, np.nan, np.float32) if starts is None else np.asarray(starts, np.float32)
    video_ids = _object_array([bytes(v) for v in video_ids])
    labels = np.asarray(y).astype(bool)
    reason = np.zeros(n, np.int32)
    checks = [  # (reason, failed), in order of precedence (readers.parse_sequence_examples)
        ("missing_video_id", np.array([len(v) == 0 for v in video_ids], bool)),
        ("bad_video_id", ~utf8_valid(video_ids)),
        ("missing_labels", ~labels.any(axis=1)),
        ("no_frames", num_frames <= 0),
        ("too_many_frames", num_frames > schema.NUM_FRAMES),
        ("bad_time", bad_time),
        ("too_many_labels", labels.sum(axis=1) > schema.MAX_LABELS),  # last: see limit_labels
    ]
    for name, failed in reversed(checks):
        reason[failed] = schema.REASON_CODES.index(name)
    kept_frames = np.clip(num_frames, 0, schema.NUM_FRAMES)
    embedding = np.where((np.arange(schema.NUM_FRAMES)[None, :] < kept_frames[:, None])[:, :, None], x, 0)
    batch = {
        "file": np.full(n, file, np.int32),
        "position": np.arange(begin, begin + n, dtype=np.int64),
        "video_id": video_ids,
        "start_time_seconds": starts,
        "embedding": embedding.astype(np.uint8),
        "num_frames": kept_frames.astype(np.uint8),
        "labels": np.packbits(labels, axis=1),
        "reason": reason,
    }
    batch["uid"], batch["video_hash"] = hashes(batch["video_id"], batch["start_time_seconds"])
    return batch


def utf8_valid(video_ids) -> np.ndarray:
    """bool [N]: which byte strings are valid UTF-8 (one decode when all are: NUL never ends a
    multi-byte sequence, so the NUL-joined bytes decode iff every part does)."""
    try:
        b"\0".join(video_ids).decode("utf-8")
        return np.ones(len(video_ids), bool)
    except UnicodeDecodeError:
        pass
    ok = np.ones(len(video_ids), bool)
    for i, v in enumerate(video_ids):
        try:
            v.decode("utf-8")
        except UnicodeDecodeError:
            ok[i] = False
    return ok


def limit_labels(batch: dict, max_labels: int) -> np.ndarray:
    """The batch's reasons under --max_labels: a valid clip with more distinct labels is too_many_labels;
    one the reader marked too_many_labels (schema.MAX_LABELS, checked last) with at most max_labels is valid."""
    if max_labels == schema.MAX_LABELS:
        return batch["reason"]
    count = unpack_labels(batch["labels"]).sum(axis=1)
    code = schema.REASON_CODES.index("too_many_labels")
    reason = batch["reason"].copy()
    reason[(reason == OK) & (count > max_labels)] = code
    reason[(reason == code) & (count <= max_labels)] = OK
    return reason


def canonical_records(part: dict) -> np.ndarray:
    """Serialized SequenceExamples in the released format for rows that have no original record."""
    labels = np.unpackbits(part["labels"], axis=1)[:, :schema.NUM_CLASSES]
    return _object_array([
        schema.encode_sequence_example(part["video_id"][i], float(part["start_time_seconds"][i]),
                                       int(part["num_frames"][i]), np.flatnonzero(labels[i]).tolist(),
                                       part["embedding"][i])
        for i in range(len(labels))])


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


def _object_array(values) -> np.ndarray:
    out = np.empty(len(values), object)
    out[:] = values
    return out


def unpack_labels(packed: np.ndarray) -> np.ndarray:
    """uint8 [N, 66] -> uint8 0/1 [N, 527]."""
    return np.unpackbits(packed, axis=1)[:, :schema.NUM_CLASSES]


# --- Deduplication. --------------------------------------------------------------------------------

DEDUP_COLUMNS = ("uid", "file", "position", "video_id", "start_time_seconds", "labels", "holdout")


def find_duplicates(part: dict, conflicts: bool = False):
    """Rows that repeat an earlier clip (same video_id and start time), earlier by (file, position).

    Rows are grouped by uid (a 64-bit hash); only rows that share a uid are compared exactly, so a
    hash collision between different clips never loses one. Returns bool [N]; with conflicts, also
    bool [N]: the duplicates whose labels differ from the copy that is kept (conflicting_duplicate).
    """
    n = num_rows(part)
    duplicate, conflicting = np.zeros(n, bool), np.zeros(n, bool)
    result = (duplicate, conflicting) if conflicts else duplicate
    if n < 2:
        return result
    order = np.lexsort((part["position"], part["file"], part["uid"]))
    uid = part["uid"][order]
    same = np.flatnonzero(uid[1:] == uid[:-1])  # order[same[j] + 1] shares its uid with the row before
    if len(same) == 0:
        return result
    starts, labels = part["start_time_seconds"], part.get("labels")
    run_starts = same[np.r_[True, same[1:] != same[:-1] + 1]]
    for begin in run_starts.tolist():
        end = begin + 1
        while end < n and uid[end] == uid[begin]:
            end += 1
        kept = {}
        for row in order[begin:end].tolist():
            key = clip_key(part["video_id"][row], float(starts[row]))
            if key in kept:
                duplicate[row] = True
                conflicting[row] = labels is not None and not np.array_equal(labels[row], labels[kept[key]])
            else:
                kept[key] = row
    return result


# --- Accounting. -----------------------------------------------------------------------------------

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


def kept_stats(part: dict, duplicate: np.ndarray, conflicting: np.ndarray | None = None) -> dict:
    """Stats of the distinct clips of a dedup part (and the duplicates it rejects; `conflicting`
    ones, whose labels differ from the kept copy, as conflicting_duplicate)."""
    kept = ~duplicate
    holdout = part["holdout"] & kept
    main = ~part["holdout"] & kept
    stats = empty_stats()
    stats["main"] = unpack_labels(part["labels"][main]).sum(axis=0, dtype=np.int64)
    stats["holdout"] = unpack_labels(part["labels"][holdout]).sum(axis=0, dtype=np.int64)
    stats["main_clips"], stats["holdout_clips"] = int(main.sum()), int(holdout.sum())
    if duplicate.any():
        conflicting = np.zeros_like(duplicate) if conflicting is None else conflicting
        stats["rejected_reasons"] = {name: n for name, n in (
            ("duplicate", int((duplicate & ~conflicting).sum())),
            ("conflicting_duplicate", int(conflicting.sum()))) if n}
    return stats


def rejection(file_name: str, position: int, video_id: bytes | None, reason: str, detail: str | None = None) -> dict:
    entry = {"file": file_name, "position": int(position), "reason": reason}
    if video_id:
        entry["video_id"] = video_id.decode(errors="backslashreplace")  # a bad_video_id stays identifiable
    if detail:
        entry["detail"] = detail
    return entry


def rejections(part: dict, rows: np.ndarray, reasons, files: list[str]) -> list[dict]:
    """One dead-letter entry per row of a batch (reasons: names, or codes into REASON_CODES)."""
    rows = np.asarray(rows)
    entries = []
    for row, reason in zip(np.flatnonzero(rows) if rows.dtype == bool else rows, reasons):
        name = reason if isinstance(reason, str) else schema.REASON_CODES[int(reason)]
        entries.append(rejection(files[int(part["file"][row])], part["position"][row], part["video_id"][row], name))
    return entries


def rejected_lines(entries: list[dict]) -> bytes:
    """All dead-letter entries as JSON lines, sorted by (file, position, reason)."""
    import json

    ordered = sorted(entries, key=lambda e: (e["file"], e["position"], e["reason"]))
    return b"".join(json.dumps(e, sort_keys=True).encode() + b"\n" for e in ordered)


# --- Balanced layout. ------------------------------------------------------------------------------

BALANCED_COLUMNS = ("uid", "file", "position", "embedding", "num_frames", "labels")


def class_plan(num_clips: int, block_size: int, min_blocks: int, blocks_per_file: int) -> list[tuple[int, int]]:
    """[(first block, end block)] per file of a class with num_clips distinct clips.

    The class gets max(min_blocks, ceil(num_clips / K)) blocks and one file per blocks_per_file
    blocks of its own clips (at least one); the last file takes the remaining blocks, so all the
    cycled repeats of a rare class are in its last file.
    """
    own_blocks = -(-num_clips // block_size)
    total = max(min_blocks, own_blocks)
    files = max(1, -(-own_blocks // blocks_per_file))
    bounds = [(s * blocks_per_file, (s + 1) * blocks_per_file) for s in range(files - 1)]
    return bounds + [((files - 1) * blocks_per_file, total)]


def class_sequence(part: dict, class_index: int, seed: int, length: int) -> np.ndarray:
    """Row indices of the class's clips in block order: the clips in a pseudo-random order (a hash of
    seed, class, video id and start time; ties by file and position), then again in a fresh order,
    and so on, cut at `length`."""
    n = num_rows(part)
    pieces, have, cycle = [], 0, 0
    while have < length:
        keys = order_keys(part["uid"], seed, class_index, cycle)
        pieces.append(np.lexsort((part["position"], part["file"], keys)))
        have += n
        cycle += 1
    return np.concatenate(pieces)[:length]


def class_file_name(class_index: int, shard: int, num_shards: int) -> str:
    return f"train/class-{class_index:03d}-{shard:05d}-of-{num_shards:05d}.tfrecord"


def write_class_files(output_dir: str, class_index: int, part: dict, seed: int, block_size: int,
                      min_blocks: int, blocks_per_file: int) -> list[dict]:
    """All distinct clips of one class -> its files of blocks; returns [{class, file, blocks}]."""
    import tensorflow as tf

    n = num_rows(part)
    if n == 0:
        return []
    plan = class_plan(n, block_size, min_blocks, blocks_per_file)
    sequence = class_sequence(part, class_index, seed, plan[-1][1] * block_size)
    tf.io.gfile.makedirs(os.path.join(output_dir, "train"))
    written = []
    for shard, (first, end) in enumerate(plan):
        name = class_file_name(class_index, shard, len(plan))
        with tf.io.TFRecordWriter(os.path.join(output_dir, name)) as writer:
            for block in range(first, end):
                rows = sequence[block * block_size:(block + 1) * block_size]
                writer.write(schema.encode_block(class_index, part["embedding"][rows], part["num_frames"][rows],
                                                 unpack_labels(part["labels"][rows])))
        written.append({"class": class_index, "file": name, "blocks": end - first})
    return written


def by_class(part: dict, columns=BALANCED_COLUMNS):
    """A batch -> (class, rows of the batch that carry the class) for every class present.

    Yields parts that are slices of one gathered copy, so a clip with L labels is copied L times once.
    """
    rows, classes = np.nonzero(unpack_labels(part["labels"]))
    order = np.argsort(classes, kind="stable")
    rows, classes = rows[order], classes[order]
    gathered = take(part, rows, columns)
    bounds = np.flatnonzero(np.r_[True, classes[1:] != classes[:-1], True]) if len(classes) else []
    for begin, end in zip(bounds[:-1], bounds[1:]):
        yield int(classes[begin]), {key: value[begin:end] for key, value in gathered.items()}


# --- Plain layout. ---------------------------------------------------------------------------------

PLAIN_COLUMNS = ("video_id", "start_time_seconds", "file", "position", "record")


def plain_file_name(split: str, shard: int, num_shards: int) -> str:
    return f"{split}/part-{shard:05d}-of-{num_shards:05d}.tfrecord"


def write_plain_file(output_dir: str, name: str, part: dict) -> int:
    """Records of one plain shard, sorted by (video_id, start time; then file, position)."""
    import tensorflow as tf

    starts = part["start_time_seconds"].tolist()
    order = sorted(range(num_rows(part)), key=lambda i: (
        part["video_id"][i], math.isnan(starts[i]), 0.0 if math.isnan(starts[i]) else starts[i],
        int(part["file"][i]), int(part["position"][i])))
    tf.io.gfile.makedirs(os.path.dirname(os.path.join(output_dir, name)))
    with tf.io.TFRecordWriter(os.path.join(output_dir, name)) as writer:
        for i in order:
            writer.write(part["record"][i])
    return len(order)


# --- Manifest. -------------------------------------------------------------------------------------

def build_manifest(stats: dict, main_files: list, holdout_files: list, rejected_file: str, args: dict,
                   main_split: str, layout: str, block_size: int, holdout: bool) -> dict:
    """The summary of a finished run (see build_shards' docstring)."""
    reasons = {r: int(stats["rejected_reasons"].get(r, 0)) for r in schema.REJECT_REASONS}
    unknown = set(stats["rejected_reasons"]) - set(reasons)
    if unknown:
        raise ValueError(f"unknown reject reasons {sorted(unknown)}")
    splits = {}
    if layout == "balanced":
        class_files = [[] for _ in range(schema.NUM_CLASSES)]
        for entry in sorted(main_files, key=lambda e: e["file"]):
            class_files[entry["class"]].append(entry["file"])
        splits[main_split] = {"layout": "balanced", "clips": stats["main_clips"],
                              "class_counts": stats["main"].tolist(), "files": sorted(e["file"] for e in main_files),
                              "block_size": block_size, "blocks": sum(e["blocks"] for e in main_files),
                              "class_files": class_files}
    else:
        splits[main_split] = {"layout": "plain", "clips": stats["main_clips"],
                              "class_counts": stats["main"].tolist(), "files": sorted(main_files)}
    if holdout:
        splits["holdout"] = {"layout": "plain", "clips": stats["holdout_clips"],
                             "class_counts": stats["holdout"].tolist(), "files": sorted(holdout_files)}
    written = stats["main_clips"] + stats["holdout_clips"]
    rejected = sum(reasons.values())
    if stats["input_records"] != written + rejected:
        raise RuntimeError(f"accounting does not add up: {stats['input_records']} input records, "
                           f"{written} written, {rejected} rejected")
    return {
        "schema_version": schema.SHARD_SCHEMA_VERSION,
        "complete": True,
        "args": args,
        "input_records": stats["input_records"],
        "written_clips": written,
        "rejected": rejected,
        "rejected_reasons": reasons,
        "rejected_file": rejected_file,
        "class_counts": (stats["main"] + stats["holdout"]).tolist(),
        "splits": splits,
    }

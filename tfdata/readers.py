"""Readers for the two real input formats, both yielding the same batch of clips.

A clip batch is a dict:
  embedding          uint8   [B, 10, 128]  frames after the 10th are dropped, short clips zero-padded
  num_frames         int32   [B]           real frames, 1..10 (capped at 10)
  labels             uint8   [B, 527]      multi-hot
  video_id           string  [B]
  start_time_seconds float32 [B]           NaN when the source does not record it (research HDF5)
  reason             int32   [B]           index into schema.REASON_CODES, 0 (= "ok") for a valid clip

Readers never drop a record: they mark it with a reason and leave the choice to the caller.
All paths go through tf.io.gfile, so gs:// works wherever TensorFlow supports it.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import struct

import numpy as np
import tensorflow as tf

from tfdata import schema

_ZERO_FRAME = b"\x00" * schema.EMBEDDING_DIM
_NOT_A_SEQUENCE_EXAMPLE = schema.REASON_CODES.index("not_a_sequence_example")


def list_files(pattern: str | list[str]) -> list[str]:
    """Sorted files matching a glob (or comma-separated globs, or a list); fails when none match."""
    patterns = pattern.split(",") if isinstance(pattern, str) else list(pattern)
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p.strip())})
    if not files:
        raise FileNotFoundError(f"no files match {pattern!r}")
    return files


def file_problem(path: str) -> str | None:
    """Why an input path is not a readable regular file, or None. Never opens anything but a regular
    file (a FIFO would block), so a directory, FIFO, socket, device, dangling symlink, symlink loop or
    unreadable file is named before any reader touches it. gs:// paths are not checked (None)."""
    if "://" in path:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ENOENT and os.path.islink(path):
            return "a dangling symbolic link"
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"cannot be read ({e.strerror})"
    if stat.S_ISDIR(mode):
        return "a directory, not a file"
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
        return f"{kind}, not a regular file"
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    return None


def tfrecord_length_problem(path: str) -> tuple[int, str] | None:
    """(record position, message) of the first record whose length field claims more bytes than the
    file has left, else None. TensorFlow's record readers allocate what a length field claims before
    checking it (a length of 2**62 with a valid header CRC crashes the process), so every reader of
    TFRecords checks here first. One seek per record; *.gz files are decompressed to check them."""
    import gzip

    local = "://" not in path
    with open(path, "rb") if local else tf.io.gfile.GFile(path, "rb") as raw:
        f = gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
        size = None if path.endswith(".gz") else os.fstat(raw.fileno()).st_size if local else raw.size()
        at, position = 0, 0
        while True:
            header = f.read(12)
            if len(header) < 12:
                return None  # end of file, or a truncated header: the readers report that themselves
            (length,) = struct.unpack_from("<Q", header)
            end = at + 12 + length + 4
            if size is None:  # gzip: a forward seek stops at the end of the data
                fits, left = f.seek(length + 4, 1) == end, "fewer"
            else:
                fits, left = end <= size, size - at - 12
            if not fits:
                return position, f"record {position} claims {length} bytes, {left} left in the file"
            if size is not None:
                f.seek(end)  # GFile cannot seek past the end: only after the check
            at, position = end, position + 1


def check_tfrecord_files(files: list[str]) -> None:
    """Raises ValueError naming the first file that is not a regular readable file or has a record
    whose length field overruns the file (see tfrecord_length_problem); cheap: headers only."""
    for path in files:
        problem = file_problem(path)
        if problem:
            raise ValueError(f"{path}: {problem}; remove it or narrow the input glob")
        overrun = tfrecord_length_problem(path)
        if overrun:
            raise ValueError(f"{path}: truncated record or corrupt length field ({overrun[1]}); the file is "
                             "damaged: re-download or rebuild it")


_CONTEXT_SPEC = {
    schema.VIDEO_ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    schema.START_TIME_KEY: tf.io.FixedLenFeature([], tf.float32, default_value=float("nan")),
    schema.END_TIME_KEY: tf.io.RaggedFeature(tf.float32),  # optional: [] when absent
    schema.LABELS_KEY: tf.io.RaggedFeature(tf.int64),
}
_SEQUENCE_SPEC = {schema.EMBEDDING_KEY: tf.io.RaggedFeature(tf.string)}


@tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
def parse_sequence_examples(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses and validates a batch of serialized AudioSet SequenceExamples at once.

    Raises InvalidArgumentError if any record is not a SequenceExample (or has a key of the
    wrong type); :func:`parse_records` isolates such records.
    """
    context, sequence, _ = tf.io.parse_sequence_example(
        serialized, context_features=_CONTEXT_SPEC, sequence_features=_SEQUENCE_SPEC)
    values = sequence[schema.EMBEDDING_KEY]  # ragged string [B, (T), (values per frame)]
    label_ids = context[schema.LABELS_KEY]  # ragged int64 [B, (L)]
    n = tf.shape(serialized)[0]

    frame_values = values.values  # ragged [F, (V)], F = all frames of the batch
    frames = tf.RaggedTensor.from_row_splits(
        tf.strings.reduce_join(frame_values, axis=1), values.row_splits)  # ragged string [B, (T)]
    frame_ok = (tf.equal(frame_values.row_lengths(), 1)
                & tf.equal(tf.strings.length(frames.flat_values), schema.EMBEDDING_DIM))  # [F]
    decoded = tf.io.decode_raw(tf.where(frame_ok, frames.flat_values, _ZERO_FRAME), tf.uint8)
    decoded = tf.reshape(decoded, [-1, schema.EMBEDDING_DIM])  # [F, 128], also when F = 0
    embedding = frames.with_flat_values(decoded)[:, :schema.NUM_FRAMES]  # ragged [B, (<=10), 128]
    embedding = embedding.to_tensor(shape=[None, schema.NUM_FRAMES, schema.EMBEDDING_DIM])  # [B, 10, 128]
    total_frames = tf.cast(frames.row_lengths(), tf.int32)  # [B]

    in_range = (label_ids.flat_values >= 0) & (label_ids.flat_values < schema.NUM_CLASSES)  # [L_total]
    indices = tf.stack([tf.cast(label_ids.value_rowids(), tf.int64),
                        tf.where(in_range, label_ids.flat_values, 0)], 1)  # [L_total, 2]
    hits = tf.scatter_nd(indices, tf.cast(in_range, tf.int32), [tf.cast(n, tf.int64), schema.NUM_CLASSES])
    labels = tf.cast(tf.minimum(hits, 1), tf.uint8)  # [B, 527]
    video_id = context[schema.VIDEO_ID_KEY]
    start = context[schema.START_TIME_KEY]  # NaN when missing
    end = context[schema.END_TIME_KEY]  # ragged [B, (0 or 1)]
    end_bad = tf.reduce_any(~tf.math.is_finite(end) | (end < start[:, None]), axis=1) | (end.row_lengths() > 1)

    checks = [  # (reason, failed [B]) in order of precedence
        ("missing_video_id", tf.equal(video_id, "")),
        ("bad_video_id", tf.not_equal(video_id, tf.strings.unicode_transcode(
            video_id, "UTF-8", "UTF-8", errors="replace"))),
        ("missing_labels", tf.equal(label_ids.row_lengths(), 0)),
        ("no_frames", tf.equal(total_frames, 0)),
        ("too_many_frames", total_frames > schema.NUM_FRAMES),
        ("bad_frame_length", tf.reduce_any(frames.with_flat_values(~frame_ok), axis=1)),
        ("label_out_of_range", tf.reduce_any(label_ids.with_flat_values(~in_range), axis=1)),
        ("bad_time", ~tf.math.is_finite(start) | (start < 0) | end_bad),
        # last, so that the Beam job's --max_labels can lift it (core.limit_labels)
        ("too_many_labels", tf.reduce_sum(tf.cast(labels, tf.int32), axis=1) > schema.MAX_LABELS),
    ]
    reason = tf.zeros([n], tf.int32)
    for name, failed in reversed(checks):
        reason = tf.where(failed, schema.REASON_CODES.index(name), reason)
    return {
        "embedding": embedding,
        "num_frames": tf.minimum(total_frames, schema.NUM_FRAMES),
        "labels": labels,
        "video_id": video_id,
        "start_time_seconds": start,
        "reason": reason,
    }


def parse_records(records: list[bytes]) -> dict[str, np.ndarray]:
    """:func:`parse_sequence_examples` for Python callers (the Beam job), as numpy arrays.

    Parses the whole list in one call; only if that fails does it parse record by record to
    mark the ones that are not SequenceExamples, so one bad record costs one batch a slow path.
    """
    try:
        return _to_numpy(parse_sequence_examples(tf.constant(records, tf.string)))
    except tf.errors.InvalidArgumentError:
        pass
    parts = []
    for record in records:
        try:
            parts.append(_to_numpy(parse_sequence_examples(tf.constant([record], tf.string))))
        except tf.errors.InvalidArgumentError:
            parts.append(_unparseable())
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


_CLIP_DTYPES = {"embedding": tf.uint8, "num_frames": tf.int32, "labels": tf.uint8, "video_id": tf.string,
                "start_time_seconds": tf.float32, "reason": tf.int32}
_CLIP_SHAPES = {"embedding": [None, schema.NUM_FRAMES, schema.EMBEDDING_DIM], "labels": [None, schema.NUM_CLASSES]}


def parse_tolerant(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """:func:`parse_sequence_examples` for tf.data that marks records that are not SequenceExamples
    (reason not_a_sequence_example) instead of failing the whole batch; via tf.py_function, so the
    vectorized parse stays the fast path and only a batch holding such a record is parsed one by one."""
    keys = list(_CLIP_DTYPES)

    def parse(records: tf.Tensor) -> list:
        try:
            clips = parse_sequence_examples(records)
        except tf.errors.InvalidArgumentError:
            clips = parse_records(list(records.numpy()))
        return [clips[key] for key in keys]

    values = tf.py_function(parse, [serialized], [_CLIP_DTYPES[key] for key in keys])
    clips = dict(zip(keys, values))
    for key, value in clips.items():
        value.set_shape(_CLIP_SHAPES.get(key, [None]))
    return clips


def _to_numpy(batch: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in batch.items()}


def _unparseable() -> dict[str, np.ndarray]:
    return {
        "embedding": np.zeros([1, schema.NUM_FRAMES, schema.EMBEDDING_DIM], np.uint8),
        "num_frames": np.zeros([1], np.int32),
        "labels": np.zeros([1, schema.NUM_CLASSES], np.uint8),
        "video_id": np.array([b""], object),
        "start_time_seconds": np.array([np.nan], np.float32),
        "reason": np.array([_NOT_A_SEQUENCE_EXAMPLE], np.int32),
    }


def read_tfrecords(pattern: str | list[str], batch_size: int = 1024,
                   num_parallel_reads: int = tf.data.AUTOTUNE) -> tf.data.Dataset:
    """Original AudioSet TFRecords (or plain shards) -> batches of clips, in file order.

    Records are batched before parsing so that parsing is one vectorized op per batch.
    A file that cannot be read to its end (truncated, bad CRC) raises DataLossError naming it.
    """
    files = list_files(pattern)
    check_tfrecord_files(files)
    records = tf.data.TFRecordDataset(files, num_parallel_reads=num_parallel_reads)
    return (records.batch(batch_size)
            .map(parse_tolerant, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def read_hdf5(path: str, batch_size: int = 1024) -> tf.data.Dataset:
    """The research code's packed HDF5 (x, y, video_id_list) -> batches of clips, streaming.

    h5py reads `batch_size` rows of every column at a time (one slice per column, no per-row
    Python) and hands the whole batch to tf.data. Files written by this project also carry
    `num_frames` and `start_time_seconds`; for the research code's own files, num_frames is the
    number of frames up to the last one that is not all zeros (the research code zero-padded short
    clips; a real all-zero frame has probability ~0) and start_time_seconds is NaN.
    """
    optional = [name for name in (schema.H5_NUM_FRAMES, schema.H5_START_TIME) if name in hdf5_datasets(path)]
    columns = {"embedding": schema.H5_EMBEDDING, "labels": schema.H5_LABELS, "video_id": schema.H5_VIDEO_ID,
               **{name: name for name in optional}}
    dtypes = {"embedding": np.uint8, "labels": np.bool_, "video_id": object,
              schema.H5_NUM_FRAMES: np.int32, schema.H5_START_TIME: np.float32}

    def batches():
        import h5py

        with tf.io.gfile.GFile(path, "rb") as f, h5py.File(f, "r") as h5:
            rows = h5[schema.H5_EMBEDDING].shape[0]
            for begin in range(0, rows, batch_size):
                yield {key: h5[name][begin:begin + batch_size].astype(dtypes[key]) for key, name in columns.items()}

    shapes = {"embedding": [None, schema.NUM_FRAMES, schema.EMBEDDING_DIM], "labels": [None, schema.NUM_CLASSES]}
    signature = {key: tf.TensorSpec(shapes.get(key, [None]), tf.as_dtype(np.dtype(dtypes[key])) if key != "video_id"
                                    else tf.string) for key in columns}
    return (tf.data.Dataset.from_generator(batches, output_signature=signature)
            .map(_finish_hdf5_batch, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def hdf5_datasets(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Checks the research HDF5 layout; returns {dataset: (shape, dtype)}. Raises ValueError."""
    import h5py

    problem = file_problem(path)
    if problem:
        raise ValueError(f"{path}: {problem}")
    integral_frames = True
    try:
        with tf.io.gfile.GFile(path, "rb") as f, h5py.File(f, "r") as h5:
            # Members that are not datasets (groups, links to nothing) are not part of the layout: ignored.
            datasets = {name: h5.get(name) for name in h5.keys()}
            found = {name: (d.shape, d.dtype) for name, d in datasets.items() if isinstance(d, h5py.Dataset)}
            frames = datasets.get(schema.H5_NUM_FRAMES)
            if schema.H5_NUM_FRAMES in found and found[schema.H5_NUM_FRAMES][1].kind == "f":
                values = frames[()]
                integral_frames = bool(np.all(np.isfinite(values) & (values == np.round(values))))
    except (OSError, KeyError, RuntimeError) as e:  # not HDF5, truncated, damaged
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from None
    missing = [k for k in (schema.H5_EMBEDDING, schema.H5_LABELS, schema.H5_VIDEO_ID) if k not in found]
    if missing:
        raise ValueError(f"{path}: HDF5 file has no dataset {', '.join(missing)}")
    (x_shape, x_dtype), (y_shape, y_dtype), (v_shape, v_dtype) = (
        found[schema.H5_EMBEDDING], found[schema.H5_LABELS], found[schema.H5_VIDEO_ID])
    n = x_shape[0]
    expected = [
        (x_shape[1:] == (schema.NUM_FRAMES, schema.EMBEDDING_DIM) and x_dtype == np.uint8,
         f"x is {x_dtype} {x_shape}, expected uint8 [N, {schema.NUM_FRAMES}, {schema.EMBEDDING_DIM}]"),
        (y_shape == (n, schema.NUM_CLASSES) and y_dtype in (np.bool_, np.uint8),
         f"y is {y_dtype} {y_shape}, expected bool [{n}, {schema.NUM_CLASSES}]"),
        (v_shape == (n,) and v_dtype.kind == "S", f"video_id_list is {v_dtype} {v_shape}, expected bytes [{n}]"),
    ]
    for name in (schema.H5_NUM_FRAMES, schema.H5_START_TIME):
        if name in found:
            expected.append((found[name][0] == (n,), f"{name} has shape {found[name][0]}, expected [{n}]"))
            expected.append((found[name][1].kind in "iuf", f"{name} is {found[name][1]}, expected numbers"))
    expected.append((integral_frames, f"{schema.H5_NUM_FRAMES} holds values that are not whole numbers "
                                      "(e.g. 9.5 or NaN), expected integers"))
    problems = [message for ok, message in expected if not ok]
    if problems:
        raise ValueError(f"{path}: {'; '.join(problems)}")
    return found


def _finish_hdf5_batch(columns: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    embedding = columns["embedding"]  # uint8 [B, 10, 128]
    if schema.H5_NUM_FRAMES in columns:
        num_frames = columns[schema.H5_NUM_FRAMES]
    else:
        nonzero = tf.reduce_any(embedding > 0, axis=2)  # [B, 10]
        positions = tf.range(1, schema.NUM_FRAMES + 1) * tf.cast(nonzero, tf.int32)  # [B, 10]
        num_frames = tf.reduce_max(positions, axis=1)  # [B]
    n = tf.shape(embedding)[0]
    start = columns.get(schema.H5_START_TIME, tf.fill([n], float("nan")))
    reason = tf.where(tf.equal(num_frames, 0), schema.REASON_CODES.index("no_frames"), 0)
    reason = tf.where(tf.reduce_any(columns["labels"], axis=1), reason,
                      schema.REASON_CODES.index("missing_labels"))
    reason = tf.where(tf.equal(columns["video_id"], ""), schema.REASON_CODES.index("missing_video_id"), reason)
    return {
        "embedding": embedding,
        "num_frames": num_frames,
        "labels": tf.cast(columns["labels"], tf.uint8),
        "video_id": columns["video_id"],
        "start_time_seconds": start,
        "reason": reason,
    }


def error_message(error: Exception) -> str:
    """One line for a user: a TensorFlow error without its graph-node prefix and op suffix."""
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text, flags=re.S)
    return text.strip().splitlines()[0]


def find_data_loss(files: list[str]) -> str:
    """Names the first file that cannot be read to its end, after tf.data raised DataLossError.

    TFRecordDataset's error does not say which file failed; this reads the files one by one.
    """
    for path in files:
        try:
            for _ in tf.data.TFRecordDataset(path, buffer_size=1 << 20):
                pass
        except tf.errors.DataLossError as e:
            return f"{path}: {error_message(e)}"
    return f"one of {len(files)} files could not be read to its end"

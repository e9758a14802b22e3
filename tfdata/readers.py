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

import numpy as np
import tensorflow as tf

from tfdata import schema

# The parse, the reject checks and the input-file checks are the wire format's: they live in schema.
# Re-exported, as the readers' API (evaluate.py, predict.py and models use them from here).
list_files = schema.list_files
file_problem = schema.file_problem
tfrecord_length_problem = schema.tfrecord_length_problem
hdf5_datasets = schema.hdf5_datasets
parse_sequence_examples = schema.parse_sequence_examples
parse_records = schema.parse_records
error_message = schema.error_message


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


_CLIP_DTYPES = {"embedding": tf.uint8, "num_frames": tf.int32, schema.LABELS_KEY: tf.uint8,
                schema.VIDEO_ID_KEY: tf.string, schema.START_TIME_KEY: tf.float32, "reason": tf.int32}
_CLIP_SHAPES = {"embedding": [None, schema.NUM_FRAMES, schema.EMBEDDING_DIM],
                schema.LABELS_KEY: [None, schema.NUM_CLASSES]}


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
    columns = {"embedding": schema.H5_EMBEDDING, schema.LABELS_KEY: schema.H5_LABELS,
               schema.VIDEO_ID_KEY: schema.H5_VIDEO_ID, **{name: name for name in optional}}
    dtypes = {"embedding": np.uint8, schema.LABELS_KEY: np.bool_, schema.VIDEO_ID_KEY: object,
              schema.H5_NUM_FRAMES: np.int32, schema.H5_START_TIME: np.float32}

    def batches():
        import h5py

        with tf.io.gfile.GFile(path, "rb") as f, h5py.File(f, "r") as h5:
            rows = h5[schema.H5_EMBEDDING].shape[0]
            for begin in range(0, rows, batch_size):
                yield {key: h5[name][begin:begin + batch_size].astype(dtypes[key]) for key, name in columns.items()}

    signature = {key: tf.TensorSpec(_CLIP_SHAPES.get(key, [None]), tf.string if key == schema.VIDEO_ID_KEY
                                    else tf.as_dtype(np.dtype(dtypes[key]))) for key in columns}
    return (tf.data.Dataset.from_generator(batches, output_signature=signature)
            .map(_finish_hdf5_batch, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


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
    facts = {"video_id_length": tf.strings.length(columns[schema.VIDEO_ID_KEY]),  # the checks this layout allows
             "num_label_ids": tf.reduce_sum(tf.cast(columns[schema.LABELS_KEY], tf.int32), axis=1),
             "total_frames": num_frames}
    reason = schema.reason_codes(facts, tf.where)
    return {
        "embedding": embedding,
        "num_frames": num_frames,
        schema.LABELS_KEY: tf.cast(columns[schema.LABELS_KEY], tf.uint8),
        schema.VIDEO_ID_KEY: columns[schema.VIDEO_ID_KEY],
        schema.START_TIME_KEY: start,
        "reason": reason,
    }


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

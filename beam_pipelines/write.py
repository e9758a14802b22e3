"""Writing: the plain layout (eval and holdout splits: the original records, each clip once, sharded
by a hash of the video id and sorted in each file) and the dead-letter file rejected/rejected.jsonl.
"""

from __future__ import annotations

import json
import math
import os
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.io import filesystems

from beam_pipelines import clips, literal_pattern, shuffle
from tfdata import schema


PLAIN_COLUMNS = (schema.VIDEO_ID_KEY, schema.START_TIME_KEY, "file", "position", "record")


def plain_file_name(split: str, shard: int, num_shards: int) -> str:
    return f"{split}/part-{shard:05d}-of-{num_shards:05d}.tfrecord"


def write_plain_file(output_dir: str, name: str, part: dict) -> int:
    """Records of one plain shard, sorted by (video_id, start time; then file, position)."""
    import tensorflow as tf

    starts = part[schema.START_TIME_KEY].tolist()
    order = sorted(range(clips.num_rows(part)), key=lambda i: (
        part[schema.VIDEO_ID_KEY][i], math.isnan(starts[i]), 0.0 if math.isnan(starts[i]) else starts[i],
        int(part["file"][i]), int(part["position"][i])))
    tf.io.gfile.makedirs(os.path.dirname(os.path.join(output_dir, name)))
    with tf.io.TFRecordWriter(os.path.join(output_dir, name)) as writer:
        for i in order:
            writer.write(part["record"][i])
    return len(order)


def canonical_records(part: dict) -> np.ndarray:
    """Serialized SequenceExamples in the released format for rows that have no original record."""
    labels = np.unpackbits(part[schema.LABELS_KEY], axis=1)[:, :schema.NUM_CLASSES]
    return clips.object_array([
        schema.encode_sequence_example(part[schema.VIDEO_ID_KEY][i], float(part[schema.START_TIME_KEY][i]),
                                       int(part["num_frames"][i]), np.flatnonzero(labels[i]).tolist(),
                                       part["embedding"][i])
        for i in range(len(labels))])


def _plain_route(holdout: bool, num_shards: int):
    """Each clip of one side of the holdout split to its plain shard (by video id)."""
    def route(batch: dict):
        rows = np.flatnonzero(batch["holdout"] if holdout else ~batch["holdout"])
        if len(rows) == 0:
            return None
        if "record" in batch:
            columns = {key: batch[key] for key in PLAIN_COLUMNS}
        else:  # HDF5 input: serialize canonical SequenceExamples of these rows only
            part = clips.take(batch, rows)
            columns = {key: part[key] for key in PLAIN_COLUMNS[:-1]} | {"record": canonical_records(part)}
            return columns, np.arange(len(rows)), clips.plain_shard(part["video_hash"], num_shards)
        return columns, rows, clips.plain_shard(batch["video_hash"][rows], num_shards)
    return route


class _WritePlain(beam.DoFn):
    def __init__(self, output_dir: str, split: str, num_shards: int):
        self._output_dir, self._split, self._num_shards = output_dir, split, num_shards
        self._duplicates = shuffle.Duplicates()

    def process(self, element, duplicates):
        shard, parts = element
        part = self._duplicates.drop(shuffle.load_parts(parts), duplicates)
        if clips.num_rows(part):
            name = plain_file_name(self._split, shard, self._num_shards)
            clips.counter(f"{self._split}_records_written").inc(write_plain_file(self._output_dir, name, part))
            yield name


class WritePlainShards(beam.PTransform):
    """(valid clip batches, duplicates) -> `{split}/part-i-of-n.tfrecord`: the original records of one
    side of the holdout split, each clip once, shard by a hash of the video id, each file sorted by
    (video_id, start time). Outputs the names of the files written (shards without clips are not)."""

    def __init__(self, output_dir: str, split: str, num_shards: int, holdout: bool, spill_dir: str | None = None,
                 buffer_bytes: int = 256 << 20):
        super().__init__()
        self._output_dir, self._split, self._num_shards, self._holdout = output_dir, split, num_shards, holdout
        self._buffer = (spill_dir, buffer_bytes)

    def expand(self, valid_and_duplicates):
        valid, duplicates = valid_and_duplicates
        return (valid
                | "ByShard" >> beam.ParDo(shuffle.BufferedParts(_plain_route(self._holdout, self._num_shards),
                                                          *self._buffer)).with_output_types(shuffle.KeyedPart)
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteFiles" >> beam.ParDo(_WritePlain(self._output_dir, self._split, self._num_shards),
                                             duplicates=beam.pvalue.AsList(duplicates)))


REJECTED_FILE = "rejected/rejected.jsonl"


def rejected_lines(entries: list[dict]) -> bytes:
    """All dead-letter entries as JSON lines, sorted by (file, position, reason)."""
    ordered = sorted(entries, key=lambda e: (e["file"], e["position"], e["reason"]))
    return b"".join(json.dumps(e, sort_keys=True).encode() + b"\n" for e in ordered)


class WriteRejected(beam.PTransform):
    """Lists of dead-letter entries -> OUT/rejected/rejected.jsonl, sorted by (file, position); outputs its name."""

    def __init__(self, output_dir: str):
        super().__init__()
        self._output_dir = output_dir

    def expand(self, entry_lists):
        def write(_, lists):
            entries = [entry for entries in lists for entry in entries]
            path = os.path.join(self._output_dir, REJECTED_FILE)
            write_atomically(path, rejected_lines(entries))
            clips.counter("rejected_entries_written").inc(len(entries))
            return REJECTED_FILE

        return (entry_lists.pipeline
                | "Once" >> beam.Create([None])
                | "Write" >> beam.Map(write, lists=beam.pvalue.AsList(entry_lists)))


def write_atomically(path: str, data: bytes) -> None:
    """Writes a file through a temporary name beside it and a rename (Beam's FileSystems: local or
    gs://), so a reader finds the whole file or none."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with filesystems.FileSystems.create(tmp) as f:
            f.write(data)
        filesystems.FileSystems.rename([tmp], [path])
    except BaseException:
        try:
            filesystems.FileSystems.delete([tmp])
        except Exception:  # noqa: BLE001 -- nothing left to clean up
            pass
        raise


def delete_tree(path: str) -> None:
    """Deletes a directory and everything under it (local, or a gs:// prefix through Beam's FileSystems)."""
    if "://" not in path:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    elif filesystems.FileSystems.match([literal_pattern(path.rstrip("/")) + "/**"])[0].metadata_list:
        filesystems.FileSystems.delete([path.rstrip("/") + "/"])

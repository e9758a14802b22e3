"""The balanced layout of the train split: per class, files of blocks of K clips that all carry the
class (the block bytes are tfdata.schema.encode_block's). A class's clips are put in a pseudo-random
order (a hash of seed, class, video id and start time) and cycled until the class fills at least
--min_blocks_per_class blocks; one file per --blocks_per_file blocks of the class's own clips.
"""

from __future__ import annotations

import os

import apache_beam as beam
import numpy as np

from beam_pipelines import clips, shuffle
from tfdata import schema


BALANCED_COLUMNS = ("uid", "file", "position", "embedding", "num_frames", schema.LABELS_KEY)


def class_sequence(part: dict, class_index: int, seed: int, length: int) -> np.ndarray:
    """Row indices of the class's clips in block order: the clips in a pseudo-random order (a hash of
    seed, class, video id and start time; ties by file and position), then again in a fresh order,
    and so on, cut at `length`."""
    n = clips.num_rows(part)
    pieces, have, cycle = [], 0, 0
    while have < length:
        keys = clips.order_keys(part["uid"], seed, class_index, cycle)
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

    n = clips.num_rows(part)
    if n == 0:
        return []
    plan = schema.class_plan(n, block_size, min_blocks, blocks_per_file)
    sequence = class_sequence(part, class_index, seed, plan[-1][1] * block_size)
    tf.io.gfile.makedirs(os.path.join(output_dir, "train"))
    written = []
    for shard, (first, end) in enumerate(plan):
        name = class_file_name(class_index, shard, len(plan))
        with tf.io.TFRecordWriter(os.path.join(output_dir, name)) as writer:
            for block in range(first, end):
                rows = sequence[block * block_size:(block + 1) * block_size]
                writer.write(schema.encode_block(class_index, part["embedding"][rows], part["num_frames"][rows],
                                                 clips.unpack_labels(part[schema.LABELS_KEY][rows])))
        written.append({"class": class_index, "file": name, "blocks": end - first})
    return written


def _balanced_route(batch: dict):
    """Each training clip to each of its classes."""
    labels = clips.unpack_labels(batch[schema.LABELS_KEY])  # [N, 527]
    labels[batch["holdout"]] = 0
    rows, classes = np.nonzero(labels)
    return {key: batch[key] for key in BALANCED_COLUMNS}, rows, classes


class _WriteClass(beam.DoFn):
    def __init__(self, output_dir: str, seed: int, block_size: int, min_blocks: int, blocks_per_file: int):
        self._output_dir, self._args = output_dir, (seed, block_size, min_blocks, blocks_per_file)
        self._duplicates = shuffle.Duplicates()

    def process(self, element, duplicates):
        class_index, parts = element
        part = self._duplicates.drop(shuffle.load_parts(parts), duplicates)
        written = write_class_files(self._output_dir, class_index, part, *self._args)
        clips.counter("classes_written").inc()
        clips.counter("class_files_written").inc(len(written))
        clips.counter("blocks_written").inc(sum(e["blocks"] for e in written))
        yield from written


class WriteBalancedShards(beam.PTransform):
    """(valid clip batches, duplicates) -> the train split's per-class files of blocks
    (write_class_files); outputs {class, file, blocks} per file. The shuffle moves, per class,
    only uid, file, position, embedding, num_frames and packed labels (1.4 kB per clip and label)."""

    def __init__(self, output_dir: str, seed: int, block_size: int, min_blocks: int, blocks_per_file: int,
                 spill_dir: str | None = None, buffer_bytes: int = 256 << 20):
        super().__init__()
        self._write = (output_dir, seed, block_size, min_blocks, blocks_per_file)
        self._buffer = (spill_dir, buffer_bytes)

    def expand(self, valid_and_duplicates):
        valid, duplicates = valid_and_duplicates
        return (valid
                | "ByClass" >> beam.ParDo(shuffle.BufferedParts(_balanced_route, *self._buffer))
                .with_output_types(shuffle.KeyedPart)
                | "GroupByClass" >> beam.GroupByKey()
                | "WriteClassFiles" >> beam.ParDo(_WriteClass(*self._write),
                                                  duplicates=beam.pvalue.AsList(duplicates)))

"""Composite PTransforms of the shard-building job, each labelled and counted (namespace build_shards).

Elements are batches of clips (dicts of numpy arrays, see beam_pipelines.core), never single clips:
reading yields ~1,000 records per element. The three steps that bring clips together by a key
(deduplication by clip, the per-class grouping, plain shards) go through _BufferedParts: it keeps
the batches' columns until ~256 MB are buffered, then sorts the rows by key once and emits one
part per key, so a shuffle moves a few hundred large elements per 256 MB instead of one per clip.
By default the parts themselves are written to spill files under OUT/_tmp (one file per flush) and
only (key, file, offset) references are shuffled; WriteManifest deletes OUT/_tmp at the end.

The DAG: Read -> Parse -> Validate -> {Deduplicate, Write<main split>, WriteHoldout}. The writers
drop the records that Deduplicate found to repeat an earlier one (a side input, usually empty), so
no clip batch waits for the whole input to be deduplicated; WriteRejected, Summarize and
WriteManifest run last, on side inputs.
"""

from __future__ import annotations

import json
import os
import pickle
import typing
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.io import filesystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from beam_pipelines import core
from tfdata import schema

NAMESPACE = "build_shards"


def _counter(name: str):
    return beam.metrics.Metrics.counter(NAMESPACE, name)


class ClipPart(dict):
    """A part of a clip batch (column -> numpy array) on its way through a shuffle."""


class SpilledPart(typing.NamedTuple):
    """A ClipPart written into a spill file (pickled, at offset); the shuffle moves only this reference."""
    path: str
    offset: int
    length: int
    rows: int


class ClipPartCoder(beam.coders.Coder):
    """Pickle protocol 5 (numpy arrays as raw buffers: about 5x faster than Beam's default coder),
    for a ClipPart or a SpilledPart."""

    def encode(self, value):
        return pickle.dumps(value, protocol=5)

    def decode(self, encoded):
        return pickle.loads(encoded)

    def is_deterministic(self):
        return False

    def to_type_hint(self):
        return ClipPart


beam.coders.registry.register_coder(ClipPart, ClipPartCoder)
KeyedPart = typing.Tuple[int, ClipPart]


def _load_parts(values) -> dict:
    """The values of one key after a shuffle (ClipParts or SpilledParts) -> one part."""
    parts = []
    for value in sorted(values, key=lambda v: (v.path, v.offset) if isinstance(v, SpilledPart) else ("", 0)):
        if isinstance(value, SpilledPart):
            with filesystems.FileSystems.open(value.path, compression_type="uncompressed") as f:
                f.seek(value.offset)
                value = pickle.loads(f.read(value.length))
        parts.append(dict(value))
    return core.concat(parts)


# --- Reading ----------------------------------------------------------------------------------------

class _ReadTFRecordGroup(beam.DoFn):
    """A group of input files -> raw batches {file, position, records}; unreadable data -> entries."""

    def __init__(self, files: list[str], batch_size: int):
        self._files, self._batch_size = files, batch_size

    def process(self, group: list[int]):
        files, positions, records = [], [], []
        for index in group:
            path = self._files[index]
            for position, record, problem in core.read_tfrecord_file(path):
                if problem:
                    _counter("unreadable_records").inc()
                    yield beam.pvalue.TaggedOutput("unreadable", core.rejection(
                        path, position, None, "unreadable_data", problem))
                    continue
                files.append(index)
                positions.append(position)
                records.append(record)
                if len(records) == self._batch_size:
                    yield {"file": np.array(files, np.int32), "position": np.array(positions, np.int64),
                           "records": records}
                    files, positions, records = [], [], []
            _counter("files_read").inc()
        if records:
            yield {"file": np.array(files, np.int32), "position": np.array(positions, np.int64), "records": records}


class ReadTFRecords(beam.PTransform):
    """Input TFRecord files -> `batches` of serialized records with file index and position, and
    `unreadable` dead-letter entries (a record whose data CRC fails; the rest of a file that cannot
    be framed). Files are read in groups of about group_bytes, so small files share a batch."""

    def __init__(self, files: list[str], sizes: list[int], batch_size: int, group_bytes: int = 4 << 20):
        super().__init__()
        self._files, self._batch_size = files, batch_size
        self._groups = core.group_files(sizes, group_bytes)

    def expand(self, pbegin):
        read = (pbegin
                | "FileGroups" >> beam.Create(self._groups, reshuffle=False)
                | "Distribute" >> beam.Reshuffle()
                | "ReadFiles" >> beam.ParDo(_ReadTFRecordGroup(self._files, self._batch_size)).with_outputs(
                    "unreadable", main="batches"))
        return {"batches": read.batches, "unreadable": read.unreadable}


class _ParseBatch(beam.DoFn):
    def process(self, raw: dict):
        _counter("input_records").inc(len(raw["records"]))
        _counter("parsed_batches").inc()
        yield core.parse_batch(raw["records"], raw["file"], raw["position"])


class ParseRecords(beam.PTransform):
    """Raw batches -> clip batches: one vectorized TF parse (readers.parse_records) per batch."""

    def expand(self, raw_batches):
        return raw_batches | "Parse" >> beam.ParDo(_ParseBatch())


def hdf5_row_ranges(files: list[str], rows_per_range: int) -> list[tuple[int, int, int]]:
    """(file index, begin, end) row ranges of research HDF5 files; checks each layout (ValueError)."""
    from tfdata import readers

    ranges = []
    for index, path in enumerate(files):
        n = readers.hdf5_datasets(path)[schema.H5_EMBEDDING][0][0]
        ranges += [(index, b, min(b + rows_per_range, n)) for b in range(0, n, rows_per_range)]
    return ranges


class _ReadHdf5Range(beam.DoFn):
    def __init__(self, files: list[str]):
        self._files = files

    def process(self, row_range: tuple[int, int, int]):
        import h5py

        index, begin, end = row_range
        path = self._files[index]
        source = filesystems.FileSystems.open(path) if "://" in path else open(path, "rb")
        with source as f, h5py.File(f, "r") as h5:
            columns = [h5[name][begin:end] if isinstance(h5.get(name), h5py.Dataset) else None for name in (
                schema.H5_EMBEDDING, schema.H5_LABELS, schema.H5_VIDEO_ID, schema.H5_NUM_FRAMES, schema.H5_START_TIME)]
        _counter("input_records").inc(end - begin)
        yield core.hdf5_batch(*columns, file=index, begin=begin)


class ReadHdf5(beam.PTransform):
    """Research HDF5 files -> clip batches, row ranges read with h5py so that workers share a file."""

    def __init__(self, files: list[str], rows_per_range: int):
        super().__init__()
        self._files, self._ranges = files, hdf5_row_ranges(files, rows_per_range)

    def expand(self, pbegin):
        return (pbegin
                | "RowRanges" >> beam.Create(self._ranges, reshuffle=False)
                | "Distribute" >> beam.Reshuffle()
                | "ReadRows" >> beam.ParDo(_ReadHdf5Range(self._files)))


# --- Validation and splits --------------------------------------------------------------------------

class _Validate(beam.DoFn):
    def __init__(self, files: list[str], holdout_fraction: float, max_labels: int = schema.MAX_LABELS):
        self._files, self._threshold, self._max_labels = files, np.uint64(0), max_labels
        self._holdout = holdout_fraction > 0
        if self._holdout:
            self._threshold = np.uint64(min(core.holdout_threshold(holdout_fraction), 2 ** 64 - 1))

    def process(self, batch: dict):
        batch = dict(batch, reason=core.limit_labels(batch, self._max_labels))
        valid = batch["reason"] == core.OK
        stats = core.empty_stats()
        stats["input_records"] = len(valid)
        stats["rejected_reasons"] = core.reason_counts(batch["reason"])
        if not valid.all():
            bad = np.flatnonzero(~valid)
            for reason, n in stats["rejected_reasons"].items():
                _counter(f"rejected_{reason}").inc(n)
            yield beam.pvalue.TaggedOutput("rejected", core.rejections(batch, bad, batch["reason"][bad], self._files))
        yield beam.pvalue.TaggedOutput("stats", stats)
        if valid.any():
            clips = core.take(batch, valid) if not valid.all() else dict(batch)
            clips.pop("reason")
            clips["holdout"] = (clips["video_hash"] < self._threshold) if self._holdout else np.zeros(
                len(clips["uid"]), bool)
            _counter("valid_records").inc(len(clips["uid"]))
            yield clips


class Validate(beam.PTransform):
    """Clip batches -> `valid` clip batches (with a `holdout` column: a hash of the video id below
    holdout_fraction * 2**64), `rejected` entry lists, and `stats` per batch. Clips with more than
    max_labels distinct labels are rejected as too_many_labels."""

    def __init__(self, files: list[str], holdout_fraction: float, max_labels: int = schema.MAX_LABELS):
        super().__init__()
        self._files, self._holdout_fraction, self._max_labels = files, holdout_fraction, max_labels

    def expand(self, batches):
        out = batches | "CheckReasons" >> beam.ParDo(_Validate(
            self._files, self._holdout_fraction, self._max_labels)).with_outputs(
            "rejected", "stats", main="valid")
        return {"valid": out.valid, "rejected": out.rejected, "stats": out.stats}


# --- Keyed parts ------------------------------------------------------------------------------------

class _BufferedParts(beam.DoFn):
    """Batches -> (key, part): rows of the batches gathered by a key, cut into few large parts.

    `route(batch)` returns (columns, rows, keys): the columns to keep, and which of their rows go to
    which key (a row may go to several keys: a clip goes to each of its classes). The DoFn keeps
    references to the columns and the (row, key) pairs until they amount to total_bytes (or the
    bundle ends), then concatenates them once, sorts the pairs by key and emits one part per key;
    the Python work per key is paid per flush, not per batch.

    With a spill_dir, each part is written to a file there and only a SpilledPart (its path) goes
    through the shuffle: runners that hold a shuffle in memory (the DirectRunner keeps every value
    decoded, then encodes it again, about 3x its size) then hold only references.
    """

    def __init__(self, route, spill_dir: str | None = None, total_bytes: int = 256 << 20):
        self._route, self._spill_dir, self._total_bytes = route, spill_dir, total_bytes

    def start_bundle(self):
        self._columns, self._rows, self._keys, self._num_rows, self._bytes = [], [], [], 0, 0

    def process(self, batch: dict):
        routed = self._route(batch)
        if routed is None:
            return
        columns, rows, keys = routed
        n = core.num_rows(columns)
        self._columns.append(columns)
        self._rows.append(np.asarray(rows, np.int64) + self._num_rows)
        self._keys.append(np.asarray(keys, np.int64))
        self._num_rows += n
        self._bytes += core.nbytes(columns) + len(rows) * core.row_bytes(columns)
        if self._bytes >= self._total_bytes:
            yield from self._flush()

    def finish_bundle(self):
        for keyed in self._flush():
            yield WindowedValue(keyed, GlobalWindow().max_timestamp(), [GlobalWindow()])

    def _flush(self):
        if not self._columns:
            return
        columns = core.concat(self._columns)
        rows, keys = np.concatenate(self._rows), np.concatenate(self._keys)
        self.start_bundle()
        order = np.argsort(keys, kind="stable")
        rows, keys = rows[order], keys[order]
        bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
        parts = ((int(keys[b]), core.take(columns, rows[b:e])) for b, e in zip(bounds[:-1], bounds[1:]))
        _counter("shuffled_parts").inc(len(bounds) - 1)
        if self._spill_dir is None:
            yield from ((key, ClipPart(part)) for key, part in parts)
            return
        path, offset, spilled = f"{self._spill_dir}/{uuid.uuid4().hex}.pickles", 0, []
        with filesystems.FileSystems.create(path) as f:  # one file per flush, one pickle per key
            for key, part in parts:
                blob = pickle.dumps(part, protocol=5)
                f.write(blob)
                spilled.append((key, SpilledPart(path, offset, len(blob), core.num_rows(part))))
                offset += len(blob)
        _counter("spilled_bytes").inc(offset)
        yield from spilled


class _Duplicates:
    """The side input of duplicate record keys as one sorted array, built once per side input."""

    def __init__(self):
        self._source, self._keys = None, np.zeros(0, np.int64)

    def keys(self, arrays: list) -> np.ndarray:
        if arrays is not self._source:
            self._source = arrays
            self._keys = np.unique(np.concatenate(list(arrays))) if arrays else np.zeros(0, np.int64)
        return self._keys

    def drop(self, part: dict, arrays: list) -> dict:
        keys = self.keys(arrays)
        if len(keys) == 0:
            return part
        repeated = np.isin(core.record_keys(part["file"], part["position"]), keys)
        return core.take(part, ~repeated) if repeated.any() else part


# --- Deduplication ----------------------------------------------------------------------------------

def _dedup_route(num_buckets: int):
    def route(batch: dict):
        columns = {key: batch[key] for key in core.DEDUP_COLUMNS}
        return columns, np.arange(len(batch["uid"])), core.dedup_bucket(batch["uid"], num_buckets)
    return route


class _ResolveDuplicates(beam.DoFn):
    def __init__(self, files: list[str]):
        self._files = files

    def process(self, element):
        _, parts = element
        part = _load_parts(parts)
        duplicate, conflicting = core.find_duplicates(part, conflicts=True)
        stats = core.kept_stats(part, duplicate, conflicting)
        if duplicate.any():
            rows = np.flatnonzero(duplicate)
            reasons = np.where(conflicting[rows], "conflicting_duplicate", "duplicate").tolist()
            for reason, n in stats["rejected_reasons"].items():
                _counter(f"rejected_{reason}").inc(n)
            yield beam.pvalue.TaggedOutput("rejected", core.rejections(part, rows, reasons, self._files))
            yield core.record_keys(part["file"][rows], part["position"][rows])
        _counter("distinct_clips").inc(stats["main_clips"] + stats["holdout_clips"])
        yield beam.pvalue.TaggedOutput("stats", stats)


class FindDuplicates(beam.PTransform):
    """Valid clip batches -> `duplicates` (int64 arrays of core.record_keys of every copy of a clip
    after its first by (file, position)), their `rejected` entries, and `stats` of the distinct
    clips (per split and class), grouped by a hash of the clip into num_buckets buckets."""

    def __init__(self, files: list[str], num_buckets: int = 64, spill_dir: str | None = None,
                 buffer_bytes: int = 256 << 20):
        super().__init__()
        self._files, self._num_buckets = files, num_buckets
        self._buffer = (spill_dir, buffer_bytes)

    def expand(self, valid):
        out = (valid
               | "ByBucket" >> beam.ParDo(_BufferedParts(_dedup_route(self._num_buckets), *self._buffer))
               .with_output_types(KeyedPart)
               | "GroupByBucket" >> beam.GroupByKey()
               | "Resolve" >> beam.ParDo(_ResolveDuplicates(self._files)).with_outputs(
                   "rejected", "stats", main="duplicates"))
        return {"duplicates": out.duplicates, "rejected": out.rejected, "stats": out.stats}


# --- Writing ----------------------------------------------------------------------------------------

def _balanced_route(batch: dict):
    """Each training clip to each of its classes."""
    labels = core.unpack_labels(batch["labels"])  # [N, 527]
    labels[batch["holdout"]] = 0
    rows, classes = np.nonzero(labels)
    return {key: batch[key] for key in core.BALANCED_COLUMNS}, rows, classes


class _WriteClass(beam.DoFn):
    def __init__(self, output_dir: str, seed: int, block_size: int, min_blocks: int, blocks_per_file: int):
        self._output_dir, self._args = output_dir, (seed, block_size, min_blocks, blocks_per_file)
        self._duplicates = _Duplicates()

    def process(self, element, duplicates):
        class_index, parts = element
        part = self._duplicates.drop(_load_parts(parts), duplicates)
        written = core.write_class_files(self._output_dir, class_index, part, *self._args)
        _counter("classes_written").inc()
        _counter("class_files_written").inc(len(written))
        _counter("blocks_written").inc(sum(e["blocks"] for e in written))
        yield from written


class WriteBalancedShards(beam.PTransform):
    """(valid clip batches, duplicates) -> the train split's per-class files of blocks
    (core.write_class_files); outputs {class, file, blocks} per file. The shuffle moves, per class,
    only uid, file, position, embedding, num_frames and packed labels (1.4 kB per clip and label)."""

    def __init__(self, output_dir: str, seed: int, block_size: int, min_blocks: int, blocks_per_file: int,
                 spill_dir: str | None = None, buffer_bytes: int = 256 << 20):
        super().__init__()
        self._write = (output_dir, seed, block_size, min_blocks, blocks_per_file)
        self._buffer = (spill_dir, buffer_bytes)

    def expand(self, valid_and_duplicates):
        valid, duplicates = valid_and_duplicates
        return (valid
                | "ByClass" >> beam.ParDo(_BufferedParts(_balanced_route, *self._buffer))
                .with_output_types(KeyedPart)
                | "GroupByClass" >> beam.GroupByKey()
                | "WriteClassFiles" >> beam.ParDo(_WriteClass(*self._write),
                                                  duplicates=beam.pvalue.AsList(duplicates)))


def _plain_route(holdout: bool, num_shards: int):
    """Each clip of one side of the holdout split to its plain shard (by video id)."""
    def route(batch: dict):
        rows = np.flatnonzero(batch["holdout"] if holdout else ~batch["holdout"])
        if len(rows) == 0:
            return None
        if "record" in batch:
            columns = {key: batch[key] for key in core.PLAIN_COLUMNS}
        else:  # HDF5 input: serialize canonical SequenceExamples of these rows only
            part = core.take(batch, rows)
            columns = {key: part[key] for key in core.PLAIN_COLUMNS[:-1]} | {"record": core.canonical_records(part)}
            return columns, np.arange(len(rows)), core.plain_shard(part["video_hash"], num_shards)
        return columns, rows, core.plain_shard(batch["video_hash"][rows], num_shards)
    return route


class _WritePlain(beam.DoFn):
    def __init__(self, output_dir: str, split: str, num_shards: int):
        self._output_dir, self._split, self._num_shards = output_dir, split, num_shards
        self._duplicates = _Duplicates()

    def process(self, element, duplicates):
        shard, parts = element
        part = self._duplicates.drop(_load_parts(parts), duplicates)
        if core.num_rows(part):
            name = core.plain_file_name(self._split, shard, self._num_shards)
            _counter(f"{self._split}_records_written").inc(core.write_plain_file(self._output_dir, name, part))
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
                | "ByShard" >> beam.ParDo(_BufferedParts(_plain_route(self._holdout, self._num_shards),
                                                          *self._buffer)).with_output_types(KeyedPart)
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteFiles" >> beam.ParDo(_WritePlain(self._output_dir, self._split, self._num_shards),
                                             duplicates=beam.pvalue.AsList(duplicates)))


REJECTED_FILE = "rejected/rejected.jsonl"


class WriteRejected(beam.PTransform):
    """Lists of dead-letter entries -> OUT/rejected/rejected.jsonl, sorted by (file, position); outputs its name."""

    def __init__(self, output_dir: str):
        super().__init__()
        self._output_dir = output_dir

    def expand(self, entry_lists):
        def write(_, lists):
            entries = [entry for entries in lists for entry in entries]
            path = os.path.join(self._output_dir, REJECTED_FILE)
            core.write_atomically(path, core.rejected_lines(entries))
            _counter("rejected_entries_written").inc(len(entries))
            return REJECTED_FILE

        return (entry_lists.pipeline
                | "Once" >> beam.Create([None])
                | "Write" >> beam.Map(write, lists=beam.pvalue.AsList(entry_lists)))


class _SumStats(beam.CombineFn):
    def create_accumulator(self):
        return core.empty_stats()

    def add_input(self, accumulator, element):
        return core.add_stats(accumulator, element)

    def merge_accumulators(self, accumulators):
        total = core.empty_stats()
        for accumulator in accumulators:
            total = core.add_stats(total, accumulator)
        return total

    def extract_output(self, accumulator):
        return accumulator


class Summarize(beam.PTransform):
    """Stats of batches (input records, rejections by reason, distinct clips per split and class) -> one total."""

    def expand(self, stats):
        return stats | "Sum" >> beam.CombineGlobally(_SumStats())


class WriteManifest(beam.PTransform):
    """(total stats, main files, holdout files, rejected file) -> OUT/manifest.json, last: it marks a
    finished run. Takes everything as side inputs, so it runs after every write."""

    def __init__(self, output_dir: str, args: dict, main_split: str, layout: str, block_size: int, holdout: bool,
                 spill_dir: str | None = None):
        super().__init__()
        self._output_dir, self._args, self._spill_dir = output_dir, args, spill_dir
        self._split = (main_split, layout, block_size, holdout)

    def expand(self, inputs):
        stats, main_files, holdout_files, rejected_file = inputs
        return (stats.pipeline
                | "Once" >> beam.Create([None])
                | "Write" >> beam.Map(self._write, stats=beam.pvalue.AsSingleton(stats),
                                      main_files=beam.pvalue.AsList(main_files),
                                      holdout_files=beam.pvalue.AsList(holdout_files),
                                      rejected_file=beam.pvalue.AsSingleton(rejected_file)))

    def _write(self, _, stats, main_files, holdout_files, rejected_file):
        manifest = core.build_manifest(stats, main_files, holdout_files, rejected_file, self._args, *self._split)
        if self._spill_dir:
            core.delete_tree(self._spill_dir)  # every writer has read its parts
        core.write_atomically(os.path.join(self._output_dir, "manifest.json"), json.dumps(manifest, indent=1).encode())
        return manifest

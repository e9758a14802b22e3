"""Composite PTransforms of the shard-building job, each labelled and counted.

Elements are *batches* of clips (dicts of numpy arrays) wherever the data allows it, so Beam's
per-element cost is paid per ~1,000 clips; only deduplication keys and the per-class grouping
move single clips, and those carry compact values.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

import apache_beam as beam
import numpy as np
from apache_beam.io import filesystems
from apache_beam.io.tfrecordio import _TFRecordUtil

from tfdata import schema

NAMESPACE = "build_shards"
OK = schema.REASON_CODES.index(schema.OK)


def _counter(name: str):
    return beam.metrics.Metrics.counter(NAMESPACE, name)


def hash_fraction(video_id: bytes) -> float:
    """A stable number in [0, 1) per video id (sha256), the same on every run and runner."""
    return int.from_bytes(hashlib.sha256(video_id).digest()[:8], "big") / 2.0 ** 64


def _key(*parts) -> bytes:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()[:8]


# --- Reading ----------------------------------------------------------------------------------

class _ReadTFRecordFile(beam.DoFn):
    """One TFRecord file -> batches {file, positions, records}; unreadable data -> rejected entries.

    Reads the framing itself (Beam's TFRecord CRC helpers), so that a record whose data CRC does
    not match is rejected alone and reading goes on; after a truncated record or a corrupt length
    field the rest of the file cannot be framed and is rejected as one `unreadable_data` record.
    """

    def __init__(self, batch_size: int):
        self._batch_size = batch_size

    def process(self, path: str):
        positions, records = [], []
        with filesystems.FileSystems.open(path, compression_type="uncompressed") as f:
            position = 0
            while True:
                header = f.read(12)
                if not header:
                    break
                problem, record = _read_framed(f, header)
                if problem == "data_crc":
                    yield beam.pvalue.TaggedOutput("rejected", _rejection(path, position, None, "unreadable_data",
                                                                          "record data CRC mismatch"))
                elif problem:
                    yield beam.pvalue.TaggedOutput("rejected", _rejection(path, position, None, "unreadable_data",
                                                                          f"{problem}: rest of file unreadable"))
                    break
                else:
                    positions.append(position)
                    records.append(record)
                    if len(records) == self._batch_size:
                        yield {"file": path, "positions": np.array(positions), "records": records}
                        positions, records = [], []
                position += 1
        if records:
            yield {"file": path, "positions": np.array(positions), "records": records}


def _read_framed(f, header: bytes) -> tuple[str | None, bytes | None]:
    if len(header) < 12:
        return "truncated record", None
    length, length_crc = struct.unpack("<QI", header)
    if _TFRecordUtil._masked_crc32c(header[:8]) != length_crc:
        return "corrupt record length (not a TFRecord file?)", None
    body = f.read(length + 4)
    if len(body) != length + 4:
        return "truncated record", None
    data, data_crc = body[:length], struct.unpack("<I", body[length:])[0]
    if _TFRecordUtil._masked_crc32c(data) != data_crc:
        return "data_crc", None
    return None, data


class _ReadHdf5Rows(beam.DoFn):
    """(path, begin, end) -> batches of canonical SequenceExamples of those rows."""

    def process(self, row_range: tuple[str, int, int]):
        import h5py

        path, begin, end = row_range
        with filesystems.FileSystems.open(path, compression_type="uncompressed") as f, h5py.File(f, "r") as h5:
            x = h5[schema.H5_EMBEDDING][begin:end]
            y = h5[schema.H5_LABELS][begin:end]
            ids = h5[schema.H5_VIDEO_ID][begin:end]
            frames = (h5[schema.H5_NUM_FRAMES][begin:end] if schema.H5_NUM_FRAMES in h5
                      else _num_frames_from_padding(x))
            starts = (h5[schema.H5_START_TIME][begin:end] if schema.H5_START_TIME in h5
                      else np.full(end - begin, np.nan, np.float32))
        records = [schema.encode_sequence_example(ids[i], float(starts[i]), int(frames[i]),
                                                  np.flatnonzero(y[i]).tolist(), x[i]) for i in range(end - begin)]
        yield {"file": path, "positions": np.arange(begin, end), "records": records}


def _num_frames_from_padding(x: np.ndarray) -> np.ndarray:
    nonzero = x.any(axis=2)  # [N, 10]
    return np.where(nonzero.any(axis=1), schema.NUM_FRAMES - np.argmax(nonzero[:, ::-1], axis=1), 0)


def hdf5_row_ranges(path: str, rows_per_range: int) -> list[tuple[str, int, int]]:
    """Splits one research HDF5 file into row ranges; validates its layout first (ValueError)."""
    from tfdata import readers

    n = readers.hdf5_datasets(path)[schema.H5_EMBEDDING][0][0]
    return [(path, b, min(b + rows_per_range, n)) for b in range(0, n, rows_per_range)]


class ReadClipBatches(beam.PTransform):
    """Input files -> batches of serialized SequenceExamples with their file and position.

    Outputs: main (batches) and `rejected` (records no batch could hold).
    """

    def __init__(self, files: list[str], batch_size: int = 1000, hdf5: bool = False):
        super().__init__()
        self._files, self._batch_size, self._hdf5 = files, batch_size, hdf5

    def expand(self, pipeline):
        if self._hdf5:
            ranges = [r for path in self._files for r in hdf5_row_ranges(path, self._batch_size)]
            batches = (pipeline | "RowRanges" >> beam.Create(ranges) | "Reshuffle" >> beam.Reshuffle()
                       | "ReadRows" >> beam.ParDo(_ReadHdf5Rows()))
            rejected = pipeline | "NoUnreadable" >> beam.Create([])
            return {"batches": batches, "rejected": rejected}
        read = (pipeline | "Files" >> beam.Create(self._files) | "Reshuffle" >> beam.Reshuffle()
                | "ReadFiles" >> beam.ParDo(_ReadTFRecordFile(self._batch_size)).with_outputs("rejected", main="batches"))
        return {"batches": read.batches, "rejected": read.rejected}


# --- Validation -------------------------------------------------------------------------------

class _Parse(beam.DoFn):
    def setup(self):
        from tfdata import readers
        self._readers = readers

    def process(self, batch: dict):
        parsed = self._readers.parse_records(batch["records"])
        _counter("input_records").inc(len(batch["records"]))
        yield batch | parsed


class ParseAndValidate(beam.PTransform):
    """Raw batches -> parsed batches with a reason code per clip (vectorized TF parse per batch)."""

    def expand(self, batches):
        return batches | "Parse" >> beam.ParDo(_Parse())


class FindDuplicates(beam.PTransform):
    """Parsed batches -> (file, position) of every copy of a clip after its first, by (file, position)."""

    def expand(self, batches):
        def keys(batch):
            for i in np.flatnonzero(batch["reason"] == OK):
                yield ((batch["video_id"][i], float(batch["start_time_seconds"][i])),
                       (batch["file"], int(batch["positions"][i])))

        return (batches
                | "ClipKeys" >> beam.FlatMap(keys)
                | "GroupByClip" >> beam.GroupByKey()
                | "LaterCopies" >> beam.FlatMap(lambda kv: sorted(kv[1])[1:]))


class _Split(beam.DoFn):
    def __init__(self, holdout_fraction: float):
        self._holdout_fraction = holdout_fraction
        self._duplicates_id, self._duplicates = None, frozenset()

    def process(self, batch: dict, duplicates):
        if id(duplicates) != self._duplicates_id:  # the side input, as a set, once per bundle
            self._duplicates_id, self._duplicates = id(duplicates), frozenset(map(tuple, duplicates))
        reasons = [schema.REASON_CODES[r] for r in batch["reason"]]
        for i, position in enumerate(batch["positions"].tolist()):
            if reasons[i] == schema.OK and (batch["file"], position) in self._duplicates:
                reasons[i] = "duplicate"
        keep = np.array([r == schema.OK for r in reasons], bool)
        for i in np.flatnonzero(~keep):
            _counter(f"rejected_{reasons[i]}").inc()
            yield beam.pvalue.TaggedOutput("rejected", _rejection(
                batch["file"], int(batch["positions"][i]), batch["video_id"][i], reasons[i]))
        holdout = np.array([hash_fraction(v) < self._holdout_fraction for v in batch["video_id"]], bool) & keep
        for name, rows in (("train", keep & ~holdout), ("holdout", holdout)):
            if rows.any():
                _counter(f"{name}_clips").inc(int(rows.sum()))
                yield beam.pvalue.TaggedOutput(name, {key: _take(value, rows) for key, value in batch.items()
                                                      if key not in ("file", "reason")})
        yield beam.pvalue.TaggedOutput("stats", Stats.of_batch(batch, reasons, keep, holdout))


def _take(value, rows: np.ndarray):
    return [v for v, keep in zip(value, rows) if keep] if isinstance(value, list) else value[rows]


class SplitClips(beam.PTransform):
    """Parsed batches -> `train` and `holdout` clip batches, `rejected` entries, and `stats` per batch."""

    def __init__(self, holdout_fraction: float):
        super().__init__()
        self._holdout_fraction = holdout_fraction

    def expand(self, batches_and_duplicates):
        batches, duplicates = batches_and_duplicates
        return batches | "Split" >> beam.ParDo(
            _Split(self._holdout_fraction), duplicates=beam.pvalue.AsList(duplicates)
        ).with_outputs("train", "holdout", "rejected", "stats")


def _rejection(path, position, video_id, reason, detail=None) -> str:
    entry = {"file": path, "position": position, "reason": reason}
    if video_id:
        entry["video_id"] = video_id.decode(errors="replace")
    if detail:
        entry["detail"] = detail
    return json.dumps(entry, sort_keys=True)


# --- Accounting -------------------------------------------------------------------------------

class Stats:
    """Counts of one batch, summed by CombineGlobally(Stats.Sum)."""

    @staticmethod
    def of_batch(batch: dict, reasons: list[str], keep: np.ndarray, holdout: np.ndarray) -> dict:
        labels = batch["labels"].astype(np.int64)
        rejected = {}
        for r in reasons:
            if r != schema.OK:
                rejected[r] = rejected.get(r, 0) + 1
        return {"input_records": len(reasons), "rejected_reasons": rejected,
                "train": labels[keep & ~holdout].sum(axis=0), "train_clips": int((keep & ~holdout).sum()),
                "holdout": labels[holdout].sum(axis=0), "holdout_clips": int(holdout.sum())}

    @staticmethod
    def empty() -> dict:
        zeros = np.zeros(schema.NUM_CLASSES, np.int64)
        return {"input_records": 0, "rejected_reasons": {}, "train": zeros, "train_clips": 0,
                "holdout": zeros, "holdout_clips": 0}

    @staticmethod
    def add(a: dict, b: dict) -> dict:
        reasons = dict(a["rejected_reasons"])
        for r, n in b["rejected_reasons"].items():
            reasons[r] = reasons.get(r, 0) + n
        return {"input_records": a["input_records"] + b["input_records"], "rejected_reasons": reasons,
                "train": a["train"] + b["train"], "train_clips": a["train_clips"] + b["train_clips"],
                "holdout": a["holdout"] + b["holdout"], "holdout_clips": a["holdout_clips"] + b["holdout_clips"]}

    class Sum(beam.CombineFn):
        def create_accumulator(self):
            return Stats.empty()

        def add_input(self, accumulator, element):
            return Stats.add(accumulator, element)

        def merge_accumulators(self, accumulators):
            total = Stats.empty()
            for a in accumulators:
                total = Stats.add(total, a)
            return total

        def extract_output(self, accumulator):
            return accumulator


class Summarize(beam.PTransform):
    """Stats per batch + rejected entries from reading -> one total."""

    def expand(self, stats_and_unreadable):
        stats, unreadable = stats_and_unreadable
        unreadable_stats = unreadable | "UnreadableStats" >> beam.Map(
            lambda entry: Stats.add(Stats.empty(), {**Stats.empty(), "input_records": 1,
                                                    "rejected_reasons": {json.loads(entry)["reason"]: 1}}))
        return ((stats, unreadable_stats) | "AllStats" >> beam.Flatten()
                | "Sum" >> beam.CombineGlobally(Stats.Sum()))


# --- Writing ----------------------------------------------------------------------------------

def _class_files(count: int, block_size: int, blocks_per_file: int) -> int:
    return max(1, -(-count // (block_size * blocks_per_file)))


class _ClipsPerClass(beam.DoFn):
    """A train batch -> ((class, file index), (order key, compact clip)) once per label of each clip."""

    def __init__(self, seed: int, block_size: int, blocks_per_file: int):
        self._seed, self._block_size, self._blocks_per_file = seed, block_size, blocks_per_file

    def process(self, batch: dict, class_counts):
        packed = np.packbits(batch["labels"].astype(bool), axis=1)  # [N, 66]
        for i in range(len(batch["records"])):
            video_id, start = batch["video_id"][i], float(batch["start_time_seconds"][i])
            clip = (batch["embedding"][i].tobytes(), int(batch["num_frames"][i]), packed[i].tobytes(), video_id, start)
            for c in np.flatnonzero(batch["labels"][i]).tolist():
                order = _key(self._seed, c, video_id, start)
                files = _class_files(int(class_counts[c]), self._block_size, self._blocks_per_file)
                yield (c, int.from_bytes(order, "big") % files), (order, clip)


class _WriteClassFile(beam.DoFn):
    """All clips of (class, file index) -> one file of blocks of exactly K clips of that class."""

    def __init__(self, output_dir: str, seed: int, block_size: int, min_blocks: int, blocks_per_file: int):
        self._output_dir, self._seed = output_dir, seed
        self._block_size, self._min_blocks, self._blocks_per_file = block_size, min_blocks, blocks_per_file

    def process(self, element, class_counts):
        import tensorflow as tf

        (c, index), clips = element
        clips = [clip for _, clip in sorted(clips)]  # deterministic pseudo-random order
        k = self._block_size
        files = _class_files(int(class_counts[c]), k, self._blocks_per_file)
        n_blocks = -(-len(clips) // k)
        if files == 1:
            n_blocks = max(n_blocks, self._min_blocks)
        sequence, cycle = list(clips), 1
        while len(sequence) < n_blocks * k:  # rare classes: go through the clips again in a fresh order
            sequence += sorted(clips, key=lambda clip: _key(self._seed, c, cycle, clip[3], clip[4]))
            cycle += 1
        name = f"train/class-{c:03d}-{index:05d}-of-{files:05d}.tfrecord"
        with tf.io.TFRecordWriter(os.path.join(self._output_dir, name)) as writer:
            for b in range(n_blocks):
                block = sequence[b * k:(b + 1) * k]
                embedding = np.frombuffer(b"".join(clip[0] for clip in block), np.uint8).reshape(
                    k, schema.NUM_FRAMES, schema.EMBEDDING_DIM)
                labels = np.unpackbits(np.frombuffer(b"".join(clip[2] for clip in block), np.uint8).reshape(
                    k, schema.PACKED_LABEL_BYTES), axis=1)[:, :schema.NUM_CLASSES]
                writer.write(schema.encode_block(c, embedding, np.array([clip[1] for clip in block]), labels))
        _counter("train_blocks").inc(n_blocks)
        yield {"class": c, "file": name, "blocks": n_blocks}


class WriteBalancedShards(beam.PTransform):
    """Train clip batches -> per-class files of blocks; outputs {class, file, blocks} per file."""

    def __init__(self, output_dir: str, seed: int, block_size: int, min_blocks: int, blocks_per_file: int):
        super().__init__()
        self._args = (seed, block_size, blocks_per_file)
        self._write = (output_dir, seed, block_size, min_blocks, blocks_per_file)

    def expand(self, train_and_counts):
        train, class_counts = train_and_counts
        counts = beam.pvalue.AsSingleton(class_counts)
        return (train
                | "PerClass" >> beam.ParDo(_ClipsPerClass(*self._args), class_counts=counts)
                | "GroupByClassFile" >> beam.GroupByKey()
                | "WriteClassFiles" >> beam.ParDo(_WriteClassFile(*self._write), class_counts=counts))


class WritePlainShards(beam.PTransform):
    """Clip batches -> `{split}/part-i-of-n.tfrecord` of the original records, sorted by (video_id, start)."""

    def __init__(self, output_dir: str, split: str, num_shards: int):
        super().__init__()
        self._output_dir, self._split, self._num_shards = output_dir, split, num_shards

    def expand(self, batches):
        n = self._num_shards

        def by_shard(batch):
            for i, record in enumerate(batch["records"]):
                video_id, start = batch["video_id"][i], float(batch["start_time_seconds"][i])
                yield int.from_bytes(_key("plain shard", video_id), "big") % n, (video_id, start, record)

        def write(element):
            import tensorflow as tf

            shard, clips = element
            name = f"{self._split}/part-{shard:05d}-of-{n:05d}.tfrecord"
            with tf.io.TFRecordWriter(os.path.join(self._output_dir, name)) as writer:
                for _, _, record in sorted(clips, key=lambda clip: (clip[0], clip[1])):
                    writer.write(record)
            return name

        return (batches | "ByShard" >> beam.FlatMap(by_shard) | "GroupByShard" >> beam.GroupByKey()
                | "Write" >> beam.Map(write))


class WriteManifest(beam.PTransform):
    """Stats and written file lists -> OUT/manifest.json, written last: the mark of a finished run."""

    def __init__(self, output_dir: str, args: dict, main_split: str, layout: str, block_size: int):
        super().__init__()
        self._output_dir, self._args = output_dir, args
        self._main_split, self._layout, self._block_size = main_split, layout, block_size

    def expand(self, inputs):
        stats, train_files, holdout_files = inputs
        return (stats.pipeline | "Once" >> beam.Create([None])
                | "Write" >> beam.Map(self._write, stats=beam.pvalue.AsSingleton(stats),
                                      train_files=beam.pvalue.AsList(train_files),
                                      holdout_files=beam.pvalue.AsList(holdout_files)))

    def _write(self, _, stats, train_files, holdout_files):
        manifest = build_manifest(stats, train_files, holdout_files, self._args, self._main_split, self._layout,
                                  self._block_size)
        with filesystems.FileSystems.create(os.path.join(self._output_dir, "manifest.json")) as f:
            f.write(json.dumps(manifest, indent=1).encode())
        return manifest


def build_manifest(stats: dict, train_files: list, holdout_files: list, args: dict, main_split: str,
                   layout: str, block_size: int) -> dict:
    reasons = {r: stats["rejected_reasons"].get(r, 0) for r in schema.REJECT_REASONS}
    splits = {}
    if layout == "balanced":
        class_files = [[] for _ in range(schema.NUM_CLASSES)]
        for entry in sorted(train_files, key=lambda e: e["file"]):
            class_files[entry["class"]].append(entry["file"])
        splits[main_split] = {"layout": "balanced", "clips": stats["train_clips"],
                              "class_counts": stats["train"].tolist(), "block_size": block_size,
                              "blocks": sum(e["blocks"] for e in train_files), "class_files": class_files,
                              "files": sorted(e["file"] for e in train_files)}
    else:
        splits[main_split] = {"layout": "plain", "clips": stats["train_clips"],
                              "class_counts": stats["train"].tolist(), "files": sorted(train_files)}
    if args.get("holdout_fraction"):
        splits["holdout"] = {"layout": "plain", "clips": stats["holdout_clips"],
                             "class_counts": stats["holdout"].tolist(), "files": sorted(holdout_files)}
    written = stats["train_clips"] + stats["holdout_clips"]
    return {
        "schema_version": schema.SHARD_SCHEMA_VERSION,
        "complete": True,
        "args": args,
        "input_records": stats["input_records"],
        "written_clips": written,
        "rejected": sum(reasons.values()),
        "rejected_reasons": reasons,
        "class_counts": (stats["train"] + stats["holdout"]).tolist(),
        "splits": splits,
    }

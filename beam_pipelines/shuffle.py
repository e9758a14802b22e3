"""Keyed parts: the three steps that bring clips together by a key (deduplication by clip, the
per-class grouping, plain shards) go through BufferedParts. It keeps the batches' columns until
~256 MB are buffered, then sorts the rows by key once and emits one part per key, so a shuffle moves
a few hundred large elements per 256 MB instead of one per clip. By default the parts themselves are
written to spill files under OUT/_tmp (one file per flush) and only (key, file, offset) references
are shuffled; WriteManifest deletes OUT/_tmp at the end (--shuffle_values beam: the parts go through
Beam's shuffle themselves).
"""

from __future__ import annotations

import pickle
import typing
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.io import filesystems
from apache_beam.transforms.window import GlobalWindows

from beam_pipelines import clips


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


KeyedPart = typing.Tuple[int, ClipPart]


def load_parts(values) -> dict:
    """The values of one key after a shuffle (ClipParts or SpilledParts) -> one part."""
    parts = []
    for value in sorted(values, key=lambda v: (v.path, v.offset) if isinstance(v, SpilledPart) else ("", 0)):
        if isinstance(value, SpilledPart):
            with filesystems.FileSystems.open(value.path, compression_type="uncompressed") as f:
                f.seek(value.offset)
                value = pickle.loads(f.read(value.length))
        parts.append(dict(value))
    return clips.concat(parts)


class BufferedParts(beam.DoFn):
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
        n = clips.num_rows(columns)
        self._columns.append(columns)
        self._rows.append(np.asarray(rows, np.int64) + self._num_rows)
        self._keys.append(np.asarray(keys, np.int64))
        self._num_rows += n
        self._bytes += clips.nbytes(columns) + len(rows) * clips.row_bytes(columns)
        if self._bytes >= self._total_bytes:
            yield from self._flush()

    def finish_bundle(self):
        for keyed in self._flush():
            yield GlobalWindows.windowed_value_at_end_of_window(keyed)  # as before: end of the global window

    def _flush(self):
        if not self._columns:
            return
        columns = clips.concat(self._columns)
        rows, keys = np.concatenate(self._rows), np.concatenate(self._keys)
        self.start_bundle()
        order = np.argsort(keys, kind="stable")
        rows, keys = rows[order], keys[order]
        bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
        parts = ((int(keys[b]), clips.take(columns, rows[b:e])) for b, e in zip(bounds[:-1], bounds[1:]))
        clips.counter("shuffled_parts").inc(len(bounds) - 1)
        if self._spill_dir is None:
            yield from ((key, ClipPart(part)) for key, part in parts)
            return
        path, offset, spilled = f"{self._spill_dir}/{uuid.uuid4().hex}.pickles", 0, []
        with filesystems.FileSystems.create(path) as f:  # one file per flush, one pickle per key
            for key, part in parts:
                blob = pickle.dumps(part, protocol=5)
                f.write(blob)
                spilled.append((key, SpilledPart(path, offset, len(blob), clips.num_rows(part))))
                offset += len(blob)
        clips.counter("spilled_bytes").inc(offset)
        yield from spilled


class Duplicates:
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
        repeated = np.isin(clips.record_keys(part["file"], part["position"]), keys)
        return clips.take(part, ~repeated) if repeated.any() else part

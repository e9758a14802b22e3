"""Deduplication: a clip seen twice (same video_id and start_time_seconds) is kept at its first
(file, position); its other copies are rejected (duplicate, or conflicting_duplicate when their labels
differ). Clips are grouped by a hash of the clip into buckets, so the step scales out; the writers drop
the duplicates it finds (a side input, usually empty), so no clip waits for the whole input.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from beam_pipelines import clips, shuffle
from tfdata import schema


DEDUP_COLUMNS = ("uid", "file", "position", schema.VIDEO_ID_KEY, schema.START_TIME_KEY, schema.LABELS_KEY, "holdout")


def find_duplicates(part: dict, conflicts: bool = False):
    """Rows that repeat an earlier clip (same video_id and start time), earlier by (file, position).

    Rows are grouped by uid (a 64-bit hash); only rows that share a uid are compared exactly, so a
    hash collision between different clips never loses one. Returns bool [N]; with conflicts, also
    bool [N]: the duplicates whose labels differ from the copy that is kept (conflicting_duplicate).
    """
    n = clips.num_rows(part)
    duplicate, conflicting = np.zeros(n, bool), np.zeros(n, bool)
    result = (duplicate, conflicting) if conflicts else duplicate
    if n < 2:
        return result
    order = np.lexsort((part["position"], part["file"], part["uid"]))
    uid = part["uid"][order]
    same = np.flatnonzero(uid[1:] == uid[:-1])  # order[same[j] + 1] shares its uid with the row before
    if len(same) == 0:
        return result
    starts, labels = part[schema.START_TIME_KEY], part.get(schema.LABELS_KEY)
    run_starts = same[np.r_[True, same[1:] != same[:-1] + 1]]
    for begin in run_starts.tolist():
        end = begin + 1
        while end < n and uid[end] == uid[begin]:
            end += 1
        kept = {}
        for row in order[begin:end].tolist():
            key = clips.clip_key(part[schema.VIDEO_ID_KEY][row], float(starts[row]))
            if key in kept:
                duplicate[row] = True
                conflicting[row] = labels is not None and not np.array_equal(labels[row], labels[kept[key]])
            else:
                kept[key] = row
    return result


def kept_stats(part: dict, duplicate: np.ndarray, conflicting: np.ndarray | None = None) -> dict:
    """Stats of the distinct clips of a dedup part (and the duplicates it rejects; `conflicting`
    ones, whose labels differ from the kept copy, as conflicting_duplicate)."""
    kept = ~duplicate
    holdout = part["holdout"] & kept
    main = ~part["holdout"] & kept
    stats = clips.empty_stats()
    stats["main"] = clips.unpack_labels(part[schema.LABELS_KEY][main]).sum(axis=0, dtype=np.int64)
    stats["holdout"] = clips.unpack_labels(part[schema.LABELS_KEY][holdout]).sum(axis=0, dtype=np.int64)
    stats["main_clips"], stats["holdout_clips"] = int(main.sum()), int(holdout.sum())
    if duplicate.any():
        conflicting = np.zeros_like(duplicate) if conflicting is None else conflicting
        stats["rejected_reasons"] = {name: n for name, n in (
            ("duplicate", int((duplicate & ~conflicting).sum())),
            ("conflicting_duplicate", int(conflicting.sum()))) if n}
    return stats


def _dedup_route(num_buckets: int):
    def route(batch: dict):
        columns = {key: batch[key] for key in DEDUP_COLUMNS}
        return columns, np.arange(len(batch["uid"])), clips.dedup_bucket(batch["uid"], num_buckets)
    return route


class _ResolveDuplicates(beam.DoFn):
    def __init__(self, files: list[str]):
        self._files = files

    def process(self, element):
        _, parts = element
        part = shuffle.load_parts(parts)
        duplicate, conflicting = find_duplicates(part, conflicts=True)
        stats = kept_stats(part, duplicate, conflicting)
        if duplicate.any():
            rows = np.flatnonzero(duplicate)
            reasons = np.where(conflicting[rows], "conflicting_duplicate", "duplicate").tolist()
            for reason, n in stats["rejected_reasons"].items():
                clips.counter(f"rejected_{reason}").inc(n)
            yield beam.pvalue.TaggedOutput("rejected", clips.rejections(part, rows, reasons, self._files))
            yield clips.record_keys(part["file"][rows], part["position"][rows])
        clips.counter("distinct_clips").inc(stats["main_clips"] + stats["holdout_clips"])
        yield beam.pvalue.TaggedOutput("stats", stats)


class FindDuplicates(beam.PTransform):
    """Valid clip batches -> `duplicates` (int64 arrays of clips.record_keys of every copy of a clip
    after its first by (file, position)), their `rejected` entries, and `stats` of the distinct
    clips (per split and class), grouped by a hash of the clip into num_buckets buckets."""

    def __init__(self, files: list[str], num_buckets: int = 64, spill_dir: str | None = None,
                 buffer_bytes: int = 256 << 20):
        super().__init__()
        self._files, self._num_buckets = files, num_buckets
        self._buffer = (spill_dir, buffer_bytes)

    def expand(self, valid):
        out = (valid
               | "ByBucket" >> beam.ParDo(shuffle.BufferedParts(_dedup_route(self._num_buckets), *self._buffer))
               .with_output_types(shuffle.KeyedPart)
               | "GroupByBucket" >> beam.GroupByKey()
               | "Resolve" >> beam.ParDo(_ResolveDuplicates(self._files)).with_outputs(
                   "rejected", "stats", main="duplicates"))
        return {"duplicates": out.duplicates, "rejected": out.rejected, "stats": out.stats}

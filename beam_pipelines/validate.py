"""Validation: clip batches -> valid clips (each marked for the holdout split or not), dead-letter
entries and stats. The reasons come from the readers (schema.REJECT_CHECKS); here --max_labels moves
the too_many_labels line, and the holdout split is decided by a hash of the video id.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from beam_pipelines import clips
from tfdata import schema


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
    count = clips.unpack_labels(batch[schema.LABELS_KEY]).sum(axis=1)
    code = schema.REASON_CODES.index("too_many_labels")
    reason = batch["reason"].copy()
    reason[(reason == clips.OK) & (count > max_labels)] = code
    reason[(reason == code) & (count <= max_labels)] = clips.OK
    return reason


class _Validate(beam.DoFn):
    def __init__(self, files: list[str], holdout_fraction: float, max_labels: int = schema.MAX_LABELS):
        self._files, self._threshold, self._max_labels = files, np.uint64(0), max_labels
        self._holdout = holdout_fraction > 0
        if self._holdout:
            self._threshold = np.uint64(min(clips.holdout_threshold(holdout_fraction), 2 ** 64 - 1))

    def process(self, batch: dict):
        batch = dict(batch, reason=limit_labels(batch, self._max_labels))
        valid = batch["reason"] == clips.OK
        stats = clips.empty_stats()
        stats["input_records"] = len(valid)
        stats["rejected_reasons"] = clips.reason_counts(batch["reason"])
        if not valid.all():
            bad = np.flatnonzero(~valid)
            for reason, n in stats["rejected_reasons"].items():
                clips.counter(f"rejected_{reason}").inc(n)
            yield beam.pvalue.TaggedOutput("rejected", clips.rejections(batch, bad, batch["reason"][bad], self._files))
        yield beam.pvalue.TaggedOutput("stats", stats)
        if valid.any():
            kept = clips.take(batch, valid) if not valid.all() else dict(batch)
            kept.pop("reason")
            kept["holdout"] = (kept["video_hash"] < self._threshold) if self._holdout else np.zeros(
                len(kept["uid"]), bool)
            clips.counter("valid_records").inc(len(kept["uid"]))
            yield kept


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

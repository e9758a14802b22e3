"""Each PTransform of the Beam job on its own, in a TestPipeline."""

import json

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines import transforms
from tests.test_readers import _sequence_example
from tfdata import readers, schema


def _batch(file, ids, reasons=None):
    records = [_sequence_example(video_id=v, labels=(i,)) for i, v in enumerate(ids)]
    parsed = readers.parse_records(records)
    if reasons is not None:
        parsed["reason"] = np.array([schema.REASON_CODES.index(r) for r in reasons], np.int32)
    return {"file": file, "positions": np.arange(len(ids)), "records": records} | parsed


def test_parse_and_validate_marks_reasons():
    raw = {"file": "f", "positions": np.arange(2), "records": [_sequence_example(), b"\x00\x01garbage"]}
    with TestPipeline() as p:
        out = (p | beam.Create([raw]) | transforms.ParseAndValidate()
               | beam.Map(lambda b: [schema.REASON_CODES[r] for r in b["reason"]]))
        assert_that(out, equal_to([["ok", "not_a_sequence_example"]]))


def test_find_duplicates_keeps_the_first_copy_by_file_and_position():
    a = _batch("a", [b"aaaaaaaaaaa", b"bbbbbbbbbbb", b"aaaaaaaaaaa"])
    b = _batch("b", [b"bbbbbbbbbbb", b"ccccccccccc"])
    with TestPipeline() as p:
        out = p | beam.Create([b, a]) | transforms.FindDuplicates()
        assert_that(out, equal_to([("a", 2), ("b", 0)]))


def test_split_clips_routes_by_reason_duplicate_and_hash():
    ids = [f"video{i:06d}".encode() for i in range(40)]
    batch = _batch("f", ids, ["ok"] * 38 + ["no_frames", "ok"])
    holdout = {v for v in ids if transforms.hash_fraction(v) < 0.3}
    with TestPipeline() as p:
        split = (p | "Batches" >> beam.Create([batch]), p | "Duplicates" >> beam.Create([("f", 39)])) | \
            transforms.SplitClips(0.3)
        rejected = split.rejected | beam.Map(lambda e: (json.loads(e)["position"], json.loads(e)["reason"]))
        assert_that(rejected, equal_to([(38, "no_frames"), (39, "duplicate")]), label="Rejected")
        held = split.holdout | beam.FlatMap(lambda b: list(b["video_id"]))
        assert_that(held, equal_to(sorted(v for v in holdout if v not in (ids[38], ids[39]))), label="Holdout")
        trained = split.train | beam.FlatMap(lambda b: list(b["video_id"]))
        assert_that(trained, equal_to([v for v in ids[:38] if v not in holdout]), label="Train")


def test_summarize_adds_batches_and_unreadable_records():
    one = transforms.Stats.empty() | {"input_records": 3, "rejected_reasons": {"duplicate": 1}, "train_clips": 2}
    unreadable = json.dumps({"file": "x", "position": 5, "reason": "unreadable_data"})
    with TestPipeline() as p:
        total = ((p | "Stats" >> beam.Create([one, one]), p | "Unreadable" >> beam.Create([unreadable]))
                 | transforms.Summarize()
                 | beam.Map(lambda s: (s["input_records"], s["rejected_reasons"], s["train_clips"])))
        assert_that(total, equal_to([(7, {"duplicate": 2, "unreadable_data": 1}, 4)]))

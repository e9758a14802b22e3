"""Scores AudioSet clips with exported SavedModels.

Scoring goes through the SavedModel's `serve_examples` signature, on the serialized records
themselves, so evaluation exercises exactly what is served. Several SavedModels average their
scores (the research code's snapshot averaging). Each batch of records is parsed once, in graph ops
(readers.parse_sequence_examples), for the labels, ids and the reason a record is skipped; only a
batch that holds bytes that are not a SequenceExample at all takes readers.parse_records' slow path.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
import tensorflow as tf

from tfdata import readers, schema

PROGRESS_SECONDS = 30  # a progress line this often when stderr is not a terminal
_NOT_A_SEQUENCE_EXAMPLE = schema.REASON_CODES.index("not_a_sequence_example")


class SavedModelError(ValueError):
    pass


def _check_saved_model(path: str) -> None:
    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        raise SavedModelError(f"{path}: not a SavedModel (no saved_model.pb)")


def resolve_saved_model(path: str) -> str:
    """`path`, or `path`/saved_model when `path` is the model dir train.py wrote (the parent of its export)."""
    inner = os.path.join(path, "saved_model")
    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")) and tf.io.gfile.exists(
            os.path.join(inner, "saved_model.pb")):
        print(f"{path} is a train.py model dir: using its export {inner}", file=sys.stderr)
        return inner
    return path


def load_saved_model(path: str):
    """tf.saved_model.load with a clear error when `path` is not an exported model of this project."""
    _check_saved_model(path)
    model = tf.saved_model.load(path)
    if "serve_examples" not in model.signatures:
        raise SavedModelError(f"{path}: SavedModel has no 'serve_examples' signature")
    return model


def class_names(saved_model_dir: str) -> tuple[str, ...]:
    """The display names exported with the model (its class_labels_indices.csv asset)."""
    _check_saved_model(saved_model_dir)
    return schema.read_class_labels(os.path.join(saved_model_dir, "assets", schema.CLASS_LABELS_FILE)).names


@dataclasses.dataclass
class Scored:
    video_id: np.ndarray  # bytes [N]
    start_time_seconds: np.ndarray  # float32 [N]
    labels: np.ndarray  # uint8 [N, 527]
    scores: np.ndarray  # float32 [N, 527], the mean over models
    skipped: dict[str, int]  # invalid records by reason


def score(saved_models: list[str], files: list[str], batch_size: int = 1024, progress=sys.stderr,
          any_length: bool = False) -> Scored:
    """Scores every valid clip of `files` once; `any_length` also accepts clips of more than 10 frames."""
    readers.check_tfrecord_files(files)  # before TensorFlow's reader, which trusts record lengths
    models = [load_saved_model(p) for p in saved_models]  # held while scoring: the signatures use their variables
    score_batch = _batch_scorer([m.signatures["serve_examples"] for m in models],
                                [schema.OK] + (["too_many_frames"] if any_length else []))
    records = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).batch(batch_size)
    parts, skipped = [], np.zeros(len(schema.REASON_CODES), np.int64)
    start, done = time.monotonic(), 0
    terminal = progress is not None and progress.isatty()  # \r lines would run together in a log
    last = start
    try:
        for serialized in records.prefetch(2):
            parts.append(_score_tolerant(score_batch, serialized, skipped))
            done += int(tf.size(serialized))
            now = time.monotonic()
            if progress and (terminal or now - last >= PROGRESS_SECONDS):
                line = f"scored {done} clips ({done / (now - start):.0f} clips/s)"
                print("\r" + line if terminal else line, end="" if terminal else "\n", file=progress, flush=True)
                last = now
    except tf.errors.DataLossError:
        raise ValueError(readers.find_data_loss(files)) from None
    if progress:
        seconds = time.monotonic() - start
        print("" if terminal else f"scored {done} records in {seconds:.0f} s ({done / max(seconds, 1e-9):.0f}/s)",
              file=progress)
    parts = [p for p in parts if len(p["video_id"])]
    if not parts:
        raise ValueError(f"no valid clip in {len(files)} file(s) (skipped: {_named(skipped) or 'none'})")
    joined = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return Scored(joined["video_id"], joined["start_time_seconds"], joined["labels"],
                  joined["scores"].astype(np.float32),
                  _named(skipped))


def _named(counts: np.ndarray) -> dict[str, int]:
    return {name: int(n) for name, n in zip(schema.REASON_CODES, counts) if n}


def _batch_scorer(signatures: list, accepted: list[str]):
    """A tf.function: serialized records [B] -> the valid clips' ids, labels and every model's scores, and
    the reasons of the others. One vectorized parse; the models see the valid records as they are served."""
    codes = tf.constant([schema.REASON_CODES.index(name) for name in accepted], tf.int32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def score_batch(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        clips = readers.parse_sequence_examples(serialized)
        valid = tf.reduce_any(tf.equal(clips["reason"][:, None], codes[None, :]), axis=1)  # [B]
        examples = tf.boolean_mask(serialized, valid)  # [V]
        scores = tf.cond(  # [M, V, 527]: every model's scores, averaged in numpy as before
            tf.size(examples) > 0,
            lambda: tf.stack([m(examples=examples)["scores"] for m in signatures]),
            lambda: tf.zeros([len(signatures), 0, schema.NUM_CLASSES], tf.float32))
        return {"video_id": tf.boolean_mask(clips["video_id"], valid),
                "start_time_seconds": tf.boolean_mask(clips["start_time_seconds"], valid),
                "labels": tf.boolean_mask(clips["labels"], valid), "scores": scores,
                "skipped": tf.boolean_mask(clips["reason"], ~valid)}

    return score_batch


def _score_tolerant(score_batch, serialized: tf.Tensor, skipped: np.ndarray) -> dict[str, np.ndarray]:
    """score_batch on one batch; a batch with records that are not SequenceExamples (the vectorized parse
    fails on it) is scored without them, and they are counted."""
    unparseable = 0
    try:
        out = score_batch(serialized)
    except tf.errors.InvalidArgumentError:
        reason = readers.parse_records(serialized.numpy().tolist())["reason"]
        parseable = reason != _NOT_A_SEQUENCE_EXAMPLE
        unparseable = int((~parseable).sum())
        out = score_batch(tf.boolean_mask(serialized, parseable))
    parsed = {key: value.numpy() for key, value in out.items()}
    skipped += np.bincount(parsed.pop("skipped"), minlength=len(schema.REASON_CODES))
    skipped[_NOT_A_SEQUENCE_EXAMPLE] += unparseable
    parsed["scores"] = np.mean(parsed["scores"], axis=0)  # [V, 527]
    return parsed

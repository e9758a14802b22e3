"""SavedModel export with two serving signatures and the class names as an asset.

- serving_default(embedding: uint8 [None, None, 128]) -> {"scores": float32 [None, 527]}
  every frame is real, so a 60-second recording is one request of 60 frames;
- serve_examples(examples: string [None]) -> {"scores": float32 [None, 527]}
  serialized AudioSet SequenceExamples of any length, parsed inside the graph.
Scores are 527 independent sigmoid probabilities (multi-label), not a softmax.
The class_labels_indices.csv travels as the asset `assets/class_labels_indices.csv`; the loaded
model also has `class_names` (a string variable [527]).

    python -m models.exporting --average DIR [DIR ...] --output OUT

writes one SavedModel with the same signatures whose scores are the mean of the given SavedModels'
scores (an ensemble that serves like a single model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import tensorflow as tf
import tf_keras as keras

from tfdata import schema

CLASS_LABELS_ASSET = "class_labels_indices.csv"
METADATA_FILE = "export_metadata.json"  # beside saved_model.pb: which weights, validation figures


class _Labelled(tf.Module):
    """A module that carries the class labels: the csv as an asset and `class_names` [527]."""

    def __init__(self, class_labels_csv: str):
        super().__init__()
        self.class_labels = tf.saved_model.Asset(class_labels_csv)
        self.class_names = tf.Variable(list(schema.read_class_labels(class_labels_csv).names), trainable=False)


def _save(module: _Labelled, export_dir: str) -> str:
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": module.serve_embeddings.get_concrete_function(),
        "serve_examples": module.serve_examples.get_concrete_function(),
    })
    return export_dir


class ServingModule(_Labelled):
    def __init__(self, model: keras.Model, class_labels_csv: str):
        super().__init__(class_labels_csv)
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, None, schema.EMBEDDING_DIM], tf.uint8, name="embedding")])
    def serve_embeddings(self, embedding):
        num_frames = tf.fill([tf.shape(embedding)[0]], tf.shape(embedding)[1])  # [B]: all frames real
        return {"scores": self.model({"embedding": embedding, "num_frames": num_frames}, training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples):
        _, sequence, lengths = tf.io.parse_sequence_example(
            examples, sequence_features={schema.EMBEDDING_KEY: tf.io.FixedLenSequenceFeature([], tf.string)})
        frames = sequence[schema.EMBEDDING_KEY]  # [B, T_max] strings, "" after each clip's end
        frames = tf.where(tf.equal(frames, ""), tf.constant(b"\0" * schema.EMBEDDING_DIM), frames)
        embedding = tf.io.decode_raw(frames, tf.uint8, fixed_length=schema.EMBEDDING_DIM)  # [B, T_max, 128]
        num_frames = tf.cast(lengths[schema.EMBEDDING_KEY], tf.int32)  # [B]
        return {"scores": self.model({"embedding": embedding, "num_frames": num_frames}, training=False)}


def export(model: keras.Model, export_dir: str, class_labels_csv: str, metadata: dict | None = None) -> str:
    """Writes the SavedModel; the asset is copied in under its standard name, and `metadata` (which
    weights the export holds, and why) to EXPORT/METADATA_FILE."""
    module = ServingModule(model, class_labels_csv)
    if os.path.basename(class_labels_csv) != CLASS_LABELS_ASSET:
        raise ValueError(f"{class_labels_csv}: the class labels file must be named {CLASS_LABELS_ASSET}")
    _save(module, export_dir)
    if metadata is not None:
        path = os.path.join(export_dir, METADATA_FILE)
        with tf.io.gfile.GFile(path + ".tmp", "w") as f:
            json.dump(metadata, f, indent=1)
        tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    return export_dir


def read_metadata(export_dir: str) -> dict | None:
    """The metadata train.py wrote beside a SavedModel (None for exports without it)."""
    path = os.path.join(export_dir, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


class AverageModule(_Labelled):
    """The mean of several exported models' scores, behind the same two signatures."""

    def __init__(self, members: list, class_labels_csv: str):
        super().__init__(class_labels_csv)
        self.members = members

    def _mean(self, signature: str, **inputs) -> dict:
        scores = [m.signatures[signature](**inputs)["scores"] for m in self.members]  # K x [B, 527]
        return {"scores": tf.add_n(scores) / len(scores)}

    @tf.function(input_signature=[tf.TensorSpec([None, None, schema.EMBEDDING_DIM], tf.uint8, name="embedding")])
    def serve_embeddings(self, embedding):
        return self._mean("serving_default", embedding=embedding)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples):
        return self._mean("serve_examples", examples=examples)


def export_average(member_dirs: list[str], export_dir: str) -> str:
    """One SavedModel averaging the scores of member_dirs (SavedModels written by `export`, same classes)."""
    labels = [tf.io.gfile.GFile(os.path.join(d, "assets", CLASS_LABELS_ASSET)).read() for d in member_dirs]
    if any(text != labels[0] for text in labels):
        raise ValueError("the models to average were exported with different class labels")
    module = AverageModule([tf.saved_model.load(d) for d in member_dirs],
                           os.path.join(member_dirs[0], "assets", CLASS_LABELS_ASSET))
    return _save(module, export_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Averages exported models into one SavedModel.")
    parser.add_argument("--average", nargs="+", required=True, help="SavedModel directories written by train.py")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    for d in args.average:
        if not tf.io.gfile.exists(os.path.join(d, "assets", CLASS_LABELS_ASSET)):
            parser.error(f"{d}: not a SavedModel written by train.py (no assets/{CLASS_LABELS_ASSET})")
    if tf.io.gfile.exists(args.output):
        parser.error(f"{args.output} exists; choose a new directory")
    try:
        export_average(args.average, args.output)
    except ValueError as e:
        parser.error(str(e))
    print(f"exported the average of {len(args.average)} models to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

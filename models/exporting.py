"""SavedModel export with two serving signatures and the class names as an asset.

- serving_default(embedding: uint8 [None, None, 128]) -> {"scores": float32 [None, 527]}
  every frame is real, so a 60-second recording is one request of 60 frames;
- serve_examples(examples: string [None]) -> {"scores": float32 [None, 527]}
  serialized AudioSet SequenceExamples of any length, parsed inside the graph.
Scores are 527 independent sigmoid probabilities (multi-label), not a softmax.
The class_labels_indices.csv travels as the asset `assets/class_labels_indices.csv`; the loaded
model also has `class_names` (a string variable [527]).
"""

from __future__ import annotations

import os

import tensorflow as tf
import tf_keras as keras

from tfdata import schema

CLASS_LABELS_ASSET = "class_labels_indices.csv"


class ServingModule(tf.Module):
    def __init__(self, model: keras.Model, class_labels_csv: str):
        super().__init__()
        self.model = model
        self.class_labels = tf.saved_model.Asset(class_labels_csv)
        self.class_names = tf.Variable(list(schema.read_class_labels(class_labels_csv).names), trainable=False)

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


def export(model: keras.Model, export_dir: str, class_labels_csv: str) -> str:
    """Writes the SavedModel; the asset is copied in under its standard name."""
    module = ServingModule(model, class_labels_csv)
    if os.path.basename(class_labels_csv) != CLASS_LABELS_ASSET:
        raise ValueError(f"{class_labels_csv}: the class labels file must be named {CLASS_LABELS_ASSET}")
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": module.serve_embeddings.get_concrete_function(),
        "serve_examples": module.serve_examples.get_concrete_function(),
    })
    return export_dir

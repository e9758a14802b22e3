"""SavedModel export with two serving signatures and the class names as an asset.

- serving_default(embedding: uint8 [None, None, 128]) -> {"scores": float32 [None, 527]}
  every frame is real, so a 60-second recording is one request of 60 frames;
- serve_examples(examples: string [None]) -> {"scores": float32 [None, 527]}
  serialized AudioSet SequenceExamples of any length, parsed inside the graph.
Scores are 527 independent sigmoid probabilities (multi-label), not a softmax. Both signatures refuse,
with an InvalidArgumentError that says why, a clip of 0 frames and (serve_examples) a frame that is
not 128 bytes or a record that is not a SequenceExample: never a NaN score or a padded frame.
The class_labels_indices.csv travels as the asset `assets/class_labels_indices.csv`; the loaded
model also has `class_names` (a string variable [527]).

    python -m models.exporting --average DIR [DIR ...] --output OUT

writes one SavedModel with the same signatures whose scores are the mean of the given SavedModels'
scores (an ensemble that serves like a single model).

    python -m models.exporting --audio DIR --vggish_checkpoint vggish_model.ckpt \
        --pca_params vggish_pca_params.npz --output OUT

writes one SavedModel that keeps DIR's two signatures and adds VGGish in front of them (tfdata.vggish):
- serve_waveform(waveform: float32 [None, None], 16 kHz mono in [-1, 1], at least 15,600 samples)
  -> {"scores": float32 [B, 527]: the classifier on all T examples of each waveform at once (the
      models pool over any number of frames, so a 60-s waveform is 62 frames, no 10-s windows),
      "frame_scores": float32 [B, T, 527]: the classifier on each 0.96-s example alone,
      "embedding": uint8 [B, T, 128]: VGGish's codes, as embed_audio writes them}.
Resampling (resampy) stays outside the graph: tfdata.audio.load does it before the call.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Averages exported models into one SavedModel, or puts VGGish "
                                                 "in front of one (serve_waveform).", allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--average", nargs="+", help="SavedModel directories written by train.py")
    mode.add_argument("--audio", help="a SavedModel written by train.py (or --average) to serve waveforms with")
    parser.add_argument("--vggish_checkpoint", help="Google's vggish_model.ckpt (with --audio)")
    parser.add_argument("--pca_params", help="Google's vggish_pca_params.npz (with --audio)")
    parser.add_argument("--output", required=True, help="a new directory for the SavedModel")
    return parser


if __name__ == "__main__":  # answer --help and reject bad arguments before TensorFlow loads (below)
    build_parser().parse_args()

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from models.config import EXPORT_METADATA_FILE  # noqa: E402
from tfdata import fileio, schema  # noqa: E402

CLASS_LABELS_ASSET = schema.CLASS_LABELS_FILE
METADATA_FILE = EXPORT_METADATA_FILE  # beside saved_model.pb: which weights, validation figures


class _Labelled(tf.Module):
    """A module that carries the class labels: the csv as an asset and `class_names` [527]."""

    def __init__(self, class_labels_csv: str):
        super().__init__()
        self.class_labels = tf.saved_model.Asset(class_labels_csv)
        self.class_names = tf.Variable(list(schema.read_class_labels(class_labels_csv).names), trainable=False)


def _save(module: _Labelled, export_dir: str, metadata: dict | None = None) -> str:
    """Saves under a temporary name beside export_dir, then renames: a reader sees a whole export or none."""
    tmp = fileio.temporary_sibling(export_dir)
    try:
        tf.saved_model.save(module, tmp, signatures={
            "serving_default": module.serve_embeddings.get_concrete_function(),
            "serve_examples": module.serve_examples.get_concrete_function(),
        })
        if metadata is not None:
            with tf.io.gfile.GFile(os.path.join(tmp, METADATA_FILE), "w") as f:
                json.dump(metadata, f, indent=1)
        fileio.replace_directory(tmp, export_dir)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
        raise
    return export_dir


class ServingModule(_Labelled):
    """The model's variables and its two signatures. The Keras model itself is not tracked: the export
    needs no Keras metadata (nothing loads it as Keras), and tracking it would trace every layer's call."""

    def __init__(self, model: keras.Model, class_labels_csv: str):
        super().__init__(class_labels_csv)
        self.model_variables = list(model.variables)  # saved; the signatures capture them
        self._call = functools.partial(model.__call__, training=False)  # untracked: not a trackable

    @tf.function(input_signature=[tf.TensorSpec([None, None, schema.EMBEDDING_DIM], tf.uint8, name="embedding")])
    def serve_embeddings(self, embedding):
        num_frames = tf.fill([tf.shape(embedding)[0]], tf.shape(embedding)[1])  # [B]: all frames real
        with tf.control_dependencies([_check_frames(num_frames, "serving_default")]):
            embedding = tf.identity(embedding)
        return {"scores": self._call({"embedding": embedding, "num_frames": num_frames})}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples):
        _, sequence, lengths = tf.io.parse_sequence_example(
            examples, sequence_features=schema.sequence_features(padded=True))
        frames = sequence[schema.EMBEDDING_KEY]  # [B, T_max] strings, "" after each clip's end
        num_frames = tf.cast(lengths[schema.EMBEDDING_KEY], tf.int32)  # [B]
        real = tf.sequence_mask(num_frames, tf.shape(frames)[1])  # [B, T_max]
        wrong = real & tf.not_equal(tf.strings.length(frames), schema.EMBEDDING_DIM)  # [B, T_max]
        bad = schema.failed("bad_frame_length", {"bad_frames": tf.reduce_any(wrong, axis=1)})  # [B]
        first = tf.cast(tf.argmax(tf.concat([tf.cast(bad, tf.int32), [0]], 0)), tf.int32)
        length_ok = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [
            f"serve_examples: every {schema.EMBEDDING_KEY} frame must be {schema.EMBEDDING_DIM} bytes; example",
            first, "has a frame of", tf.strings.length(tf.boolean_mask(frames, wrong))[:1], "bytes"])
        with tf.control_dependencies([length_ok, _check_frames(num_frames, "serve_examples")]):
            frames = tf.where(real, frames, tf.constant(b"\0" * schema.EMBEDDING_DIM))
        embedding = tf.io.decode_raw(frames, tf.uint8, fixed_length=schema.EMBEDDING_DIM)  # [B, T_max, 128]
        return {"scores": self._call({"embedding": embedding, "num_frames": num_frames})}


def _check_frames(num_frames: tf.Tensor, signature: str) -> tf.Operation:
    """An InvalidArgumentError naming the first clip of 0 frames (its score would be NaN)."""
    first = tf.cast(tf.argmin(tf.concat([num_frames, [1]], 0)), tf.int32)
    empty = schema.failed("no_frames", {"total_frames": num_frames})  # [B]
    return tf.debugging.Assert(tf.logical_not(tf.reduce_any(empty)), [
        f"{signature}: every clip needs at least one frame; clip", first, "has 0 frames"])


def export(model: keras.Model, export_dir: str, class_labels_csv: str, metadata: dict | None = None) -> str:
    """Writes the SavedModel; the asset is copied in under its standard name, and `metadata` (which
    weights the export holds, and why) to EXPORT/METADATA_FILE."""
    check_class_labels(class_labels_csv)
    module = ServingModule(model, class_labels_csv)
    return _save(module, export_dir, metadata)


def check_class_labels(class_labels_csv: str) -> None:
    """ValueError naming the file unless it is a valid class_labels_indices.csv (call before training)."""
    if os.path.basename(class_labels_csv) != CLASS_LABELS_ASSET:
        raise ValueError(f"{class_labels_csv}: the class labels file must be named {CLASS_LABELS_ASSET}")
    schema.read_class_labels(class_labels_csv)


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


class WaveformModule(_Labelled):
    """An exported classifier behind VGGish: its two signatures unchanged, plus serve_waveform."""

    def __init__(self, classifier, embedder, class_labels_csv: str):
        super().__init__(class_labels_csv)
        self.classifier, self.embedder = classifier, embedder

    def _scores(self, embedding):
        return self.classifier.signatures["serving_default"](embedding=embedding)["scores"]

    @tf.function(input_signature=[tf.TensorSpec([None, None, schema.EMBEDDING_DIM], tf.uint8, name="embedding")])
    def serve_embeddings(self, embedding):
        return {"scores": self._scores(embedding)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples):
        return {"scores": self.classifier.signatures["serve_examples"](examples=examples)["scores"]}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveform")])
    def serve_waveform(self, waveform):
        from tfdata import audio  # decoding libraries load only for audio exports

        min_samples = audio.PARAMS.min_samples
        tf.debugging.assert_greater_equal(
            tf.shape(waveform)[1], min_samples,
            message=f"waveform too short: VGGish needs at least {min_samples} samples at 16 kHz "
                    f"({min_samples / audio.PARAMS.sample_rate:.3f} s) for one 0.96-s example")
        codes = self.embedder(waveform)["embedding"]  # [B, T, 128] uint8
        batch, steps = tf.shape(codes)[0], tf.shape(codes)[1]
        frame_scores = self._scores(tf.reshape(codes, [-1, 1, schema.EMBEDDING_DIM]))  # [B*T, 527]
        return {"scores": self._scores(codes),  # [B, 527]
                "frame_scores": tf.reshape(frame_scores, [batch, steps, schema.NUM_CLASSES]),  # [B, T, 527]
                "embedding": codes}


def export_audio(classifier_dir: str, vggish_checkpoint: str, pca_params: str, export_dir: str) -> str:
    """One SavedModel: classifier_dir's signatures plus serve_waveform (VGGish from Google's files)."""
    from tfdata import vggish

    embedder = vggish.Embedder.from_files(vggish_checkpoint, pca_params)
    module = WaveformModule(tf.saved_model.load(classifier_dir), embedder,
                            os.path.join(classifier_dir, "assets", CLASS_LABELS_ASSET))
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": module.serve_embeddings.get_concrete_function(),
        "serve_examples": module.serve_examples.get_concrete_function(),
        "serve_waveform": module.serve_waveform.get_concrete_function(),
    })
    return export_dir


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.audio:
        return _main_audio(parser, args)
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


def _main_audio(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from tfdata import vggish

    if not (args.vggish_checkpoint and args.pca_params):
        parser.error("--audio needs --vggish_checkpoint and --pca_params (Google's VGGish files; see README)")
    if not tf.io.gfile.exists(os.path.join(args.audio, "assets", CLASS_LABELS_ASSET)):
        parser.error(f"{args.audio}: not a SavedModel written by train.py (no assets/{CLASS_LABELS_ASSET})")
    if tf.io.gfile.exists(args.output):
        parser.error(f"{args.output} exists; choose a new directory")
    try:
        export_audio(args.audio, args.vggish_checkpoint, args.pca_params, args.output)
    except vggish.CheckpointError as e:
        parser.error(str(e))
    print(f"exported {args.audio} with VGGish (serve_waveform) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

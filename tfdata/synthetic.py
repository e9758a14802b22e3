"""Synthetic AudioSet: clips in exactly the released format, with AudioSet-like statistics.

    python -m tfdata.synthetic --output_dir DIR --num_clips N --seed S [--format tfrecord|hdf5]

The generative model, chosen so that the rest of the system is exercised for real:
- Classes: a Zipf law over 527 classes (weight (rank + 1) ** -ZIPF_EXPONENT, rank = class
  index), so a few classes are in a large share of clips and many are rare. Each clip has
  1 + Poisson(1.4) labels, capped at 6 (mean about 2.4, as AudioSet), drawn without replacement
  in proportion to the weights.
- Sounds: each class has a prototype vector (a shared family vector, 40 families of about 13
  classes, plus its own part, so siblings are confusable) and a typical duration: 40% of classes
  are long (8-10 s), the rest are short events (1-4 s). A labelled sound is present only in a
  contiguous run of frames of that duration (weak labels) with a random gain, over a per-clip
  background and per-frame noise. 30% of clips also hold a faint unlabelled sound.
- 2% of clips are shorter than 10 frames (1-9 frames), like AudioSet.
- The float frames are quantized exactly as VGGish's postprocessor does.

Files are named by the first two characters of the video id, as in the release, clips sorted by
video id, and the same arguments give byte-identical files. See BUILD.md for the mAP that the
models reach on this data.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile

import numpy as np

from tfdata import schema

ZIPF_EXPONENT = 1.0
MEAN_EXTRA_LABELS = 1.4
MAX_LABELS = 6
SHORT_CLIP_FRACTION = 0.02
NUM_FAMILIES = 40
_ID_ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", np.uint8)
_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    num_clips: int
    seed: int = 0
    noise: float = 0.6  # std of per-frame noise, in VGGish units (the quantizer clips at +-2)
    background: float = 0.3  # std of the per-clip background vector
    signal: float = 0.4  # std of each prototype component
    family_share: float = 0.5  # how much of a prototype is its family's vector
    distractor_fraction: float = 0.3


@dataclasses.dataclass(frozen=True)
class ClassModel:
    """The hidden per-class parameters that the data is drawn from."""
    weights: np.ndarray  # float64 [527], sums to 1
    prototypes: np.ndarray  # float32 [527, 128]
    durations: np.ndarray  # int32 [527], seconds a sound of this class lasts


def class_model(seed: int, config: SyntheticConfig) -> ClassModel:
    rng = np.random.default_rng([seed, 1])
    weights = (np.arange(schema.NUM_CLASSES) + 1.0) ** -ZIPF_EXPONENT
    family = rng.integers(0, NUM_FAMILIES, schema.NUM_CLASSES)  # [527]
    family_vectors = rng.normal(0, 1, [NUM_FAMILIES, schema.EMBEDDING_DIM])
    own = rng.normal(0, 1, [schema.NUM_CLASSES, schema.EMBEDDING_DIM])
    share = config.family_share
    prototypes = config.signal * (np.sqrt(share) * family_vectors[family] + np.sqrt(1 - share) * own)
    long = rng.random(schema.NUM_CLASSES) < 0.4
    durations = np.where(long, rng.integers(8, 11, schema.NUM_CLASSES), rng.integers(1, 5, schema.NUM_CLASSES))
    return ClassModel(weights / weights.sum(), prototypes.astype(np.float32), durations.astype(np.int32))


def class_labels() -> schema.ClassLabels:
    return schema.ClassLabels(
        tuple(f"/m/synthetic{c:03d}" for c in range(schema.NUM_CLASSES)),
        tuple(f"Synthetic class {c}" for c in range(schema.NUM_CLASSES)))


def generate(config: SyntheticConfig):
    """Yields chunks of clips sorted by video id: dicts of numpy arrays (reader layout, no `reason`)."""
    model = class_model(config.seed, config)
    rng = np.random.default_rng([config.seed, 2])
    ids = _video_ids(rng, config.num_clips)  # [N] bytes, sorted
    for begin in range(0, config.num_clips, _CHUNK):
        yield _clips(rng, model, config, ids[begin:begin + _CHUNK])


def _video_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    while True:
        codes = _ID_ALPHABET[rng.integers(0, 64, [n, 11])]  # [N, 11] ascii
        ids = np.unique(codes.view("S11").ravel())  # sorted; a collision (p ~ n^2 / 2^67) redraws
        if len(ids) == n:
            return ids


def _clips(rng: np.random.Generator, model: ClassModel, config: SyntheticConfig, ids: np.ndarray) -> dict:
    n, t, d = len(ids), schema.NUM_FRAMES, schema.EMBEDDING_DIM
    num_labels = np.minimum(1 + rng.poisson(MEAN_EXTRA_LABELS, n), MAX_LABELS)  # [N]
    gumbel = np.log(model.weights) - np.log(-np.log(rng.random([n, schema.NUM_CLASSES])))  # [N, 527]
    ranked = np.argsort(-gumbel, axis=1)[:, :MAX_LABELS]  # [N, 6]: weighted draw without replacement
    labelled = np.arange(MAX_LABELS) < num_labels[:, None]  # [N, 6]
    distractor = ranked[:, MAX_LABELS - 1]  # [N]: never labelled when a clip has < 6 labels
    has_distractor = (rng.random(n) < config.distractor_fraction) & (num_labels < MAX_LABELS)

    frames = rng.normal(0, config.background, [n, 1, d]) + rng.normal(0, config.noise, [n, t, d])  # [N, T, D]
    for slot in range(MAX_LABELS):
        cls = ranked[:, slot]
        present = labelled[:, slot] | ((slot == MAX_LABELS - 1) & has_distractor)  # [N]
        gain = np.where(labelled[:, slot], rng.uniform(0.3, 1.2, n), 0.3) * present  # [N]
        duration = model.durations[cls]  # [N]
        start = (rng.random(n) * (t - duration + 1)).astype(np.int32)  # [N]
        frame = np.arange(t)[None, :]  # [1, T]
        active = (frame >= start[:, None]) & (frame < (start + duration)[:, None])  # [N, T]
        frames += (gain[:, None] * active)[:, :, None] * model.prototypes[cls][:, None, :]  # [N, T, D]
    embedding = schema.quantize(frames)  # uint8 [N, T, D]

    short = rng.random(n) < SHORT_CLIP_FRACTION
    num_frames = np.where(short, rng.integers(1, t, n), t).astype(np.int32)  # [N]
    embedding[np.arange(t)[None, :] >= num_frames[:, None]] = 0  # zero padding, as the readers give it
    labels = np.zeros([n, schema.NUM_CLASSES], np.uint8)
    np.put_along_axis(labels, ranked, labelled.astype(np.uint8), axis=1)  # [N, 527]
    start_time = (rng.integers(0, 30, n) * 10).astype(np.float32)
    return {"embedding": embedding, "num_frames": num_frames, schema.LABELS_KEY: labels,
            schema.VIDEO_ID_KEY: ids, schema.START_TIME_KEY: start_time}


def sequence_example(clip: dict, i: int) -> bytes:
    """One clip of a generated chunk -> a serialized SequenceExample in the released format."""
    return schema.encode_sequence_example(
        clip[schema.VIDEO_ID_KEY][i], float(clip[schema.START_TIME_KEY][i]), int(clip["num_frames"][i]),
        np.flatnonzero(clip[schema.LABELS_KEY][i]).tolist(), clip["embedding"][i])


def write_tfrecords(config: SyntheticConfig, output_dir: str) -> list[str]:
    """Writes `{first two id characters}.tfrecord` files, as in features.tar.gz."""
    import tensorflow as tf  # here, not at the top: --help does not wait for TensorFlow

    tf.io.gfile.makedirs(output_dir)
    paths, writer, prefix = [], None, None
    for clip in generate(config):
        for i, video_id in enumerate(clip[schema.VIDEO_ID_KEY]):
            if video_id[:2] != prefix:
                if writer:
                    writer.close()
                prefix = video_id[:2]
                paths.append(os.path.join(output_dir, prefix.decode() + ".tfrecord"))
                writer = tf.io.TFRecordWriter(paths[-1])
            writer.write(sequence_example(clip, i))
    if writer:
        writer.close()
    return paths


def write_hdf5(config: SyntheticConfig, path: str) -> None:
    """Writes the research code's HDF5 layout (plus num_frames and start_time_seconds), streaming."""
    import h5py

    n = config.num_clips
    local = path if "://" not in path else os.path.join(tempfile.mkdtemp(), "clips.h5")
    with h5py.File(local, "w") as h5:
        columns = {
            schema.H5_EMBEDDING: h5.create_dataset(schema.H5_EMBEDDING, (n, schema.NUM_FRAMES, schema.EMBEDDING_DIM), np.uint8),
            schema.H5_LABELS: h5.create_dataset(schema.H5_LABELS, (n, schema.NUM_CLASSES), np.bool_),
            schema.H5_VIDEO_ID: h5.create_dataset(schema.H5_VIDEO_ID, (n,), "S11"),
            schema.H5_NUM_FRAMES: h5.create_dataset(schema.H5_NUM_FRAMES, (n,), np.int32),
            schema.H5_START_TIME: h5.create_dataset(schema.H5_START_TIME, (n,), np.float32),
        }
        source = {schema.H5_EMBEDDING: "embedding", schema.H5_LABELS: schema.LABELS_KEY,
                  schema.H5_VIDEO_ID: schema.VIDEO_ID_KEY, schema.H5_NUM_FRAMES: "num_frames",
                  schema.H5_START_TIME: schema.START_TIME_KEY}
        begin = 0
        for clip in generate(config):
            end = begin + len(clip[schema.VIDEO_ID_KEY])
            for name, column in columns.items():
                column[begin:end] = clip[source[name]]
            begin = end
    if local != path:  # h5py needs a seekable local file; copy to gs:// and the like afterwards
        import tensorflow as tf

        tf.io.gfile.copy(local, path, overwrite=True)
        os.remove(local)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output_dir", required=True, help=f"where the files and {schema.CLASS_LABELS_FILE} go")
    parser.add_argument("--num_clips", type=int, required=True, help="number of 10-second clips")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives byte-identical files")
    parser.add_argument("--format", choices=["tfrecord", "hdf5"], default="tfrecord",
                        help="the release's TFRecords or the research code's HDF5")
    args = parser.parse_args(argv)
    if args.num_clips < 1:
        parser.error("--num_clips must be at least 1")
    config = SyntheticConfig(num_clips=args.num_clips, seed=args.seed)
    import tensorflow as tf

    tf.io.gfile.makedirs(args.output_dir)
    if args.format == "tfrecord":
        files = write_tfrecords(config, args.output_dir)
        where = f"{len(files)} TFRecord files"
    else:
        write_hdf5(config, os.path.join(args.output_dir, "synthetic.h5"))
        where = "synthetic.h5"
    with tf.io.gfile.GFile(os.path.join(args.output_dir, schema.CLASS_LABELS_FILE), "w") as f:
        f.write(class_labels().to_csv())
    print(f"wrote {args.num_clips} synthetic clips to {args.output_dir} ({where} + {schema.CLASS_LABELS_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

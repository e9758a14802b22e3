"""The tf.data input: uniform or class-balanced training batches and every-clip-once evaluation batches.

Training reads the balanced shards that beam_pipelines.build_shards writes: per class, blocks of
K clips that carry that class (a clip is in the files of each of its classes; a small class's last
file also holds its clips again, cycled). Two samplings read them:

- uniform (train.py's default, chosen on eval_a): every clip once per pass. A clip is read from the
  files of its lowest class index only, and only from its class's first cycle (the first
  class_counts[c] clip positions of the class's files, in file order), so each distinct clip is kept
  exactly once; the files are read in a fresh order on every pass, several at a time, and the clips
  go through a shuffle buffer of UNIFORM_SHUFFLE_CLIPS.
- balanced (the research code's): one dataset per class cycles through its blocks (file order and
  a small buffer of blocks reshuffled on every pass); a round-robin over the 527 class datasets
  takes one block from each; one gather turns those 527 blocks into K "rounds" of 527 clips, one
  clip per class in a fresh random class order per round. A batch of 500 therefore draws about one
  clip per class, the next clip of each class's shuffled cycle, as the research code's balanced
  generator does, while tf.data moves blocks rather than single clips.

Memory depends on K and the shuffle buffers, not on the size of the data.
"""

from __future__ import annotations

import os

import tensorflow as tf

from tfdata import readers, schema

MANIFEST = schema.MANIFEST_FILE
CLASS_SHUFFLE_BLOCKS = 4  # blocks buffered per class for shuffling: 527 x 4 x K clips in memory
READ_BUFFER_BYTES = 256 << 10  # per open class file: 527 of them are open at once
READ_THREADS = 2  # threads reading the class streams, in the same round-robin order (docs/benchmarks.md, "Input pipeline")
SAMPLINGS = ("uniform", "balanced")
UNIFORM_SHUFFLE_CLIPS = 16_384  # uniform sampling's shuffle buffer (at most): 22 MB of clips, 3/4 of bal_train
UNIFORM_OPEN_FILES = 32  # files read at once by uniform sampling, each decoded whole (<= 64 blocks, 8 MB)


ShardsError = schema.ShardsError


def read_manifest(shards_dir: str) -> dict:
    """The manifest of a finished Beam run as a dict (schema.Manifest); refuses missing, unfinished or
    other-version shards, and names the command that builds shards when given raw TFRecords."""
    raw = _raw_tfrecords(shards_dir)
    if raw:
        raise ShardsError(f"{shards_dir}: AudioSet TFRecords, not shards; build shards from them first:\n"
                          f"  python -m beam_pipelines.build_shards --input '{raw}' --output_dir shards\n"
                          "and pass the output directory (here: shards)")
    return schema.Manifest.read(shards_dir).to_dict()


def _raw_tfrecords(path: str) -> str | None:
    """The glob of TFRecords that `path` names (a glob, a file or a directory of them) when it is not shards."""
    if tf.io.gfile.isdir(path):
        parent = os.path.dirname(path.rstrip("/"))
        if any(tf.io.gfile.exists(os.path.join(d, MANIFEST)) for d in (path, parent)):  # shards or one of their splits
            return None
        pattern = os.path.join(path, "*.tfrecord")
    else:
        pattern = path
    return pattern if pattern.endswith(".tfrecord") and tf.io.gfile.glob(pattern) else None


def train_dataset(shards_dir: str, batch_size: int, seed: int | None = None, *, sampling: str = "uniform",
                  mixup: float = 0.0, input_pipeline_id: int = 0, num_input_pipelines: int = 1,
                  read_threads: int = READ_THREADS) -> tf.data.Dataset:
    """Endless batches `({"embedding": uint8 [B,10,128], "num_frames": int32 [B]}, uint8 [B,527])`, sampled
    uniformly or class-balanced (see the module docstring).

    With several input pipelines (workers), each reads its own subset of the files (balanced: of every
    class that has at least as many files as pipelines), and all use different random orders. With
    mixup > 0 every clip is mixed with another clip of its batch (see `_mixup`; labels become float32).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    manifest = read_manifest(shards_dir)
    split = manifest["splits"].get("train")
    if split is None or split["layout"] != "balanced":
        raise ShardsError(f"{shards_dir}: no balanced 'train' split (splits: {', '.join(manifest['splits'])})")
    seed = None if seed is None else seed * 1_000_003 + input_pipeline_id
    if sampling == "uniform":
        dataset = _uniform_clips(shards_dir, manifest, seed, input_pipeline_id, num_input_pipelines, read_threads)
        dataset = dataset.batch(batch_size, drop_remainder=True)
    else:
        dataset = _balanced_clips(shards_dir, split, seed, input_pipeline_id, num_input_pipelines, read_threads)
        dataset = dataset.rebatch(batch_size, drop_remainder=True)
    if mixup > 0:
        mix_seeds = tf.data.Dataset.random(seed=None if seed is None else seed + 1).batch(2)
        dataset = tf.data.Dataset.zip((dataset, mix_seeds)).map(
            lambda batch, s: _mixup(batch, s, mixup), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.map(_to_features).prefetch(tf.data.AUTOTUNE)


def _uniform_clips(shards_dir: str, manifest: dict, seed: int | None, input_pipeline_id: int,
                   num_input_pipelines: int, read_threads: int, passes: int = 2 ** 62) -> tf.data.Dataset:
    """Single clips {embedding [10,128], num_frames [], labels [527]}, endless: each clip of the split once
    per pass, shuffled (module docstring)."""
    split = manifest["splits"]["train"]
    k = split["block_size"]
    blocks_per_file = manifest["args"].get("blocks_per_file")
    if not blocks_per_file:
        raise ShardsError(f"{shards_dir}: the manifest does not say --blocks_per_file; rebuild the shards")
    # Each file's class, the position of its first clip in its class's sequence, and the blocks to
    # read: those that hold a clip of the first cycle (schema.class_plan; min_blocks 1 leaves no repeats).
    entries = []
    for c, (files, n) in enumerate(zip(split["class_files"], split["class_counts"])):
        plan = schema.class_plan(n, k, 1, blocks_per_file) if n else []
        if len(plan) != len(files):
            raise ShardsError(f"{shards_dir}: class {c} has {len(files)} files where {n} clips in blocks of {k}, "
                              f"{blocks_per_file} blocks a file, make {len(plan)}; rebuild the shards")
        entries += [(os.path.join(shards_dir, name), c, first * k, n, end - first)
                    for name, (first, end) in zip(files, plan)]
    if len(entries) >= num_input_pipelines:
        entries = entries[input_pipeline_id::num_input_pipelines]
    paths, *numbers = zip(*entries)
    paths = tf.constant(paths)
    classes, firsts, counts, blocks = (tf.constant(column, tf.int64) for column in numbers)
    file_seed = tf.constant(0 if seed is None else seed, tf.int64)

    def own_clips(f: tf.Tensor) -> tf.data.Dataset:
        """File f's clips that are read from it: first cycle, and f's class is their lowest."""
        def keep(serialized):  # [N] blocks: the file's blocks to read, decoded at once
            block = schema.decode_blocks(serialized, k)  # each [N, K, ...]
            position = firsts[f] + tf.range(tf.size(serialized, out_type=tf.int64) * k)  # [N*K]
            labels = tf.reshape(block[schema.LABELS_KEY], [-1, schema.NUM_CLASSES])  # [N*K, 527]
            lowest = tf.argmax(labels, axis=1, output_type=tf.int64)  # [N*K]: first label
            kept = (position < counts[f]) & tf.equal(lowest, classes[f])  # [N*K]
            return {"embedding": tf.boolean_mask(tf.reshape(block["embedding"], [-1, schema.NUM_FRAMES,
                                                                                schema.EMBEDDING_DIM]), kept),
                    "num_frames": tf.boolean_mask(tf.reshape(block["num_frames"], [-1]), kept),
                    schema.LABELS_KEY: tf.boolean_mask(labels, kept)}  # each [kept, ...]
        records = tf.data.TFRecordDataset(paths[f], buffer_size=READ_BUFFER_BYTES).take(blocks[f])
        return records.batch(blocks[f]).map(keep).unbatch()

    orders = tf.data.Dataset.range(passes).map(
        lambda p: _shuffled(tf.range(len(entries)), tf.stack([file_seed, p]), seed is None))
    clips = orders.unbatch().interleave(own_clips, cycle_length=UNIFORM_OPEN_FILES, block_length=k,
                                        num_parallel_calls=read_threads, deterministic=True)
    # A buffer larger than a pass would only delay the first batch (small data: tests, demos).
    return clips.shuffle(min(UNIFORM_SHUFFLE_CLIPS, max(1, split["clips"] // num_input_pipelines)), seed=seed)


def _balanced_clips(shards_dir: str, split: dict, seed: int | None, input_pipeline_id: int,
                    num_input_pipelines: int, read_threads: int) -> tf.data.Dataset:
    """Endless rounds of one clip per class, each a dict of [K*C, ...] tensors (module docstring)."""
    k = split["block_size"]
    class_files = []
    for files in split["class_files"]:
        if len(files) >= num_input_pipelines:
            files = files[input_pipeline_id::num_input_pipelines]
        if files:  # a class without clips cannot be drawn; the manifest's class_counts say so
            class_files.append([os.path.join(shards_dir, f) for f in files])
    num_classes = len(class_files)
    file_seed = tf.constant(0 if seed is None else seed, tf.int64)

    def class_blocks(c: tf.Tensor, files: tf.Tensor) -> tf.data.Dataset:
        """One class's blocks, endless: its files in a new order on every pass, blocks lightly shuffled."""
        passes = tf.data.Dataset.range(2 ** 62).map(
            lambda p: _shuffled(files, tf.stack([file_seed * 7919 + c, p]), seed is None))
        return (passes.unbatch()
                .flat_map(lambda path: tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES))
                .shuffle(CLASS_SHUFFLE_BLOCKS, seed=seed))

    classes = tf.data.Dataset.from_tensor_slices((tf.range(num_classes, dtype=tf.int64),
                                                  tf.ragged.constant(class_files)))
    # Round robin over the endless class streams: one block of every class, in class order.
    blocks = classes.interleave(class_blocks, cycle_length=num_classes, block_length=1,
                                num_parallel_calls=read_threads, deterministic=True)
    rounds = blocks.batch(num_classes)  # [C] serialized blocks
    round_seeds = tf.data.Dataset.random(seed=seed).batch(2)  # [2] int64: stateless seed per C blocks
    return tf.data.Dataset.zip((rounds, round_seeds)).map(
        lambda serialized, s: _interleave_classes(serialized, s, k, num_classes), num_parallel_calls=tf.data.AUTOTUNE)


def _mixup(batch: dict, seed: tf.Tensor, alpha: float) -> dict:
    """Mixup (Zhang et al. 2018) of each clip with the clip at the mirrored batch position.

    Dequantization is affine, so mixing the uint8 codes and rounding is mixing the embeddings (to
    within half a quantization bin). Frames that only one of the two clips has are taken from it.
    """
    gammas = tf.random.stateless_gamma([2, tf.shape(batch["num_frames"])[0]], seed=seed, alpha=alpha)  # [2, B]
    lam = gammas[0] / (gammas[0] + gammas[1])  # [B] ~ Beta(alpha, alpha)
    other = {k: tf.reverse(v, [0]) for k, v in batch.items()}
    frame = tf.range(schema.NUM_FRAMES)[None, :]  # [1, 10]
    weight = tf.where(frame < tf.cast(other["num_frames"], tf.int32)[:, None], lam[:, None], 1.0)  # [B, 10]
    weight = tf.where(frame < tf.cast(batch["num_frames"], tf.int32)[:, None], weight, 0.0)[:, :, None]  # [B, 10, 1]
    embedding = (weight * tf.cast(batch["embedding"], tf.float32)
                 + (1 - weight) * tf.cast(other["embedding"], tf.float32))  # [B, 10, 128]
    labels = (lam[:, None] * tf.cast(batch[schema.LABELS_KEY], tf.float32)
              + (1 - lam[:, None]) * tf.cast(other[schema.LABELS_KEY], tf.float32))  # [B, 527]
    return {"embedding": tf.cast(tf.round(embedding), tf.uint8),
            "num_frames": tf.maximum(batch["num_frames"], other["num_frames"]), schema.LABELS_KEY: labels}


def _shuffled(values: tf.Tensor, seed: tf.Tensor, unseeded: bool) -> tf.Tensor:
    if unseeded:
        return tf.random.shuffle(values)
    return tf.random.experimental.stateless_shuffle(values, seed=seed)


def _interleave_classes(serialized: tf.Tensor, seed: tf.Tensor, k: int, num_classes: int) -> dict:
    """One block per class -> K rounds of one clip per class, each round in a random class order."""
    blocks = schema.decode_blocks(serialized, k)  # embedding [C, K, 10, 128], num_frames [C, K], labels [C, K, 527]
    keys = tf.random.stateless_uniform([k, num_classes], seed=seed)  # [K, C]
    order = tf.argsort(keys, axis=1)  # [K, C]: a class permutation per round
    flat = tf.reshape(order * k + tf.range(k)[:, None], [-1])  # [K*C]: row of (class, clip k) in a [C*K] view
    return {
        "embedding": tf.gather(tf.reshape(blocks["embedding"], [-1, schema.NUM_FRAMES, schema.EMBEDDING_DIM]), flat),
        "num_frames": tf.gather(tf.reshape(blocks["num_frames"], [-1]), flat),
        schema.LABELS_KEY: tf.gather(tf.reshape(blocks[schema.LABELS_KEY], [-1, schema.NUM_CLASSES]), flat),
    }  # each [K*C, ...]


def _to_features(batch: dict) -> tuple[dict, tf.Tensor]:
    return {"embedding": batch["embedding"], "num_frames": batch["num_frames"]}, batch[schema.LABELS_KEY]


def distributed_train_dataset(strategy: tf.distribute.Strategy, shards_dir: str, global_batch_size: int,
                              seed: int | None = None, *, sampling: str = "uniform", mixup: float = 0.0):
    """train_dataset per replica via `distribute_datasets_from_function`; each input pipeline reads its own part."""
    if global_batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"batch size {global_batch_size} is not divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas")

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return train_dataset(shards_dir, context.get_per_replica_batch_size(global_batch_size), seed,
                             sampling=sampling, mixup=mixup,
                             input_pipeline_id=context.input_pipeline_id,
                             num_input_pipelines=context.num_input_pipelines)

    return strategy.distribute_datasets_from_function(dataset_fn)


def eval_files(path: str, split: str | None = None) -> list[str]:
    """A glob of AudioSet TFRecords, a shards directory (its plain split), or a plain split directory."""
    if tf.io.gfile.isdir(path) and tf.io.gfile.exists(os.path.join(path, MANIFEST)):
        shards_dir = path
    elif tf.io.gfile.isdir(path) and tf.io.gfile.exists(os.path.join(os.path.dirname(path.rstrip("/")), MANIFEST)):
        shards_dir, split = os.path.dirname(path.rstrip("/")), os.path.basename(path.rstrip("/"))
    elif tf.io.gfile.isdir(path):
        raise ShardsError(f"{path}: a directory without {MANIFEST}; pass a glob such as '{path}/*.tfrecord'")
    else:
        return readers.list_files(path)
    splits = read_manifest(shards_dir)["splits"]
    plain = [name for name, s in splits.items() if s["layout"] == "plain"]
    if split is None:
        if not plain:
            raise ShardsError(f"{path}: no plain split to evaluate on (splits: {', '.join(splits)})")
        split = "eval" if "eval" in plain else plain[0]
    if split not in plain:
        raise ShardsError(f"{path}: split {split!r} is not plain shards (plain splits: {', '.join(plain) or 'none'})")
    return [os.path.join(shards_dir, f) for f in splits[split]["files"]]


class SkippedRecords:
    """Counts, by reason, the records that eval_dataset skipped; read it after the dataset is exhausted."""

    def __init__(self):
        self._counts = tf.Variable(tf.zeros([len(schema.REASON_CODES)], tf.int64), trainable=False)

    def add(self, reason: tf.Tensor) -> None:
        self._counts.assign_add(tf.math.bincount(reason, minlength=len(schema.REASON_CODES),
                                                 maxlength=len(schema.REASON_CODES), dtype=tf.int64))

    def as_dict(self) -> dict[str, int]:
        return {name: int(n) for name, n in zip(schema.REASON_CODES[1:], self._counts.numpy()[1:]) if n}


def eval_dataset(path: str, batch_size: int, split: str | None = None,
                 skipped: SkippedRecords | None = None) -> tf.data.Dataset:
    """Finite batches of every valid clip once, in file order: features add video_id and start_time_seconds.

    Invalid records (see schema.REJECT_REASONS) are skipped and counted in `skipped`. Reading
    a file that cannot be read to its end raises DataLossError; readers.find_data_loss names it.
    """
    files = eval_files(path, split)
    readers.check_tfrecord_files(files)  # ValueError naming a non-file or a record length that overruns its file
    skipped = skipped or SkippedRecords()

    def keep_valid(clips: dict) -> tuple[dict, tf.Tensor]:
        skipped.add(clips["reason"])
        valid = tf.equal(clips["reason"], 0)
        kept = {key: tf.boolean_mask(value, valid) for key, value in clips.items()}
        features = {key: kept[key] for key in ("embedding", "num_frames", schema.VIDEO_ID_KEY, schema.START_TIME_KEY)}
        return features, kept[schema.LABELS_KEY]

    records = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE)
    return (records.batch(batch_size)
            .map(readers.parse_tolerant, num_parallel_calls=tf.data.AUTOTUNE)
            .map(keep_valid)
            .prefetch(tf.data.AUTOTUNE))

"""Input pipeline benchmark: tf.data from Beam shards against the research code's in-RAM generator.

    python -m benchmarks input --work_dir /tmp/bench --num_clips 20000 [--memory] [--json OUT.json]

In one process run, side by side on the same clips:
  (a) tfdata.train_dataset with balanced sampling on shards built by beam_pipelines.build_shards (uint8
      batches of 500), pulled from Python and (a') pulled inside a tf.function, as Keras `fit` pulls
      batches, and (a'') with uniform sampling (train.py's default), inside a tf.function;
  (b) the research code's balanced generator (Kong et al. 2018) re-implemented over the clips in RAM:
      a queue of shuffled class ids, the next clip of each drawn class, numpy gather, (x - 128) / 128;
  (c) eval_dataset over the original SequenceExample files (batched, vectorized parse) against
      parsing them one record at a time, with our parser and with tf.io.parse_single_sequence_example.
With --memory, the peak resident memory of train_dataset (balanced) over 1x and 10x the data (subprocesses).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from benchmarks import common

# TensorFlow and tfdata's readers are imported where they are used: --help does not wait for them.
BATCH = 500


def parse_single(record) -> tuple:
    """One SequenceExample with tf.io.parse_single_sequence_example: context and frames as strings."""
    import tensorflow as tf

    from tfdata import schema

    c, f = tf.io.parse_single_sequence_example(record, context_features=schema.context_features(),
                                               sequence_features=schema.sequence_features(padded=True))
    embedding = tf.io.decode_raw(f[schema.EMBEDDING_KEY], tf.uint8)  # [T, 128]
    return c[schema.VIDEO_ID_KEY], embedding, c[schema.LABELS_KEY]


def research_generator(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int = 0):
    """Kong et al. 2018's BalancedDataGenerator over arrays in RAM, yielding float32 batches."""
    rng = np.random.RandomState(seed)
    lists = [np.flatnonzero(y[:, c]) for c in range(y.shape[1])]
    classes = [c for c in range(y.shape[1]) if len(lists[c])]
    for c in classes:
        rng.shuffle(lists[c])
    pointers, queue = [0] * y.shape[1], []
    while True:
        batch = []
        for _ in range(batch_size):
            if not queue:
                queue = list(rng.permutation(classes))
            c = queue.pop(0)
            if pointers[c] == len(lists[c]):
                pointers[c] = 0
                rng.shuffle(lists[c])
            batch.append(lists[c][pointers[c]])
            pointers[c] += 1
        yield (x[batch].astype(np.float32) - 128.0) / 128.0, y[batch].astype(np.float32)


def clips_per_second(iterator, batches: int, warmup: int, batch_size: int = BATCH) -> float:
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def clips_per_second_in_graph(dataset, batches: int, warmup: int, batch_size: int = BATCH) -> float:
    """Batches pulled inside a tf.function, as Keras `fit` pulls them (no conversion to Python objects)."""
    import tensorflow as tf

    iterator = iter(dataset)

    @tf.function
    def pull(n: tf.Tensor) -> None:
        for _ in tf.range(n):
            next(iterator)

    pull(tf.constant(warmup))
    start = time.perf_counter()
    pull(tf.constant(batches))
    return batches * batch_size / (time.perf_counter() - start)


def prepare(work_dir: str, num_clips: int, seed: int = 0) -> tuple[str, str]:
    """Synthetic AudioSet and its Beam shards under work_dir, built once: (data dir, shards dir)."""
    import tensorflow as tf

    from tfdata import schema

    data, shards = os.path.join(work_dir, f"audioset-{num_clips}"), os.path.join(work_dir, f"shards-{num_clips}")
    if not tf.io.gfile.exists(os.path.join(data, schema.CLASS_LABELS_FILE)):
        subprocess.run([sys.executable, "-m", "tfdata.synthetic", "--output_dir", data, "--num_clips", str(num_clips),
                        "--seed", str(seed)], check=True)
    if not tf.io.gfile.exists(os.path.join(shards, "manifest.json")):
        subprocess.run([sys.executable, "-m", "beam_pipelines.build_shards", "--input", f"{data}/*.tfrecord",
                        "--output_dir", shards, "--overwrite"], check=True)
    return data, shards


def peak_memory_mb(shards: str, batches: int) -> float:
    """Max RSS of a fresh process that reads `batches` batches of train_dataset."""
    code = (f"import resource; from tfdata import datasets\n"
            f"it = iter(datasets.train_dataset({shards!r}, {BATCH}, seed=0, sampling='balanced'))\n"
            f"for _ in range({batches}): next(it)\n"
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def build_parser():
    parser = common.parser(__doc__)
    parser.add_argument("--work_dir", required=True, help="synthetic data and shards (built once)")
    parser.add_argument("--num_clips", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--memory", action="store_true", help="also measure peak memory at 1x and 10x the data")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import tensorflow as tf

    from tfdata import datasets, readers

    data, shards = prepare(args.work_dir, args.num_clips)

    clips = [b for b in readers.read_tfrecords(f"{data}/*.tfrecord").as_numpy_iterator()]
    x = np.concatenate([b["embedding"] for b in clips])
    y = np.concatenate([b["labels"] for b in clips])
    warmup = max(args.batches // 5, 50)
    balanced = datasets.train_dataset(shards, BATCH, seed=0, sampling="balanced")
    ours = clips_per_second(iter(balanced), args.batches, warmup)
    in_graph = clips_per_second_in_graph(balanced, args.batches, warmup)
    uniform = clips_per_second_in_graph(datasets.train_dataset(shards, BATCH, seed=0), args.batches, warmup)
    research = clips_per_second(research_generator(x, y, BATCH), args.batches, warmup)
    print(f"train input, {args.num_clips} clips, batches of {BATCH}:")
    print(f"  (a) tfdata.train_dataset, balanced, pulled from Python        {ours:10.0f} clips/s")
    print(f"  (a') the same, pulled inside a tf.function as Keras fit does  {in_graph:10.0f} clips/s")
    print(f"  (a'') uniform sampling (train.py's default), in a tf.function {uniform:10.0f} clips/s")
    print(f"  (b) research balanced generator, in RAM                       {research:10.0f} clips/s")
    print(f"  ratio (a) / (b)                                               {ours / research:10.2f}   (goal >= 1.5)")
    print(f"  ratio (a') / (b)                                              {in_graph / research:10.2f}   (goal >= 1.5)")
    results = {"train_clips_per_s": ours, "train_in_graph_clips_per_s": in_graph,
               "train_uniform_in_graph_clips_per_s": uniform, "research_clips_per_s": research}

    files = readers.list_files(f"{data}/*.tfrecord")
    batched = datasets.eval_dataset(f"{data}/*.tfrecord", 1024)
    records = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE)
    single = records.map(lambda r: readers.parse_sequence_examples(r[None]))  # our parser, one record per call
    standard = records.map(parse_single)  # the standard API, one record per call
    rates = {}
    for name, dataset in (("eval_dataset (batched parse)", batched), ("our parser, one record at a time", single),
                          ("tf.io.parse_single_sequence_example", standard)):
        start = time.perf_counter()
        for _ in dataset.prefetch(tf.data.AUTOTUNE):
            pass
        rates[name] = args.num_clips / (time.perf_counter() - start)
        print(f"  {name:42s} {rates[name]:10.0f} clips/s")
    batched_rate = rates["eval_dataset (batched parse)"]
    for name in list(rates)[1:]:
        print(f"  ratio to {name:33s} {batched_rate / rates[name]:10.2f}   (goal >= 5)")
    results["eval_parse_clips_per_s"] = rates

    if args.memory:
        _, big = prepare(args.work_dir, 10 * args.num_clips)
        small_mb, big_mb = peak_memory_mb(shards, 200), peak_memory_mb(big, 200)
        print(f"peak memory of train_dataset: {small_mb:.0f} MB at 1x, {big_mb:.0f} MB at 10x "
              f"({100 * (big_mb / small_mb - 1):+.1f}%, goal < 10%)")
        results["peak_memory_mb"] = {"1x": small_mb, "10x": big_mb}
    common.write_json(args.json, "input", args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

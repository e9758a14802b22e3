"""Training step time per model and batch size: is the input waited for, and how close to peak is the model?

    python -m benchmarks training --work_dir /tmp/bench [--models average_pooling,feature_attention]
        [--batch_sizes 500] [--steps 10] [--precision float32] [--jit_compile] [--steps_per_execution 1]
        [--num_clips 20000] [--json OUT.json]
    python -m benchmarks training --throughput [--models ...] [--batch_sizes 500] [--steps 20]

For each model and global batch size, in one process: Keras `fit` step time (a) on the real input,
`tfdata.datasets.train_dataset` over Beam shards of synthetic AudioSet with the trainer's mixup, and (b) on
one batch of it repeated, `take(1).cache().repeat()`, so that only the model is timed. input ratio = (b) / (a):
1.0 means the model never waits for the input. Achieved FLOP/s counts 3 x the forward matmul FLOPs per
clip (forward, and two matmuls of the same sizes per matmul backward) and is compared with a float32
`tf.matmul` loop of the model's own forward shapes run in the same process (benchmarks.flops).

--throughput instead times each model alone (no shards, no --work_dir): clips/s of `fit` steps on one cached
batch of synthetic clips, plain, with XLA (jit_compile) and with mixed_float16 (the table models.benchmark
printed; its command was --throughput --models all --steps 20).
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks import common

DEFAULT_MODELS = "average_pooling,feature_attention"


def build_parser() -> argparse.ArgumentParser:
    from models.config import PRECISIONS

    p = common.parser(__doc__)
    p.add_argument("--work_dir", help="synthetic data and shards are built here once (required but with "
                                      "--throughput)")
    p.add_argument("--num_clips", type=int, default=20000)
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated model names, or all")
    p.add_argument("--batch_sizes", default="500", help="comma-separated global batch sizes")
    p.add_argument("--hidden_units", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="steps before timing starts")
    p.add_argument("--precision", choices=PRECISIONS, default="float32")
    p.add_argument("--jit_compile", action="store_true")
    p.add_argument("--steps_per_execution", type=int, default=1)
    p.add_argument("--peak_seconds", type=float, default=2.0)
    p.add_argument("--throughput", action="store_true",
                   help="clips/s per model on a cached batch: plain, XLA and mixed_float16 (no --work_dir)")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.throughput and not args.work_dir:
        parser.error("--work_dir is required (or use --throughput)")
    return args


def model_names(models: str) -> list[str]:
    from models.config import MODEL_NAMES

    return list(MODEL_NAMES) if models == "all" else models.split(",")


class _StepTimer:
    """Keras callback factory: wall time between the end of the warm-up and the end of the last step."""

    def __new__(cls, warmup: int):
        import tf_keras as keras

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.start = self.end = None
                self.first = self.last = 0

            def on_train_batch_end(self, batch, logs=None):  # batch: last step of the execution, 0-based
                if self.start is None and batch + 1 >= warmup:
                    self.start, self.first = time.perf_counter(), batch + 1
                self.end, self.last = time.perf_counter(), batch + 1

            @property
            def step_seconds(self) -> float:
                return (self.end - self.start) / (self.last - self.first)

        return Timer()


def step_seconds(model_name: str, data, args: argparse.Namespace, devices: list[str] | None = None) -> float:
    """Seconds per training step; with devices, under a MirroredStrategy over them (data is the global batch)."""
    import tensorflow as tf
    import tf_keras as keras

    from models import zoo

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(args.precision)
    strategy = tf.distribute.MirroredStrategy(devices) if devices else tf.distribute.get_strategy()
    try:
        with strategy.scope():
            model = zoo.build(zoo.ModelConfig(name=model_name, hidden_units=args.hidden_units, dropout=0.2))
            model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(),
                          jit_compile=args.jit_compile, steps_per_execution=args.steps_per_execution)
        spe = args.steps_per_execution
        warmup = -(-args.warmup // spe) * spe  # whole executions
        steps = -(-args.steps // spe) * spe
        timer = _StepTimer(warmup)
        model.fit(data, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer])
        return timer.step_seconds
    finally:
        keras.mixed_precision.set_global_policy("float32")


def run(args: argparse.Namespace, devices: list[str] | None = None) -> dict:
    from benchmarks import flops
    from models import zoo
    from benchmarks import input as input_benchmark
    from tfdata import datasets

    _, shards = input_benchmark.prepare(args.work_dir, args.num_clips)
    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        real = datasets.train_dataset(shards, batch_size, seed=0, mixup=0.5)
        cached = real.take(1).cache().repeat()
        for name in model_names(args.models):
            shapes = flops.matmul_shapes(zoo.build(zoo.ModelConfig(name=name, hidden_units=args.hidden_units)),
                                         batch_size)
            peak = flops.matmul_peak(shapes, args.peak_seconds)
            real_s, cached_s = step_seconds(name, real, args, devices), step_seconds(name, cached, args, devices)
            achieved = 3 * flops.flops(shapes) / cached_s
            rows.append({"model": name, "batch_size": batch_size, "real_step_ms": 1e3 * real_s,
                         "cached_step_ms": 1e3 * cached_s, "input_ratio": cached_s / real_s,
                         "clips_per_s": batch_size / real_s, "train_flops_per_s": achieved, "peak_flops": peak,
                         "fraction_of_peak": achieved / peak})
    options = {"precision": args.precision, "jit_compile": args.jit_compile,
               "steps_per_execution": args.steps_per_execution, "hidden_units": args.hidden_units}
    return {"options": options, "rows": rows}


def report(results: dict) -> str:
    o = results["options"]
    lines = [f"training steps, {o['precision']}, jit_compile={o['jit_compile']}, "
             f"steps_per_execution={o['steps_per_execution']}, {o['hidden_units']} units",
             f"{'model':18s} {'batch':>6s} {'real ms':>8s} {'cached ms':>10s} {'input ratio':>12s} {'clips/s':>9s} "
             f"{'GFLOP/s':>8s} {'peak':>7s} {'of peak':>8s}"]
    for r in results["rows"]:
        lines.append(f"{r['model']:18s} {r['batch_size']:6d} {r['real_step_ms']:8.1f} {r['cached_step_ms']:10.1f} "
                     f"{r['input_ratio']:12.2f} {r['clips_per_s']:9,.0f} {r['train_flops_per_s'] / 1e9:8.1f} "
                     f"{r['peak_flops'] / 1e9:7.1f} {100 * r['fraction_of_peak']:7.0f}%")
    return "\n".join(lines)


def throughput(args: argparse.Namespace) -> dict:
    """Clips/s of each model's `fit` steps on one cached batch of synthetic clips (so the figure is the
    model's, not the input pipeline's): plain, with XLA, with mixed_float16."""
    import tensorflow as tf

    from tfdata import synthetic

    batch_size = int(args.batch_sizes.split(",")[0])
    clips = next(synthetic.generate(synthetic.SyntheticConfig(num_clips=batch_size, seed=0)))
    batch = ({"embedding": clips["embedding"], "num_frames": clips["num_frames"]}, clips["labels"])
    data = tf.data.Dataset.from_tensors(batch).repeat()
    settings = {"clips_per_s": {}, "jit_clips_per_s": {"jit_compile": True},
                "mixed_clips_per_s": {"precision": "mixed_float16"}}
    rows = []
    for name in model_names(args.models):
        row = {"model": name, "batch_size": batch_size}
        for key, setting in settings.items():
            options = argparse.Namespace(**(vars(args) | {"precision": "float32", "jit_compile": False} | setting))
            row[key] = batch_size / step_seconds(name, data, options)
        rows.append(row)
    return {"options": {"hidden_units": args.hidden_units, "steps_per_execution": args.steps_per_execution},
            "rows": rows}


def throughput_report(results: dict) -> str:
    lines = [f"{'model':22s} {'clips/s':>9s} {'jit':>9s} {'mixed':>9s}   "
             f"(batch {results['rows'][0]['batch_size']}, 3 x {results['options']['hidden_units']} trunk)"]
    lines += [f"{r['model']:22s} {r['clips_per_s']:9.0f} {r['jit_clips_per_s']:9.0f} {r['mixed_clips_per_s']:9.0f}"
              for r in results["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.throughput:
        results = throughput(args)
        print(throughput_report(results))
    else:
        results = run(args)
        print(report(results))
    common.write_json(args.json, "training", args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

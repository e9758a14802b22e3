"""Training throughput per model: plain, with XLA (--jit_compile) and with mixed_float16 (--precision mixed_float16).

    python -m models.benchmark [--steps 20] [--batch_size 500] [--models a,b]

Feeds one cached batch of synthetic clips (so the figure is the model's, not the input pipeline's)
and prints clips/s of Keras `fit` steps after a warm-up.
"""

from __future__ import annotations

import argparse
import sys
import time

import tensorflow as tf
import tf_keras as keras

from models import zoo
from tfdata import synthetic


class _Timer(keras.callbacks.Callback):
    def __init__(self, warmup: int):
        super().__init__()
        self.warmup, self.start, self.steps = warmup, None, 0

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.warmup:
            self.start = time.perf_counter()
        elif batch + 1 > self.warmup:
            self.steps += 1


def throughput(name: str, jit: bool, batch, steps: int, warmup: int = 3, mixed: bool = False) -> float:
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    model = zoo.build(zoo.ModelConfig(name=name))
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(), jit_compile=jit)
    data = tf.data.Dataset.from_tensors(batch).repeat()
    timer = _Timer(warmup)
    model.fit(data, steps_per_epoch=steps + warmup, epochs=1, verbose=0, callbacks=[timer])
    return timer.steps * len(batch[1]) / (time.perf_counter() - timer.start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--models", default=",".join(zoo.REGISTRY))
    args = parser.parse_args(argv)
    clips = next(synthetic.generate(synthetic.SyntheticConfig(num_clips=args.batch_size, seed=0)))
    batch = ({"embedding": clips["embedding"], "num_frames": clips["num_frames"]}, clips["labels"])
    print(f"{'model':22s} {'clips/s':>9s} {'jit':>9s} {'mixed':>9s}   (batch {args.batch_size}, 3 x 1024 trunk)")
    for name in args.models.split(","):
        plain, jit = throughput(name, False, batch, args.steps), throughput(name, True, batch, args.steps)
        mixed = throughput(name, False, batch, args.steps, mixed=True)
        print(f"{name:22s} {plain:9.0f} {jit:9.0f} {mixed:9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

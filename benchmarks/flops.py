"""Matrix-multiply FLOPs of a Keras model and this machine's practical peak on the same shapes.

The models are Dense layers on frames and pooled features: their matmuls are nearly all the arithmetic.
`matmul_shapes` reads them from the traced forward graph at a fixed batch; `matmul_peak` runs exactly
those float32 matmuls in a `tf.function` loop, so "X% of peak" compares the model with what this machine
does on its own shapes, not with a datasheet figure.
"""

from __future__ import annotations

import time

import tensorflow as tf

from tfdata import schema


def matmul_shapes(model, batch: int, frames: int = schema.NUM_FRAMES) -> list[tuple[int, int, int]]:
    """(m, k, n) of every MatMul / BatchMatMul of model's forward pass on [batch, frames] clips."""
    spec = {"embedding": tf.TensorSpec([batch, frames, schema.EMBEDDING_DIM], tf.uint8),
            "num_frames": tf.TensorSpec([batch], tf.int32)}
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    shapes = []
    for op in graph.get_operations():
        if op.type not in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
            continue
        a, b = op.inputs[0].shape.as_list(), op.inputs[1].shape.as_list()
        ta = op.get_attr("transpose_a") if op.type == "MatMul" else op.get_attr("adj_x")
        tb = op.get_attr("transpose_b") if op.type == "MatMul" else op.get_attr("adj_y")
        m, k = (a[-1], a[-2]) if ta else (a[-2], a[-1])
        n = b[-2] if tb else b[-1]
        repeat = 1
        for d in a[:-2]:
            repeat *= d
        shapes += [(m, k, n)] * repeat
    return shapes


def flops(shapes: list[tuple[int, int, int]]) -> int:
    """Multiply-adds x 2 of the matmuls."""
    return sum(2 * m * k * n for m, k, n in shapes)


def matmul_peak(shapes: list[tuple[int, int, int]], seconds: float = 2.0) -> float:
    """FLOP/s of a tf.function that runs the given float32 matmuls back to back (this machine's practical peak)."""
    distinct = sorted(set(shapes))
    counts = [shapes.count(s) for s in distinct]
    a = [tf.random.normal([m, k]) for m, k, _ in distinct]
    b = [tf.random.normal([k, n]) for _, k, n in distinct]

    @tf.function
    def step():
        total = tf.constant(0.0)
        for x, y, c in zip(a, b, counts):
            for _ in range(c):
                total += tf.reduce_sum(tf.matmul(x, y)[:1, :1])
        return total

    step().numpy()  # trace and warm up
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        step().numpy()
        calls += 1
    return flops(shapes) * calls / (time.perf_counter() - start)

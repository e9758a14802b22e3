"""benchmarks.flops: the matmuls of a model's forward pass, and a peak measured on them."""

from benchmarks import flops
from models import zoo


def test_matmul_shapes_are_the_trunk_and_head_of_the_model():
    model = zoo.build(zoo.ModelConfig(name="average_pooling", hidden_units=32))
    shapes = flops.matmul_shapes(model, batch=4, frames=10)  # per-frame Dense layers see [4 * 10, k]
    assert shapes == [(40, 128, 32), (40, 32, 32), (40, 32, 32), (40, 32, 527)]
    assert flops.flops(shapes) == 2 * 40 * (128 * 32 + 2 * 32 * 32 + 32 * 527)
    attention = flops.matmul_shapes(zoo.build(zoo.ModelConfig(name="feature_attention", hidden_units=32)), 4)
    assert attention[-1] == (4, 32, 527) and len(attention) == 6  # values and attention per frame, head per clip


def test_matmul_peak_is_a_positive_rate():
    assert flops.matmul_peak([(64, 64, 64)], seconds=0.05) > 0

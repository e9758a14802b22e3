"""tfdata.benchmark: the research baseline it times is balanced, and the in-graph timer pulls what it says."""

import numpy as np
import pytest
import tensorflow as tf

from tfdata import benchmark


def test_research_generator_is_balanced_and_dequantized():
    rng = np.random.RandomState(0)
    labels = np.zeros([5000, 527], np.uint8)
    labels[np.arange(5000), rng.randint(0, 527, 5000)] = 1  # one label per clip, classes of unequal size
    x = rng.randint(0, 256, [5000, 10, 128]).astype(np.uint8)
    batches = benchmark.research_generator(x, labels, 500, seed=1)
    assert (labels.sum(axis=0) > 0).all()
    counts = np.zeros(527)
    for b in range(20):
        embedding, y = next(batches)
        assert embedding.dtype == np.float32 and embedding.shape == (500, 10, 128)
        assert embedding.min() >= -1.0 and embedding.max() < 1.0
        if b == 0:  # the first 500 draws of the first class permutation: 500 distinct classes
            assert y.sum(axis=0).max() == 1
        counts += y.sum(axis=0)
    assert set(counts) == {18, 19}  # 10,000 draws = 18 whole permutations of the 527 classes and 514 more


def test_in_graph_timer_pulls_warmup_plus_batches():
    dataset = tf.data.Dataset.range(30).map(lambda i: tf.fill([4], i))
    assert benchmark.clips_per_second_in_graph(dataset, batches=20, warmup=10, batch_size=4) > 0
    with pytest.raises(tf.errors.OutOfRangeError):  # one more than the dataset holds
        benchmark.clips_per_second_in_graph(dataset, batches=21, warmup=10, batch_size=4)

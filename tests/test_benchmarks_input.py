"""benchmarks.input: the research baseline it times is balanced, and the in-graph timer pulls what it says."""

import types

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import input as benchmark


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


def test_in_graph_timer_pulls_warmup_plus_batches(monkeypatch):
    """It pulls `warmup` batches untimed, then times exactly `batches` more: clips / timed seconds."""
    pulled = []

    def pull(i):
        pulled.append(int(i))
        return np.full([4], int(i))

    clock, read_at = iter([100.0, 102.5]), []

    def perf_counter():  # a fake clock that records how many batches were pulled when it was read
        read_at.append(len(pulled))
        return next(clock)

    monkeypatch.setattr(benchmark, "time", types.SimpleNamespace(perf_counter=perf_counter))
    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False  # else tf.data may pull one batch ahead
    options.autotune.enabled = False
    counted = (tf.data.Dataset.range(30).map(lambda i: tf.py_function(pull, [i], tf.int64))
               .with_options(options))  # pulled one by one
    rate = benchmark.clips_per_second_in_graph(counted, batches=20, warmup=10, batch_size=4)
    assert read_at == [10, 30]  # the clock starts after the warmup and stops after the timed batches
    assert rate == 20 * 4 / 2.5
    monkeypatch.undo()
    dataset = tf.data.Dataset.range(30).map(lambda i: tf.fill([4], i))
    with pytest.raises(tf.errors.OutOfRangeError):  # one more than the dataset holds
        benchmark.clips_per_second_in_graph(dataset, batches=21, warmup=10, batch_size=4)

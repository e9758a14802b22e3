import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import zoo
from tfdata import schema, synthetic

SMALL = dict(hidden_units=32, num_layers=3, num_heads=4)


@pytest.fixture(scope="module")
def clips():
    return next(synthetic.generate(synthetic.SyntheticConfig(num_clips=512, seed=5)))


@pytest.mark.parametrize("name", list(zoo.REGISTRY))
def test_each_model_trains_and_lowers_the_loss(name, clips):
    keras.utils.set_random_seed(0)
    model = zoo.build(zoo.ModelConfig(name=name, **SMALL))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.BinaryCrossentropy())
    x = {"embedding": clips["embedding"], "num_frames": clips["num_frames"]}
    losses = model.fit(x, clips["labels"], batch_size=128, epochs=4, verbose=0).history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses
    scores = model(x, training=False).numpy()
    assert scores.shape == (512, schema.NUM_CLASSES) and (scores >= 0).all() and (scores <= 1).all()


@pytest.mark.slow  # six more fits; the trainer's precision test covers mixed precision end to end
@pytest.mark.parametrize("name", list(zoo.REGISTRY))
def test_each_model_builds_and_trains_in_mixed_precision(name, clips):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = zoo.build(zoo.ModelConfig(name=name, **SMALL))
        model.compile(keras.optimizers.Adam(3e-3), keras.losses.BinaryCrossentropy())
        x = {"embedding": clips["embedding"][:64], "num_frames": clips["num_frames"][:64]}
        loss = model.fit(x, clips["labels"][:64], batch_size=64, epochs=1, verbose=0).history["loss"][0]
        scores = model(x, training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(loss) and scores.dtype == tf.float32 and scores.shape == (64, schema.NUM_CLASSES)


@pytest.mark.parametrize("name", list(zoo.REGISTRY))
def test_padding_frames_never_count(name):
    model = zoo.build(zoo.ModelConfig(name=name, **SMALL))
    rng = np.random.default_rng(1)
    embedding = rng.integers(0, 256, [4, 10, 128]).astype(np.uint8)
    six = np.full([4], 6, np.int32)
    unpadded = model({"embedding": embedding[:, :6], "num_frames": six}, training=False).numpy()
    zero_padded = model({"embedding": np.where(np.arange(10)[None, :, None] < 6, embedding, 0), "num_frames": six},
                        training=False).numpy()
    junk_padded = model({"embedding": embedding, "num_frames": six}, training=False).numpy()
    np.testing.assert_allclose(zero_padded, unpadded, atol=1e-6)
    np.testing.assert_allclose(junk_padded, unpadded, atol=1e-6)


def test_attention_weights_are_zero_on_padding():
    layer = zoo.DecisionAttention(3)
    h = tf.random.normal([2, 10, 8])
    mask = tf.sequence_mask([4, 10], 10, tf.float32)[:, :, None]
    changed = tf.concat([h[:, :4], h[:, 4:] + 100.0], axis=1)  # only padding frames of clip 0 change
    a, b = layer(h, mask).numpy(), layer(changed, mask).numpy()
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert not np.allclose(a[1], b[1])


def test_pooling_layers_serialize():
    for layer in (zoo.DecisionAttention(5, name="d"), zoo.FeatureAttention(7, name="f"),
                  zoo.MultiHeadFeatureAttention(8, 2, name="m"), zoo.MaskedAveragePooling(name="a")):
        config = layer.get_config()
        clone = type(layer).from_config(config)
        assert clone.get_config() == config


def test_model_round_trips_through_keras_saving(tmp_path, clips):
    model = zoo.build(zoo.ModelConfig(name="multi_attention", **SMALL))
    path = str(tmp_path / "m.h5")
    model.save(path)
    restored = keras.models.load_model(path, custom_objects=zoo.CUSTOM_OBJECTS)
    x = {"embedding": clips["embedding"][:8], "num_frames": clips["num_frames"][:8]}
    np.testing.assert_allclose(restored(x, training=False), model(x, training=False), atol=1e-6)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(zoo.UnknownModelError, match="known models: average_pooling, max_pooling"):
        zoo.build(zoo.ModelConfig(name="resnet"))


def test_yu2018_trunk_is_reachable():
    """Yu et al.'s trunk: input BatchNorm on the dequantized frames, 3 x 600 units, dropout 0.4."""
    model = zoo.build(zoo.ModelConfig.yu2018())
    input_bn = model.get_layer("input_bn")  # raises ValueError when the model has no such layer
    assert isinstance(input_bn, keras.layers.BatchNormalization)
    assert model.get_layer("hidden1").input is input_bn.output  # in the path, not just built
    assert [model.get_layer(f"hidden{i}").units for i in (1, 2, 3)] == [600] * 3
    dropouts = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts == [0.4] * 3, dropouts
    default = zoo.build(zoo.ModelConfig(name="multi_attention", **SMALL))
    assert not any(isinstance(layer, keras.layers.BatchNormalization) and layer.name == "input_bn"
                   for layer in default.layers)  # the default trunk has no input BatchNorm


def test_frame_dropout_drops_only_real_frames_and_never_a_whole_clip():
    layer = zoo.FrameDropout(0.5)
    num_frames = np.array([10, 6, 1, 2] * 256, np.int32)  # [1024]
    mask = tf.sequence_mask(num_frames, 10, tf.float32)[:, :, None]  # [1024, 10, 1]
    tf.random.set_seed(3)
    dropped = layer(mask, training=True).numpy()
    assert ((dropped == 0) | (dropped == 1)).all()
    assert (dropped <= mask.numpy()).all(), "a padding frame came back"
    assert (dropped.sum(axis=(1, 2)) >= 1).all(), "a clip lost every frame"
    assert dropped[2::4].sum() == 256, "a one-frame clip keeps its frame"
    kept = dropped[0::4].mean()  # 10-frame clips: about half kept (all-dropped clips, 1 in 1024, stay whole)
    assert 0.45 < kept < 0.55, kept
    assert not np.array_equal(dropped[0::4], np.ones_like(dropped[0::4]))
    np.testing.assert_array_equal(layer(mask, training=False).numpy(), mask.numpy())


@pytest.mark.parametrize("name", ["feature_attention", "average_pooling"])
def test_dropout_options_change_training_only(name):
    plain = zoo.build(zoo.ModelConfig(name=name, hidden_units=16))
    regularised = zoo.build(zoo.ModelConfig(name=name, hidden_units=16, frame_dropout=0.5, input_dropout=0.5))
    assert [w.shape for w in plain.weights] == [w.shape for w in regularised.weights]  # no new weights
    regularised.set_weights(plain.get_weights())
    rng = np.random.default_rng(0)
    x = {"embedding": rng.integers(0, 256, [8, 10, schema.EMBEDDING_DIM]).astype(np.uint8),
         "num_frames": np.array([10, 3] * 4, np.int32)}
    np.testing.assert_allclose(regularised(x, training=False), plain(x, training=False), atol=1e-6)
    assert not np.allclose(regularised(x, training=True), plain(x, training=False), atol=1e-3)
    assert {"FrameDropout"} <= {type(layer).__name__ for layer in regularised.layers}

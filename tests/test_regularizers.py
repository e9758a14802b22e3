"""The regularisers chosen on eval_a: frame dropout, input dropout, weight decay, label smoothing (models.zoo,
models.config, models.trainer)."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import config as model_config, trainer, zoo
from tfdata import schema


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


@pytest.mark.parametrize("field,value,flag", [("frame_dropout", 1.0, "--frame_dropout"), ("input_dropout", -0.1, "--input_dropout"),
                                              ("frame_dropout", float("nan"), "--frame_dropout")])
def test_bad_dropout_rates_are_refused_with_the_flag_name(field, value, flag):
    with pytest.raises(model_config.ConfigError, match=flag):
        model_config.TrainConfig("s", "m", model=model_config.ModelConfig(**{field: value}))


@pytest.mark.parametrize("field,value,flag", [("weight_decay", -1e-4, "--weight_decay"),
                                              ("label_smoothing", 1.0, "--label_smoothing"),
                                              ("weight_decay", float("inf"), "--weight_decay")])
def test_bad_optimiser_options_are_refused_with_the_flag_name(field, value, flag):
    with pytest.raises(model_config.ConfigError, match=flag):
        model_config.TrainConfig("s", "m", **{field: value})


def test_a_config_json_from_before_the_regularisers_resumes_as_it_was(tmp_path):
    # An earlier run trained what the fields' absence meant: no weight decay, no input or frame dropout.
    config = model_config.TrainConfig(str(tmp_path), str(tmp_path), weight_decay=0.0,
                                      model=model_config.ModelConfig(input_dropout=0.0, frame_dropout=0.0))
    old = config.to_json()
    for key in ("weight_decay", "label_smoothing"):
        del old[key]
    for key in ("frame_dropout", "input_dropout"):
        del old["model"][key]
    (tmp_path / "config.json").write_text(json.dumps(old))
    trainer.check_resume(config)  # the same run: resumes
    changed = model_config.TrainConfig(str(tmp_path), str(tmp_path), weight_decay=0.1, model=config.model)
    with pytest.raises(model_config.ConfigError, match="weight_decay"):
        trainer.check_resume(changed)


@pytest.mark.parametrize("weight_decay", [0.5, 0.0])
def test_weight_decay_shrinks_weights_that_get_no_gradient(tmp_path, weight_decay):
    config = model_config.TrainConfig(str(tmp_path), str(tmp_path), learning_rate=0.1, lr_schedule="constant",
                                      weight_decay=weight_decay, ema=0.0)
    variable = tf.Variable(tf.ones([4]))
    trainer.make_optimizer(config).apply_gradients([(tf.zeros([4]), variable)])
    np.testing.assert_allclose(variable.numpy(), 1 - 0.1 * weight_decay, rtol=1e-5)  # decoupled: w -= lr * wd * w

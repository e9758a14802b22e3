"""tfdata.vggish: the network, checkpoint loading and postprocessing against an independent NumPy VGGish."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfdata import vggish
from tests import vggish_reference as ref
from tfdata import audio


def test_variable_names_and_shapes_are_the_references():
    assert vggish.checkpoint_variables() == ref.variables()
    assert vggish.PARAMS.flat_size == 12288


@pytest.mark.parametrize("seconds, seed", [(3.0, 0), pytest.param(5.5, 1, marks=pytest.mark.slow)])
def test_codes_match_the_numpy_reference(embedder, vggish_files, seconds, seed):
    x = ref.test_waveform(seconds, seed)
    out = embedder(tf.constant(x[None], tf.float32))
    expected_raw = ref.embed(ref.log_mel_examples(x), vggish_files.weights)  # [T, 128]
    np.testing.assert_allclose(out["raw_embedding"][0].numpy(), expected_raw, rtol=1e-3, atol=1e-3 * np.abs(expected_raw).max())
    codes, expected = out["embedding"][0].numpy().astype(int), vggish_files.codes(x).astype(int)
    assert codes.shape == expected.shape == (audio.PARAMS.num_examples(len(x)), 128)
    assert np.abs(codes - expected).max() <= 1 and (codes == expected).mean() >= 0.99
    assert codes.std() > 20  # the random PCA spreads the codes: the comparison is not trivial


def test_the_embedding_layer_is_linear(embedder, vggish_files):
    raw = embedder(tf.constant(ref.test_waveform(3.0, 2)[None], tf.float32))["raw_embedding"].numpy()
    assert (raw < 0).any()  # a ReLU on fc2 (a known bug of some ports) would make every value >= 0


def test_batches_and_chunks_give_the_same_codes(embedder):
    x = np.stack([ref.test_waveform(3.0, 3), ref.test_waveform(3.0, 4)]).astype(np.float32)
    both = embedder(tf.constant(x))["embedding"].numpy()
    one = embedder(tf.constant(x[1:]))["embedding"].numpy()
    np.testing.assert_array_equal(both[1], one[0])
    long = ref.test_waveform(63.0, 5).astype(np.float32)[None]  # 65 examples: two chunks of 64
    codes = embedder(tf.constant(long))["embedding"].numpy()
    assert codes.shape == (1, 65, 128)
    tail = long[:, 64 * 15360:]  # the 65th example alone (examples start every 96 * 160 samples)
    np.testing.assert_array_equal(embedder(tf.constant(tail))["embedding"].numpy()[0, 0], codes[0, 64])
    assert embedder(tf.constant(np.zeros([1, 15599], np.float32)))["embedding"].shape == (1, 0, 128)


def test_postprocess_truncates_like_the_reference():
    post = vggish.Postprocess(np.eye(128), np.zeros(128))
    values = np.array([-3.0, -2.0, -1.99, 0.0, 0.01568, 1.99, 2.0, 5.0], np.float32)
    raw = np.zeros([len(values), 128], np.float32)
    raw[:, 0] = values
    got = post(tf.constant(raw)).numpy()[:, 0]
    expected = ((np.clip(values.astype(np.float64), -2, 2) + 2) * 255 / 4).astype(np.uint8)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.uint8 and list(got[:4]) == [0, 0, 0, 127]  # 127.5 -> 127: cast, not round


def test_missing_or_misshaped_variables_are_named(tmp_path, vggish_files):
    w = {"vggish/conv1/weights": vggish_files.weights["vggish/conv1/weights"]}
    missing = ref.write_checkpoint(str(tmp_path / "missing.ckpt"), w)
    with pytest.raises(vggish.CheckpointError, match="vggish/conv1/biases is missing"):
        vggish.read_checkpoint(missing)
    bad = ref.write_checkpoint(str(tmp_path / "bad.ckpt"), {"vggish/conv1/weights": np.zeros([3, 3, 1, 32], np.float32)})
    with pytest.raises(vggish.CheckpointError, match=r"vggish/conv1/weights has shape \[3, 3, 1, 32\], expected \[3, 3, 1, 64\]"):
        vggish.read_checkpoint(bad)
    with pytest.raises(vggish.CheckpointError, match="not a readable"):
        vggish.read_checkpoint(str(tmp_path / "nothing.ckpt"))


def test_pca_file_errors_are_named(tmp_path):
    np.savez(tmp_path / "p.npz", pca_eigen_vectors=np.eye(128))
    with pytest.raises(vggish.CheckpointError, match="pca_means is missing"):
        vggish.read_pca_params(str(tmp_path / "p.npz"))
    np.savez(tmp_path / "q.npz", pca_eigen_vectors=np.eye(64), pca_means=np.zeros(128))
    with pytest.raises(vggish.CheckpointError, match=r"pca_eigen_vectors has shape \[64, 64\]"):
        vggish.read_pca_params(str(tmp_path / "q.npz"))
    with pytest.raises(vggish.CheckpointError, match="not a readable .npz"):
        vggish.read_pca_params(str(tmp_path / "absent.npz"))


@pytest.mark.skipif(not (os.environ.get("VGGISH_CHECKPOINT") and os.environ.get("VGGISH_PCA_PARAMS")),
                    reason="set VGGISH_CHECKPOINT and VGGISH_PCA_PARAMS to Google's vggish_model.ckpt and "
                           "vggish_pca_params.npz")
def test_reference_smoke_test_with_the_released_files():
    """vggish_smoke_test.py: a 3-s 1-kHz sine at 16 kHz; its statistics within 10%."""
    model = vggish.Embedder.from_files(os.environ["VGGISH_CHECKPOINT"], os.environ["VGGISH_PCA_PARAMS"])
    x = np.sin(2 * np.pi * 1000 * np.arange(0, 3, 1 / 16000))
    out = model(tf.constant(x[None], tf.float32))
    raw, codes = out["raw_embedding"][0].numpy(), out["embedding"][0].numpy()
    assert raw.shape == (3, 128)
    np.testing.assert_allclose([raw.mean(), raw.std()], [0.000657, 0.343], rtol=0.1)
    np.testing.assert_allclose([codes.mean(), codes.std()], [126.0, 89.3], rtol=0.1)


def test_layers_are_registered_and_rebuild_from_their_config():
    import tf_keras

    layer = vggish.VGGish(name="vggish")
    again = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
    assert type(again) is vggish.VGGish and again.params == vggish.PARAMS
    assert tf_keras.utils.get_registered_object("vggish>VGGish") is vggish.VGGish
    assert tf_keras.utils.get_registered_object("vggish>Postprocess") is vggish.Postprocess

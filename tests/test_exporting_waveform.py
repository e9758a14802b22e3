"""models.exporting --audio: serve_waveform = VGGish + the classifier, its other signatures unchanged."""

import numpy as np
import pytest
import tensorflow as tf

from models import exporting
from tests import vggish_reference as ref
from tfdata import synthetic


@pytest.fixture(scope="module")
def loaded(waveform_model_dir):
    return tf.saved_model.load(waveform_model_dir)


def test_serve_waveform_codes_and_scores(loaded, vggish_files):
    x = np.stack([ref.test_waveform(3.5, 10), ref.test_waveform(3.5, 11)])
    out = loaded.signatures["serve_waveform"](waveform=tf.constant(x, tf.float32))
    codes = out["embedding"].numpy()
    assert codes.dtype == np.uint8 and codes.shape == (2, 3, 128)
    for b in range(2):
        expected = vggish_files.codes(x[b]).astype(int)
        assert np.abs(codes[b].astype(int) - expected).max() <= 1 and (codes[b] == expected).mean() >= 0.99
    serve = loaded.signatures["serving_default"]
    np.testing.assert_allclose(out["scores"].numpy(), serve(embedding=out["embedding"])["scores"].numpy(), atol=1e-5)
    assert out["frame_scores"].shape == (2, 3, 527)
    for t in range(3):
        alone = serve(embedding=out["embedding"][:, t:t + 1])["scores"].numpy()
        np.testing.assert_allclose(out["frame_scores"][:, t].numpy(), alone, atol=1e-5)


def test_any_length_from_one_example_and_longer_than_ten_seconds(loaded):
    for seconds, steps in ((15600 / 16000, 1), (12.5, 13)):
        x = ref.test_waveform(seconds, 12)[None].astype(np.float32)
        out = loaded.signatures["serve_waveform"](waveform=tf.constant(x))
        assert out["scores"].shape == (1, 527) and out["frame_scores"].shape == (1, steps, 527)


def test_too_short_fails_clearly(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="waveform too short"):
        loaded.signatures["serve_waveform"](waveform=tf.zeros([1, 15599]))


def test_classifier_signatures_and_labels_are_kept(loaded, classifier_dir):
    original = tf.saved_model.load(classifier_dir)
    clips = next(synthetic.generate(synthetic.SyntheticConfig(num_clips=8, seed=5)))
    records = tf.constant([synthetic.sequence_example(clips, i) for i in range(8)])
    np.testing.assert_allclose(loaded.signatures["serve_examples"](examples=records)["scores"].numpy(),
                               original.signatures["serve_examples"](examples=records)["scores"].numpy(), atol=1e-6)
    emb = tf.constant(clips["embedding"])
    np.testing.assert_allclose(loaded.signatures["serving_default"](embedding=emb)["scores"].numpy(),
                               original.signatures["serving_default"](embedding=emb)["scores"].numpy(), atol=1e-6)
    assert [n.decode() for n in loaded.class_names.numpy()[:1]] == ["Synthetic class 0"]
    assert open(loaded.class_labels.asset_path.numpy().decode()).read().startswith("index,mid,display_name")


def test_cli_needs_both_vggish_files(classifier_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        exporting.main(["--audio", classifier_dir, "--vggish_checkpoint", "x.ckpt", "--output", str(tmp_path / "o")])
    assert "--pca_params" in capsys.readouterr().err


def test_cli_names_a_bad_checkpoint(classifier_dir, tmp_path, capsys, vggish_files):
    bad = ref.write_checkpoint(str(tmp_path / "bad.ckpt"), {"vggish/conv1/weights": np.zeros([3, 3, 1, 64], np.float32)})
    with pytest.raises(SystemExit):
        exporting.main(["--audio", classifier_dir, "--vggish_checkpoint", bad, "--pca_params", vggish_files.pca_params,
                        "--output", str(tmp_path / "o")])
    assert "vggish/conv1/biases is missing" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_waveform_in_a_fresh_process_without_the_project(loaded, waveform_model_dir, tmp_path):
    import json
    import subprocess
    import sys
    import textwrap

    x = ref.test_waveform(2.0, 13).astype(np.float32)[None]
    np.save(tmp_path / "x.npy", x)
    expected = loaded.signatures["serve_waveform"](waveform=tf.constant(x))
    script = "import sys\nfor name in ('tfdata', 'models', 'beam_pipelines'):\n    sys.modules[name] = None\n" + \
        textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        out = tf.saved_model.load({waveform_model_dir!r}).signatures["serve_waveform"](waveform=tf.constant(np.load("x.npy")))
        print(json.dumps({{"scores": out["scores"].numpy().tolist(), "embedding": out["embedding"].numpy().tolist()}}))
        """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_array_equal(got["embedding"], expected["embedding"].numpy())
    np.testing.assert_allclose(got["scores"], expected["scores"].numpy(), atol=1e-6)

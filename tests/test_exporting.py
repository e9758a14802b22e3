"""The SavedModel reloads in a fresh process without the project's code and reproduces the Keras scores."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from models import exporting, zoo
from tfdata import readers, synthetic


@pytest.fixture(scope="module")
def exported(tmp_path_factory, synthetic_tfrecords):
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(3)
    model = zoo.build(zoo.ModelConfig(name="single_attention", hidden_units=32))
    clips = next(synthetic.generate(synthetic.SyntheticConfig(num_clips=64, seed=9)))
    clips["num_frames"][:5] = [1, 3, 6, 9, 2]  # short clips too
    out = str(tmp_path_factory.mktemp("export") / "saved_model")
    exporting.export(model, out, str(synthetic_tfrecords / "class_labels_indices.csv"))
    expected = model({"embedding": clips["embedding"], "num_frames": clips["num_frames"]}, training=False).numpy()
    return out, clips, expected


@pytest.fixture(scope="module")
def loaded(exported):
    """The export, loaded once for the tests that only call its signatures."""
    return tf.saved_model.load(exported[0])


def _fresh_process(script, tmp_path):
    """Runs `script` with only TensorFlow: the project's packages are made unimportable."""
    prelude = "import sys\nfor name in ('tfdata', 'models', 'beam_pipelines'):\n    sys.modules[name] = None\n"
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_both_signatures_reproduce_the_keras_scores_in_a_fresh_process(exported, tmp_path):
    path, clips, expected = exported
    records = [synthetic.sequence_example(clips, i) for i in range(len(clips["video_id"]))]
    np.save(tmp_path / "records.npy", np.array(records, dtype=object), allow_pickle=True)
    np.save(tmp_path / "embedding.npy", clips["embedding"])
    full_length = np.flatnonzero(clips["num_frames"] == 10)
    np.save(tmp_path / "full.npy", full_length)
    out = _fresh_process(f"""
        import json, numpy as np, tensorflow as tf
        model = tf.saved_model.load({path!r})
        records = np.load("records.npy", allow_pickle=True).tolist()
        from_examples = model.signatures["serve_examples"](examples=tf.constant(records))["scores"].numpy()
        embedding = np.load("embedding.npy")
        first = model.signatures["serving_default"](embedding=tf.constant(embedding[:1, :1]))["scores"].numpy()
        full = model.signatures["serving_default"](embedding=tf.constant(embedding[np.load("full.npy")]))["scores"].numpy()
        names = [n.decode() for n in model.class_names.numpy()]
        asset = open(model.class_labels.asset_path.numpy().decode()).read().splitlines()[1]
        print(json.dumps({{"examples": from_examples.tolist(), "first": first.tolist(), "full": full.tolist(),
                          "names": names[:2], "asset": asset}}))
    """, tmp_path)
    result = json.loads(out.strip().splitlines()[-1])
    np.testing.assert_allclose(result["examples"], expected, atol=1e-5)
    np.testing.assert_allclose(result["first"][0], expected[0], atol=1e-5)  # clip 0: its one real frame
    np.testing.assert_allclose(result["full"], expected[full_length], atol=1e-5)  # all 10 frames real
    assert result["names"] == ["Synthetic class 0", "Synthetic class 1"]
    assert result["asset"].startswith("0,/m/synthetic000")


def test_a_long_recording_is_one_request(exported, loaded):
    sixty = np.tile(exported[1]["embedding"][5], [6, 1])[None]  # [1, 60, 128]
    scores = loaded.signatures["serving_default"](embedding=tf.constant(sixty))["scores"]
    assert scores.shape == (1, 527)


@pytest.mark.parametrize("signature, value, message", [
    ("serving_default", np.zeros([2, 10, 128], np.float32), "uint8"),
    ("serving_default", np.zeros([2, 10, 64], np.uint8), "128"),
    ("serve_examples", np.zeros([2], np.float32), "string"),
])
def test_wrong_dtype_or_shape_fails_clearly(loaded, signature, value, message):
    name = "embedding" if signature == "serving_default" else "examples"
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)) as error:
        loaded.signatures[signature](**{name: tf.constant(value)})
    assert message in str(error.value)


def test_average_serves_the_mean_of_its_members(exported, tmp_path, synthetic_tfrecords):
    tf_keras = pytest.importorskip("tf_keras")
    path, clips, first = exported
    tf_keras.utils.set_random_seed(4)
    other = zoo.build(zoo.ModelConfig(name="feature_attention", hidden_units=32))
    second_dir = exporting.export(other, str(tmp_path / "second"), str(synthetic_tfrecords / "class_labels_indices.csv"))
    second = other({"embedding": clips["embedding"], "num_frames": clips["num_frames"]}, training=False).numpy()
    assert exporting.main(["--average", path, second_dir, "--output", str(tmp_path / "avg")]) == 0
    average = tf.saved_model.load(str(tmp_path / "avg"))
    records = tf.constant([synthetic.sequence_example(clips, i) for i in range(len(clips["video_id"]))])
    scores = average.signatures["serve_examples"](examples=records)["scores"].numpy()
    np.testing.assert_allclose(scores, (first + second) / 2, atol=1e-5)
    assert average.class_names.numpy().shape == (527,)


def test_average_refuses_what_is_not_an_export_in_one_line(exported, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        exporting.main(["--average", exported[0], str(tmp_path), "--output", str(tmp_path / "avg")])
    assert exit_info.value.code == 2
    assert f"{tmp_path}: not a SavedModel written by train.py" in capsys.readouterr().err.strip().splitlines()[-1]


# --- Reliability, round 2 (issue #14): refused, never a NaN or a silently changed frame. -------------

def _example_with_frames(frames):
    example = tf.train.SequenceExample()
    example.context.feature["video_id"].bytes_list.value.append(b"abcdefghijk")
    if frames is None:  # no feature list at all
        return example.SerializeToString()
    feature_list = example.feature_lists.feature_list["audio_embedding"]  # present, maybe empty
    for frame in frames:
        feature_list.feature.add().bytes_list.value.append(frame)
    return example.SerializeToString()


@pytest.mark.parametrize("frames, message", [
    ([], "every clip needs at least one frame; clip] [1] [has 0 frames"),
    (None, "Feature list 'audio_embedding' is required but could not be found"),
    ([bytes(127)] * 10, "must be 128 bytes; example] [1] [has a frame of] [127]"),
    ([bytes(128)] * 9 + [bytes(129)], "must be 128 bytes; example] [1] [has a frame of] [129]"),
    ([bytes(1280)], "must be 128 bytes; example] [1] [has a frame of] [1280]"),
])
def test_serve_examples_refuses_a_clip_without_frames_or_a_frame_of_another_length(loaded, frames, message):
    good = _example_with_frames([bytes(range(128))] * 10)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        loaded.signatures["serve_examples"](examples=tf.constant([good, _example_with_frames(frames)]))
    assert message in error.value.message, error.value.message
    scores = loaded.signatures["serve_examples"](examples=tf.constant([good]))["scores"].numpy()
    assert np.isfinite(scores).all()


def test_serving_default_refuses_zero_frames(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="every clip needs at least one frame"):
        loaded.signatures["serving_default"](embedding=tf.zeros([2, 0, 128], tf.uint8))
    empty = loaded.signatures["serving_default"](embedding=tf.zeros([0, 10, 128], tf.uint8))["scores"]
    assert empty.shape == (0, 527)


def test_export_is_renamed_into_place_and_replaces_an_older_one(exported, tmp_path, synthetic_tfrecords):
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(5)
    model = zoo.build(zoo.ModelConfig(name="average_pooling", hidden_units=8))
    target = tmp_path / "saved_model"
    target.mkdir()
    (target / "stale").write_text("from an older export")
    exporting.export(model, str(target), str(synthetic_tfrecords / "class_labels_indices.csv"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]  # no temporary left beside it
    assert not (target / "stale").exists() and (target / "saved_model.pb").exists()
    assert tf.saved_model.load(str(target)).signatures["serve_examples"] is not None

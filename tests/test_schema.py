import json

import numpy as np
import pytest
import tensorflow as tf

from tfdata import schema


def test_dequantize_is_the_bin_centre_of_vggish_quantization():
    q = tf.constant([0, 1, 127, 128, 254, 255], tf.uint8)
    x = schema.dequantize(q).numpy()
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, (np.array([0, 1, 127, 128, 254, 255]) + 0.5) * 4 / 255 - 2, atol=1e-6)
    assert -2 < x[0] < -2 + 4 / 255  # bin 0 is [-2, -2 + 4/255)


def test_dequantize_inverts_quantize_within_half_a_bin():
    rng = np.random.default_rng(0)
    values = rng.uniform(-1.99, 1.99, 10_000).astype(np.float32)
    restored = schema.dequantize(tf.constant(schema.quantize(values))).numpy()
    assert np.abs(restored - values).max() <= 2 / 255 + 1e-6


def test_quantize_clips_like_vggish():
    assert schema.quantize(np.array([-5.0, 5.0])).tolist() == [0, 255]


def test_dequantize_refuses_signed_or_float_input():
    with pytest.raises(TypeError, match="uint8"):
        schema.dequantize(tf.constant([-1], tf.int8))


def test_bytes_are_read_unsigned():
    # A byte >= 128 would be negative if read as int8.
    decoded = tf.io.decode_raw(tf.constant([bytes([200, 255, 0])]), tf.uint8)
    assert decoded.numpy().tolist() == [[200, 255, 0]]
    assert schema.dequantize(decoded).numpy()[0, 0] > 1.0


def test_block_round_trip():
    rng = np.random.default_rng(1)
    k = 5
    embedding = rng.integers(0, 256, [k, schema.NUM_FRAMES, schema.EMBEDDING_DIM]).astype(np.uint8)
    num_frames = np.array([10, 3, 10, 1, 7])
    labels = (rng.random([k, schema.NUM_CLASSES]) < 0.01).astype(np.uint8)
    labels[:, 526] = 1  # the last class sits in the padding byte of the packed bits
    blocks = [schema.encode_block(526, embedding, num_frames, labels)] * 2
    decoded = {key: v.numpy() for key, v in schema.decode_blocks(tf.constant(blocks), k).items()}
    assert decoded["class_index"].tolist() == [526, 526]
    np.testing.assert_array_equal(decoded["embedding"][1], embedding)
    np.testing.assert_array_equal(decoded["num_frames"][0], num_frames)
    np.testing.assert_array_equal(decoded["labels"][0], labels)
    assert decoded["labels"].dtype == np.uint8


def test_encode_block_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="uint8"):
        schema.encode_block(0, np.zeros([2, 9, 128], np.uint8), np.ones(2), np.zeros([2, 527]))


def test_class_labels_round_trip(tmp_path):
    labels = schema.ClassLabels(tuple(f"/m/{i}" for i in range(527)), tuple(f'Name, "{i}"' for i in range(527)))
    path = tmp_path / "class_labels_indices.csv"
    path.write_text(labels.to_csv())
    assert schema.read_class_labels(str(path)) == labels


def test_real_class_labels(audioset_dir):
    labels = schema.read_class_labels(str(audioset_dir / "class_labels_indices.csv"))
    assert labels.names[0] == "Speech" and labels.mids[0] == "/m/09x0r"


def test_class_labels_with_wrong_columns_are_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a class_labels_indices.csv"):
        schema.read_class_labels(str(path))


def test_the_reject_table_gives_the_first_failed_check_in_numpy_and_tensorflow_alike():
    facts = {"video_id_length": np.array([0, 3, 3, 3, 3]), "num_label_ids": np.array([0, 0, 2, 2, 40]),
             "total_frames": np.array([0, 0, 0, 11, 10]), "num_labels": np.array([0, 0, 2, 2, 40])}
    names = ["missing_video_id", "missing_labels", "no_frames", "too_many_frames", "too_many_labels"]
    expected = [schema.REASON_CODES.index(name) for name in names]
    assert np.asarray(schema.reason_codes(facts, np.where)).tolist() == expected
    tf_facts = {key: tf.constant(value) for key, value in facts.items()}
    assert schema.reason_codes(tf_facts, tf.where).numpy().tolist() == expected
    assert schema.failed("no_frames", {"total_frames": np.array([0, 1])}).tolist() == [True, False]
    assert {c.reason for c in schema.REJECT_CHECKS} <= set(schema.REJECT_REASONS)


def test_manifest_writes_and_reads_back(tmp_path):
    manifest = schema.Manifest(args={"seed": 1}, input_records=3, written_clips=2, rejected=1,
                               rejected_reasons={"duplicate": 1}, class_counts=[0, 2], splits={},
                               rejected_file="rejected/rejected.jsonl")
    manifest.write(str(tmp_path))
    text = (tmp_path / schema.MANIFEST_FILE).read_text()
    assert list(json.loads(text)) == ["schema_version", "complete", "args", "input_records", "written_clips",
                                      "rejected", "rejected_reasons", "rejected_file", "class_counts", "splits"]
    assert text == json.dumps(manifest.to_dict(), indent=1)
    assert schema.Manifest.read(str(tmp_path)) == manifest


def test_manifest_refuses_an_unfinished_or_other_version_run(tmp_path):
    (tmp_path / schema.MANIFEST_FILE).write_text(json.dumps({"schema_version": schema.SHARD_SCHEMA_VERSION}))
    with pytest.raises(schema.ShardsError, match="did not finish"):
        schema.Manifest.read(str(tmp_path))
    (tmp_path / schema.MANIFEST_FILE).write_text(json.dumps({"schema_version": 1, "complete": True}))
    with pytest.raises(schema.ShardsError, match="schema version 1"):
        schema.Manifest.read(str(tmp_path))


def test_class_plan_splits_big_classes_and_pads_rare_ones():
    assert schema.class_plan(1, block_size=64, min_blocks=8, blocks_per_file=64) == [(0, 8)]
    assert schema.class_plan(64 * 64, 64, 8, 64) == [(0, 64)]
    assert schema.class_plan(64 * 64 + 1, 64, 8, 64) == [(0, 64), (64, 65)]
    assert schema.class_plan(10 * 64 * 64 - 5, 64, 8, 64) == [(s * 64, s * 64 + 64) for s in range(10)]

"""beam_pipelines.embed_audio: sound files -> SequenceExamples + manifest, then build_shards reads them."""

import glob
import json

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines import build_shards, embed_audio
from tests import vggish_reference as ref
from tfdata import schema, synthetic

sf = pytest.importorskip("soundfile")


def _csv(tmp_path, text):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return str(path)


def test_labels_csv_accepts_ids_mids_and_names(tmp_path):
    labels = tmp_path / "class_labels_indices.csv"
    labels.write_text(synthetic.class_labels().to_csv())
    path = _csv(tmp_path, '# YTID, start_seconds, end_seconds, positive_labels\n'
                          'dog, 0.000, 10.000, "/m/synthetic003,5"\ndog, 10, 20, "Synthetic class 7"\n')
    table = embed_audio.read_labels(path, str(labels))
    assert table == {"dog": [embed_audio.LabelRow(0.0, 10.0, (3, 5)), embed_audio.LabelRow(10.0, 20.0, (7,))]}
    with pytest.raises(embed_audio.UsageError, match="unknown label '/m/synthetic003'.*--class_labels"):
        embed_audio.read_labels(path, None)


def test_a_row_labels_the_segments_it_mostly_covers():
    rows = [embed_audio.LabelRow(0.0, 10.0, (1,)), embed_audio.LabelRow(30.0, 40.0, (2,))]
    assert embed_audio.segment_labels(rows, 0.0, 9.6) == [1]
    assert embed_audio.segment_labels(rows, 9.6, 19.2) == []  # covered for 0.4 s only
    assert embed_audio.segment_labels(rows, 28.8, 38.4) == [2]
    assert embed_audio.segment_labels(rows, 0.0, 2.88) == [1]  # a short file


def test_long_files_are_cut_into_segments_of_ten_examples():
    codes = np.arange(23 * 128, dtype=np.int64).astype(np.uint8).reshape(23, 128)
    parts = embed_audio.segments(codes, "long")
    assert [(p["start"], p["end"], len(p["embedding"])) for p in parts] == [
        (0.0, 9.6, 10), (9.6, 19.2, 10), (19.2, 22.08, 3)]
    np.testing.assert_array_equal(np.concatenate([p["embedding"] for p in parts]), codes)


def test_a_second_file_with_the_same_name_is_rejected():
    keep, rejected = embed_audio.assign_video_ids(["a/x.wav", "b/x.flac", "b/y.wav"])
    assert keep == [("a/x.wav", "x"), ("b/y.wav", "y")]
    assert [(r["file"], r["reason"]) for r in rejected] == [("b/x.flac", "duplicate_video_id")]


def test_encode_segments_in_a_test_pipeline():
    table = {"x": [embed_audio.LabelRow(0.0, 10.0, (4,))]}
    segment = {"video_id": "x", "start": 0.0, "end": 1.92, "embedding": np.full([2, 128], 7, np.uint8), "file": "x.wav"}
    expected = schema.encode_sequence_example(b"x", 0.0, 2, [4], segment["embedding"], end_time_seconds=1.92)
    with TestPipeline() as p:
        out = p | beam.Create([segment]) | embed_audio.EncodeSegments(table, 4)
        assert_that(out, equal_to([(embed_audio.shard_of("x", 4), ("x", 0.0, expected, True))]))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Sound files at 8, 16, 22.05, 44.1 and 48 kHz, mono and stereo, WAV int16 / float and FLAC,
    plus a 0.5-s file and a text file named .wav; a labels CSV for some of them."""
    d = tmp_path_factory.mktemp("sounds")
    files = {}
    x16 = np.round(ref.test_waveform(3.2, 20) * 0.8 * 32767).astype(np.int16)
    sf.write(str(d / "a16k.wav"), x16, 16000, subtype="PCM_16")
    files["a16k"] = x16 / 32768.0
    for name, rate, channels, subtype, ext, seconds in [
            ("b8k", 8000, 1, "PCM_16", "wav", 2.0), ("c22k", 22050, 2, "PCM_16", "flac", 2.0),
            ("d44k", 44100, 2, "FLOAT", "wav", 12.0), ("e48k", 48000, 1, "PCM_24", "flac", 1.5)]:
        data = np.stack([ref.test_waveform(seconds, c, rate) * 0.9 for c in range(channels)], axis=1)
        sf.write(str(d / f"{name}.{ext}"), data, rate, subtype=subtype)
    sf.write(str(d / "short.wav"), ref.test_waveform(0.5, 0, 44100), 44100, subtype="PCM_16")
    (d / "text.wav").write_text("not a sound\n" * 100)
    labels = d.parent / "labels.csv"
    labels.write_text("# YTID, start_seconds, end_seconds, positive_labels\n"
                      'a16k, 0, 10, "3,9"\nd44k, 0, 10, "1"\nd44k, 10, 20, "2"\nb8k, 0, 10, "0"\n'
                      'c22k, 0, 10, "5"\ne48k, 0, 10, "6"\n')
    return d, str(labels), files


@pytest.fixture(scope="module")
def embedded(corpus, vggish_files, tmp_path_factory):
    d, labels, files = corpus
    out = tmp_path_factory.mktemp("embedded") / "out"
    manifest = embed_audio.run(["--input", str(d / "*"), "--output_dir", str(out), "--vggish_checkpoint",
                                vggish_files.checkpoint, "--pca_params", vggish_files.pca_params,
                                "--labels", labels, "--num_shards", "3"])
    records = {}
    for path in sorted(glob.glob(str(out / "*.tfrecord"))):
        for raw in tf.data.TFRecordDataset(path):
            ex = tf.train.SequenceExample.FromString(raw.numpy())
            ctx = ex.context.feature
            key = (ctx[schema.VIDEO_ID_KEY].bytes_list.value[0].decode(), round(ctx[schema.START_TIME_KEY].float_list.value[0], 3))
            frames = ex.feature_lists.feature_list[schema.EMBEDDING_KEY].feature
            records[key] = {"labels": list(ctx[schema.LABELS_KEY].int64_list.value),
                            "end": ctx[schema.END_TIME_KEY].float_list.value[0],
                            "codes": np.stack([np.frombuffer(f.bytes_list.value[0], np.uint8) for f in frames])}
    return out, manifest, records, files


@pytest.mark.slow
def test_manifest_counts_and_rejections(embedded):
    out, manifest, records, _ = embedded
    assert manifest["complete"] and manifest["input_files"] == 7 and manifest["embedded_files"] == 5
    assert manifest["rejected_reasons"] == {"not_audio": 1, "unreadable": 0, "empty": 0, "too_short": 1,
                                            "duplicate_video_id": 0}
    assert [(e["file"].rsplit("/", 1)[1], e["reason"]) for e in manifest["rejected_files"]] == [
        ("short.wav", "too_short"), ("text.wav", "not_audio")]
    # 3 + 2 + 2 + 12 + 1 examples; d44k is two segments (10 + 2 examples)
    assert manifest["examples"] == 20 and manifest["segments"] == 6 == len(records)
    assert manifest["unlabelled_segments"] == 0 and json.loads((out / "manifest.json").read_text()) == manifest
    assert sorted(records) == [("a16k", 0.0), ("b8k", 0.0), ("c22k", 0.0), ("d44k", 0.0), ("d44k", 9.6), ("e48k", 0.0)]
    assert records[("d44k", 9.6)]["labels"] == [2] and records[("a16k", 0.0)]["labels"] == [3, 9]
    assert records[("d44k", 9.6)]["codes"].shape == (2, 128) and abs(records[("d44k", 9.6)]["end"] - 11.52) < 1e-4


@pytest.mark.slow
def test_16k_codes_match_the_numpy_reference(embedded, vggish_files):
    _, _, records, files = embedded
    codes, expected = records[("a16k", 0.0)]["codes"].astype(int), vggish_files.codes(files["a16k"]).astype(int)
    assert codes.shape == expected.shape == (3, 128)
    assert np.abs(codes - expected).max() <= 1 and (codes == expected).mean() >= 0.99


@pytest.mark.slow
def test_build_shards_takes_the_output_like_the_released_files(embedded, tmp_path):
    out, _, records, _ = embedded
    manifest = build_shards.run(["--input", str(out / "*.tfrecord"), "--output_dir", str(tmp_path / "shards"),
                                 "--layout", "plain", "--num_plain_shards", "1"])
    assert manifest["input_records"] == len(records) and manifest["written_clips"] == len(records)


def test_a_non_empty_output_or_no_match_is_refused_before_writing(corpus, vggish_files, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    base = ["--vggish_checkpoint", vggish_files.checkpoint, "--pca_params", vggish_files.pca_params]
    with pytest.raises(embed_audio.UsageError, match="not empty"):
        embed_audio.run(["--input", str(corpus[0] / "*.wav"), "--output_dir", str(tmp_path / "out")] + base)
    with pytest.raises(embed_audio.UsageError, match="no files match"):
        embed_audio.run(["--input", str(tmp_path / "none/*.wav"), "--output_dir", str(tmp_path / "o2")] + base)
    assert embed_audio.main(["--input", str(corpus[0] / "*.wav"), "--output_dir", str(tmp_path / "o3"),
                             "--vggish_checkpoint", str(tmp_path / "missing.ckpt"),
                             "--pca_params", vggish_files.pca_params]) == 2

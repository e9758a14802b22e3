"""tfdata.audio: decoding, resampling and the TF-op log-mel front end against an independent NumPy one."""

import numpy as np
import pytest
import tensorflow as tf

from tests import vggish_reference as ref
from tfdata import audio

sf = pytest.importorskip("soundfile")
resampy = pytest.importorskip("resampy")


def test_mel_matrix_is_the_references():
    np.testing.assert_allclose(audio.mel_matrix(), ref.mel_weights(), atol=1e-12)
    assert audio.mel_matrix().shape == (257, 64) and not audio.mel_matrix()[0].any()


@pytest.mark.parametrize("num_samples", [15600, 48000, 16000 * 5 + 123, 16000 * 21])
def test_log_mel_examples_match_numpy(num_samples):
    x = ref.test_waveform(num_samples / 16000, seed=num_samples)[:num_samples].astype(np.float32)
    expected = ref.log_mel_examples(x)  # [T, 96, 64]
    got = audio.log_mel_examples(tf.constant(x)).numpy()
    assert got.shape == expected.shape == (audio.PARAMS.num_examples(num_samples), 96, 64)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)  # computed in float64, returned as float32


def test_examples_are_batched_and_need_15600_samples():
    assert audio.PARAMS.min_samples == 15600
    assert [audio.PARAMS.num_examples(n) for n in (0, 399, 15599, 15600, 30959, 30960, 48000)] == [0, 0, 0, 1, 1, 2, 3]
    batch = tf.constant(np.stack([ref.test_waveform(2.0, 1), ref.test_waveform(2.0, 2)]), tf.float32)
    assert audio.log_mel_examples(batch).shape == (2, 2, 96, 64)
    assert audio.log_mel_examples(tf.zeros([1, 15599])).shape == (1, 0, 96, 64)


def _write(path, data, rate, subtype):
    sf.write(str(path), data, rate, subtype=subtype)
    return str(path)


def test_16k_int16_is_divided_by_32768_and_stereo_averaged(tmp_path):
    rng = np.random.default_rng(0)
    pcm = rng.integers(-32768, 32767, size=(20000, 2), dtype=np.int16)
    loaded = audio.load(_write(tmp_path / "a.wav", pcm, 16000, "PCM_16"))
    np.testing.assert_allclose(loaded.waveform, pcm.mean(axis=1) / 32768.0, atol=1e-7)
    assert (loaded.source_sample_rate, loaded.channels) == (16000, 2)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels, subtype, ext", [(1, "PCM_16", "wav"), (2, "FLOAT", "wav"), (2, "PCM_24", "flac")])
def test_every_rate_and_format_resamples_to_16k_like_resampy(tmp_path, rate, channels, subtype, ext):
    data = np.stack([ref.test_waveform(1.5, c, rate) * 0.9 for c in range(channels)], axis=1)
    path = _write(tmp_path / f"x.{ext}", data, rate, subtype)
    decoded, _ = sf.read(path, dtype="float64", always_2d=True)
    loaded = audio.load(path)
    expected = resampy.resample(decoded.mean(axis=1), rate, 16000)
    assert len(loaded.waveform) == len(expected) == int(np.ceil(len(data) * 16000 / rate))
    np.testing.assert_allclose(loaded.waveform, expected, atol=1e-6)
    assert loaded.channels == channels and audio.PARAMS.num_examples(len(loaded.waveform)) == 1


@pytest.mark.parametrize("content, reason", [
    ("text", "not_audio"), ("empty_file", "not_audio"), ("short", "too_short"), ("missing", "unreadable")])
def test_files_that_give_no_example_raise_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "clip.wav"
    if content == "text":
        path.write_text("this is not a sound\n" * 50)
    elif content == "empty_file":
        path.write_bytes(b"")
    elif content == "short":
        _write(path, ref.test_waveform(0.5, 0, 44100), 44100, "PCM_16")
    with pytest.raises(audio.AudioError) as raised:
        audio.load(str(path))
    assert raised.value.reason == reason and str(path) in str(raised.value)
    assert reason in audio.REJECT_REASONS


@pytest.mark.parametrize("fmt, subtype, ext", [("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")])
def test_ogg_and_mp3_decode_where_libsndfile_reads_them(tmp_path, fmt, subtype, ext):
    if subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile cannot write {fmt}/{subtype}")
    path = _write(tmp_path / f"x.{ext}", ref.test_waveform(2.0, 0, 44100) * 0.5, 44100, subtype)
    loaded = audio.load(path)
    assert loaded.source_sample_rate == 44100 and abs(loaded.seconds - 2.0) < 0.1  # MP3 adds encoder padding

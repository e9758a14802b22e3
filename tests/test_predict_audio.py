"""predict.py --audio: sound files -> top classes, timeline CSV and heat map; bad files get one line."""

import csv

import numpy as np
import pytest
import tensorflow as tf

import predict
from tests import vggish_reference as ref
from tfdata import audio

sf = pytest.importorskip("soundfile")


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict_sounds")
    sf.write(str(d / "tone16k.wav"), ref.test_waveform(3.0, 30), 16000, subtype="PCM_16")
    stereo = np.stack([ref.test_waveform(5.0, 31, 44100), ref.test_waveform(5.0, 32, 44100)], axis=1) * 0.8
    sf.write(str(d / "stereo44k.flac"), stereo, 44100, subtype="PCM_16")
    sf.write(str(d / "short.wav"), ref.test_waveform(0.5, 0, 22050), 22050, subtype="PCM_16")
    (d / "notes.wav").write_text("hello\n" * 100)
    return d


def test_top_classes_timeline_and_plot(waveform_model_dir, sounds, tmp_path, capsys):
    files = [str(sounds / n) for n in ("tone16k.wav", "short.wav", "notes.wav", "stereo44k.flac")]
    out, timeline, plot = tmp_path / "top.csv", tmp_path / "timeline.csv", tmp_path / "timeline.png"
    status = predict.main(["--saved_model", waveform_model_dir, "--audio", *files, "--top_k", "3",
                           "--output", str(out), "--timeline", str(timeline), "--plot", str(plot)])
    captured = capsys.readouterr()
    assert status == 1  # some files failed; the others were still predicted
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and "short.wav: skipped, too short" in errors[0] and "notes.wav: skipped, not audio" in errors[1]
    assert [line.split(" ")[0] for line in captured.out.strip().splitlines()] == [files[0], files[3]]
    top = list(csv.DictReader(out.open()))
    assert len(top) == 6 and top[0]["file"] == files[0] and top[0]["rank"] == "1"
    model = tf.saved_model.load(waveform_model_dir)
    waveform = audio.load(files[3]).waveform
    expected = model.signatures["serve_waveform"](waveform=tf.constant(waveform[None]))
    best = int(np.argmax(expected["scores"].numpy()[0]))
    row = [r for r in top if r["file"] == files[3] and r["rank"] == "1"][0]
    assert int(row["index"]) == best and abs(float(row["score"]) - expected["scores"].numpy()[0, best]) < 1e-5
    rows = list(csv.DictReader(timeline.open()))
    assert len(rows) == (3 + 5) * 3  # examples x top_k
    last = [r for r in rows if r["file"] == files[3]][-1]
    assert (last["start_seconds"], last["end_seconds"]) == ("3.84", "4.80")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_all_good_files_exit_zero(waveform_model_dir, sounds, capsys):
    assert predict.main(["--saved_model", waveform_model_dir, "--audio", str(sounds / "tone16k.wav")]) == 0
    assert "tone16k.wav (3.0 s)" in capsys.readouterr().out


def test_a_model_without_serve_waveform_is_one_line(classifier_dir, sounds, capsys):
    assert predict.main(["--saved_model", classifier_dir, "--audio", str(sounds / "tone16k.wav")]) == 1
    assert "no serve_waveform signature" in capsys.readouterr().err

"""benchmarks.serving end to end with a tiny model (the figures themselves are in docs/benchmarks.md, never asserted)."""

import json

import pytest

from benchmarks import serving


@pytest.mark.slow
def test_serving_benchmark_reports_every_signature_in_a_fresh_process(tmp_path, capsys):
    out = tmp_path / "serving.json"
    assert serving.main(["--hidden_units", "16", "--requests", "20", "--batch_size", "8", "--batches", "2",
                         "--peak_seconds", "0.1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    envelope = json.loads(out.read_text())
    assert envelope["benchmark"] == "serving" and envelope["config"]["requests"] == 20
    results = envelope["results"]
    assert set(results["signatures"]) == {"serving_default", "serve_examples", "serve_waveform"}
    assert results["signatures"]["serve_waveform"] is None and "serve_waveform   skipped: no --vggish_checkpoint" in text
    for name in ("serving_default", "serve_examples"):
        r = results["signatures"][name]
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["clips_per_s"] > 0 and r["batch_size"] == 8
        assert r["fraction_of_peak"] == pytest.approx(r["clips_per_s"] * results["forward_flops_per_clip"]
                                                      / results["peak_flops"])
    assert "batch-1 p50" in text and "of peak" in text
    assert results["export_s"] > 0 and results["load_s"] > 0 and "load in a fresh process" in text


@pytest.mark.slow
def test_serve_waveform_is_timed_with_the_vggish_files(tmp_path, capsys, vggish_files):
    out = tmp_path / "serving.json"
    assert serving.main(["--hidden_units", "16", "--requests", "20", "--batch_size", "2", "--batches", "1",
                         "--peak_seconds", "0.05", "--vggish_checkpoint", vggish_files.checkpoint,
                         "--pca_params", vggish_files.pca_params, "--json", str(out)]) == 0
    waveform = json.loads(out.read_text())["results"]["signatures"]["serve_waveform"]
    assert waveform["p50_ms"] > 0 and waveform["batch_size"] == 2 and waveform["fraction_of_peak"] is None


def test_percentiles_pick_ranked_values():
    values = [float(v) for v in range(1, 101)]
    assert serving._percentile(values, 50) == 51.0 and serving._percentile(values, 99) == 99.0

"""Every Beam job of the project through Beam's portable job API with SDK workers in other processes (as
Dataflow runner v2, Flink and Spark run them) writes byte-identical output to the DirectRunner's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from beam_pipelines import build_shards, embed_audio
from tests import portable_services
from tests import vggish_reference as ref

# Arguments that differ between the two runs by design.
RUN_SPECIFIC = ("output_dir", "pipeline_args", "pipeline_options")


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    services = portable_services.PortableServices(tmp_path_factory.mktemp("portable"))
    try:
        services.start()
    except portable_services.ServicesError as e:
        services.stop()
        pytest.skip(f"Beam's portable job service or worker pool cannot start here: {e}")
    except BaseException:
        services.stop()
        raise
    yield services
    services.stop()


def _digests(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def _manifest(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    for key in RUN_SPECIFIC:
        manifest.get("args", {}).pop(key, None)
    return manifest


def _run_portable(portable, module: str, args: list[str], cwd: Path) -> None:
    result = portable_services.run_job(module, args + portable.pipeline_args(), cwd)
    assert result.returncode == 0, (f"{module} on the PortableRunner failed:\n{result.stderr[-3000:]}\n"
                                    f"worker pool:\n{portable.log_tail('worker_pool', 20)}")


@pytest.mark.slow
def test_build_shards_on_the_portable_runner_matches_the_direct_runner(portable, synthetic_tfrecords, tmp_path):
    # Relative paths from the launcher's directory: the workers run in another one.
    (tmp_path / "data").symlink_to(synthetic_tfrecords)
    options = ["--input", "data/A*.tfrecord,data/B*.tfrecord", "--holdout_fraction", "0.25", "--block_size", "8"]
    _run_portable(portable, "beam_pipelines.build_shards", options + ["--output_dir", "portable"], tmp_path)
    direct = build_shards.run([o.replace("data/", f"{tmp_path}/data/") for o in options]
                              + ["--output_dir", str(tmp_path / "direct")])
    portable_out = tmp_path / "portable"
    assert direct["written_clips"] > 0 and _manifest(portable_out)["written_clips"] == direct["written_clips"]
    assert _digests(portable_out) == _digests(tmp_path / "direct")
    assert _manifest(portable_out) == _manifest(tmp_path / "direct")


@pytest.mark.slow
def test_embed_audio_on_the_portable_runner_matches_the_direct_runner(portable, vggish_files, tmp_path):
    sf = pytest.importorskip("soundfile")
    sounds = tmp_path / "sounds"
    sounds.mkdir()
    sf.write(str(sounds / "a.wav"), ref.test_waveform(2.0, 1) * 0.8, 16000, subtype="PCM_16")
    stereo = np.stack([ref.test_waveform(1.5, c, 44100) * 0.9 for c in range(2)], axis=1)
    sf.write(str(sounds / "b.wav"), stereo, 44100, subtype="PCM_16")
    (sounds / "c.wav").write_text("not a sound\n")
    vggish = ["--vggish_checkpoint", vggish_files.checkpoint, "--pca_params", vggish_files.pca_params,
              "--num_shards", "2"]
    _run_portable(portable, "beam_pipelines.embed_audio",
                  ["--input", "sounds/*.wav", "--output_dir", "portable"] + vggish, tmp_path)
    direct = embed_audio.run(["--input", str(sounds / "*.wav"), "--output_dir", str(tmp_path / "direct")] + vggish)
    assert direct["embedded_files"] == 2 and direct["rejected"] == 1
    assert _digests(tmp_path / "portable") == _digests(tmp_path / "direct")
    assert _manifest(tmp_path / "portable") == _manifest(tmp_path / "direct")


def test_relative_paths_are_made_absolute_for_the_workers(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    config, _ = build_shards.parse_args(["--input", "a/*.tfrecord, gs://b/*.tfrecord", "--output_dir", "out"])
    assert config.input == f"{tmp_path}/a/*.tfrecord,gs://b/*.tfrecord" and config.output_dir == f"{tmp_path}/out"
    config, _ = embed_audio.parse_args(["--input", "s/*.wav", "--output_dir", "gs://x/o", "--vggish_checkpoint",
                                        "v.ckpt", "--pca_params", "p.npz"])
    assert (config.input, config.output_dir, config.vggish_checkpoint, config.labels) == (
        f"{tmp_path}/s/*.wav", "gs://x/o", f"{tmp_path}/v.ckpt", None)

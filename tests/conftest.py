"""Shared fixtures: the real AudioSet data beside the repository, and small synthetic corpora."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The audio tests' session fixtures (one random full-size VGGish checkpoint per session) live here
# so that every module shares them.
from tests import in_process  # noqa: E402
from tests.shared_dir import shared_dir  # noqa: E402
from tests.vggish_fixtures import classifier_dir, embedder, vggish_files, waveform_model_dir  # noqa: E402,F401

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_AUDIOSET = REPO_ROOT.parent / "shared" / "data" / "audioset"
# The modules that take longest, longest first (measured with `make test`, 2026-12-02). They run first, so that
# on two xdist workers (a module per worker at a time) none is left running alone at the end.
LONGEST_MODULES = ("test_trainer.py", "test_build_shards.py", "test_benchmarks_all.py", "test_evaluation.py",
                   "test_quality.py", "test_portable_runner.py", "test_benchmarks_serving.py", "test_zoo.py",
                   "test_synthetic.py", "test_vggish.py", "test_beam_transforms.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: LONGEST_MODULES.index(item.path.name) if item.path.name in LONGEST_MODULES
               else len(LONGEST_MODULES))  # stable: the other modules keep their order


@pytest.fixture(autouse=True)
def _no_global_tensorflow_seed_left_behind():
    """Tests that seed TensorFlow globally (keras.utils.set_random_seed) do not seed the tests after them."""
    yield
    in_process.clear_global_seed()


@pytest.fixture(scope="session")
def audioset_dir() -> Path:
    """../shared/data/audioset (the real bal_train split); tests using it skip when it is absent."""
    if not (SHARED_AUDIOSET / "bal_train").is_dir():
        pytest.skip(f"real AudioSet data not found at {SHARED_AUDIOSET}")
    return SHARED_AUDIOSET


@pytest.fixture(scope="session")
def benchmark_work(tmp_path_factory) -> Path:
    """A benchmarks --work_dir holding the synthetic data and shards of the --tiny sizes (benchmarks.input.prepare),
    built once per run for the benchmark tests of both workers."""
    from benchmarks import all as all_benchmarks
    from benchmarks import input as input_benchmark

    return shared_dir(tmp_path_factory, "benchmark-work",
                      lambda d: input_benchmark.prepare(str(d), all_benchmarks.TINY.num_clips))


@pytest.fixture(scope="session")
def synthetic_tfrecords(tmp_path_factory) -> Path:
    """2,000 synthetic clips in the released TFRecord layout, with class_labels_indices.csv (seed 7)."""
    from tfdata import synthetic

    out = tmp_path_factory.mktemp("synthetic")
    config = synthetic.SyntheticConfig(num_clips=2000, seed=7)
    synthetic.write_tfrecords(config, str(out))
    (out / "class_labels_indices.csv").write_text(synthetic.class_labels().to_csv())
    return out


@pytest.fixture(scope="session")
def beam_shards(tmp_path_factory, synthetic_tfrecords) -> Path:
    """Shards of the 2,000 synthetic clips built by the Beam job: blocks of 16, 25% held out."""
    from beam_pipelines import build_shards

    out = tmp_path_factory.mktemp("beam") / "shards"
    build_shards.run(["--input", str(synthetic_tfrecords / "*.tfrecord"), "--output_dir", str(out),
                      "--holdout_fraction", "0.25", "--block_size", "16"])
    return out

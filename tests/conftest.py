"""Shared fixtures: the real AudioSet data beside the repository, and small synthetic corpora."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The audio tests' session fixtures (one random full-size VGGish checkpoint per session) live here
# so that every module shares them.
from tests.vggish_fixtures import classifier_dir, embedder, vggish_files, waveform_model_dir  # noqa: E402,F401

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_AUDIOSET = REPO_ROOT.parent / "shared" / "data" / "audioset"
# The modules that take longest, longest first (the last two: of those that make test-fast runs). They run
# first, so that on two xdist workers (a module per worker at a time) none is left running alone at the end.
LONGEST_MODULES = ("test_trainer.py", "test_quality.py", "test_quickstart.py", "test_benchmarks_all.py",
                   "test_evaluation.py", "test_benchmarks_training.py", "test_portable_runner.py", "test_zoo.py",
                   "test_exporting.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: LONGEST_MODULES.index(item.path.name) if item.path.name in LONGEST_MODULES
               else len(LONGEST_MODULES))  # stable: the other modules keep their order


@pytest.fixture(scope="session")
def audioset_dir() -> Path:
    """../shared/data/audioset (the real bal_train split); tests using it skip when it is absent."""
    if not (SHARED_AUDIOSET / "bal_train").is_dir():
        pytest.skip(f"real AudioSet data not found at {SHARED_AUDIOSET}")
    return SHARED_AUDIOSET


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

"""Session fixtures for the audio tests: one random full-size VGGish checkpoint (about 277 MB in tmp) and
the exports built on it, written once per test run and shared by the xdist workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import vggish_reference
from tests.shared_dir import shared_dir


@pytest.fixture(scope="session")
def vggish_files(tmp_path_factory) -> vggish_reference.Files:
    directory = shared_dir(tmp_path_factory, "vggish", lambda d: vggish_reference.Files(str(d)))
    return vggish_reference.Files.read(str(directory))


@pytest.fixture(scope="session")
def embedder(vggish_files):
    from tfdata import vggish

    return vggish.Embedder.from_files(vggish_files.checkpoint, vggish_files.pca_params)


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory) -> str:
    """A small exported classifier (single_attention, 32 units, seed 3) with the synthetic class names."""
    import tf_keras

    from models import exporting, zoo
    from tfdata import synthetic

    def build(out: Path) -> None:
        labels = out / "class_labels_indices.csv"
        labels.write_text(synthetic.class_labels().to_csv())
        tf_keras.utils.set_random_seed(3)
        model = zoo.build(zoo.ModelConfig(name="single_attention", hidden_units=32))
        exporting.export(model, str(out / "saved_model"), str(labels))

    return str(shared_dir(tmp_path_factory, "classifier", build) / "saved_model")


@pytest.fixture(scope="session")
def waveform_model_dir(tmp_path_factory, classifier_dir, vggish_files) -> str:
    """classifier_dir with VGGish in front (serve_waveform), exported through the CLI."""
    from models import exporting

    def build(out: Path) -> None:
        assert exporting.main(["--audio", classifier_dir, "--vggish_checkpoint", vggish_files.checkpoint,
                               "--pca_params", vggish_files.pca_params, "--output", str(out / "saved_model")]) == 0

    return str(shared_dir(tmp_path_factory, "waveform", build) / "saved_model")

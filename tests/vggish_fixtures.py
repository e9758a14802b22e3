"""Session fixtures for the audio tests: one random full-size VGGish checkpoint (about 277 MB in tmp)."""

from __future__ import annotations

import pytest

from tests import vggish_reference


@pytest.fixture(scope="session")
def vggish_files(tmp_path_factory) -> vggish_reference.Files:
    return vggish_reference.Files(str(tmp_path_factory.mktemp("vggish")))


@pytest.fixture(scope="session")
def embedder(vggish_files):
    from models import vggish

    return vggish.Embedder.from_files(vggish_files.checkpoint, vggish_files.pca_params)

"""Old module path, kept for one release for beam_pipelines/benchmark.py (moving to benchmarks/beam.py):
the building blocks now live in the stage modules (clips, read, validate, dedup, layout, write, manifest)."""

from beam_pipelines import manifest as _manifest
from beam_pipelines.clips import (OK, clip_key, concat, empty_stats, holdout_threshold, plain_shard,  # noqa: F401
                                  rejections, take, unpack_labels)
from beam_pipelines.layout import BALANCED_COLUMNS, write_class_files  # noqa: F401
from beam_pipelines.read import masked_crc32c, parse_batch  # noqa: F401
from beam_pipelines.write import PLAIN_COLUMNS, plain_file_name, rejected_lines, write_plain_file  # noqa: F401

_masked_crc = masked_crc32c  # tests/test_evaluation.py builds corrupt files with it


def build_manifest(*args, **kwargs) -> dict:
    """manifest.build_manifest as the dict that manifest.json holds."""
    return _manifest.build_manifest(*args, **kwargs).to_dict()

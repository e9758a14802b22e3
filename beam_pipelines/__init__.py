"""Apache Beam jobs that turn AudioSet releases into validated shards."""

import logging
import os

# TensorFlow INFO and WARNING logs bury the messages meant for users; export 0 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _not_apitools_warning(record: logging.LogRecord) -> bool:
    """apache_beam.io.gcp warns on every import when the BigQuery client is absent; no job here uses BigQuery."""
    return not str(record.msg).startswith("apitools not found")


logging.getLogger().addFilter(_not_apitools_warning)


class UsageError(Exception):
    """A problem the user must fix; reported as one line, nothing written (every job's run())."""


def absolute_paths(paths: str | None) -> str | None:
    """Comma-separated local paths or globs made absolute (URLs such as gs:// kept): a portable runner's
    SDK workers (Dataflow, Flink, Spark, Beam's worker pool) run in other directories than the launcher."""
    if not paths:
        return paths
    return ",".join(p.strip() if "://" in p else os.path.abspath(p.strip()) for p in paths.split(","))


def literal_pattern(path: str) -> str:
    """A path as a FileSystems.match pattern that matches only itself (glob characters escaped)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)

"""Apache Beam jobs that turn AudioSet releases into validated shards."""

import logging
import os

# TensorFlow INFO and WARNING logs bury the messages meant for users; export 0 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _not_apitools_warning(record: logging.LogRecord) -> bool:
    """apache_beam.io.gcp warns on every import when the BigQuery client is absent; no job here uses BigQuery."""
    return not str(record.msg).startswith("apitools not found")


logging.getLogger().addFilter(_not_apitools_warning)

"""Apache Beam jobs that turn AudioSet releases into validated shards."""

import os

# TensorFlow INFO and WARNING logs bury the messages meant for users; export 0 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

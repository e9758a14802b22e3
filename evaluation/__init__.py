"""Evaluation of exported SavedModels: scoring clips (scoring), the per-class plot (plots), what is written
and printed (report). The AudioSet metrics themselves are models.metrics: training validates with them."""

import os

# TensorFlow INFO and WARNING logs bury the messages meant for users; export 0 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

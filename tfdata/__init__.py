"""AudioSet wire format, readers, synthetic data and the tf.data input."""

import os

# TensorFlow INFO and WARNING logs bury the messages meant for users; export 0 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfdata.datasets import distributed_train_dataset, eval_dataset, train_dataset  # noqa: E402

__all__ = ["train_dataset", "eval_dataset", "distributed_train_dataset"]

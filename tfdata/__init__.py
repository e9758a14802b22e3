"""AudioSet wire format, readers, synthetic data, the tf.data input and the audio front end (log-mel, VGGish)."""

import os

# TensorFlow INFO and WARNING logs bury the messages meant for users; export 0 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["train_dataset", "eval_dataset", "distributed_train_dataset"]


def __getattr__(name: str):
    """tfdata.train_dataset etc., imported on first use: `python -m tfdata.X --help` does not load TensorFlow."""
    if name in __all__:
        from tfdata import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module 'tfdata' has no attribute {name!r}")

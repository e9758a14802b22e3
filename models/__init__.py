"""tf.keras models over AudioSet embeddings, training and export."""

import os

# TensorFlow INFO and WARNING logs bury the messages meant for users; export 0 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

"""Trains an AudioSet classifier on balanced shards and exports a SavedModel.

    python train.py --train_data SHARDS --model NAME --model_dir DIR [--eval_data PATH]
        [--strategy default|mirrored|multi_worker] [--cpu_replicas N] [--batch_size 500] [--steps N] ...

Running the same command again after an interruption resumes from DIR/backup.
"""

from __future__ import annotations

import sys

import models  # noqa: F401  (quiet TensorFlow logs before it loads)
from models.config import parse_args  # no TensorFlow: --help is fast


def main(argv: list[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    from models import trainer, zoo  # TensorFlow loads here, after the arguments are checked
    from tfdata import datasets, readers

    try:
        if config.model.name not in zoo.REGISTRY:
            raise zoo.UnknownModelError(f"unknown model {config.model.name!r}; known models: {', '.join(zoo.REGISTRY)}")
        export_dir = trainer.train(config)
    except (trainer.ConfigError, trainer.TrainingDivergedError, zoo.UnknownModelError, datasets.ShardsError,
            FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  TensorFlow errors from bad data: one line, not a trace
        import tensorflow as tf
        if isinstance(e, tf.errors.OpError):
            print(f"error: {readers.error_message(e)}", file=sys.stderr)
            return 1
        raise
    print(f"exported {export_dir}" if export_dir else "worker done; the chief exports")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Trains an AudioSet classifier on balanced shards and exports a SavedModel.

    python train.py --train_data SHARDS --model NAME --model_dir DIR [--eval_data PATH]
        [--strategy default|mirrored|multi_worker] [--cpu_replicas N] [--batch_size 500] [--steps N] ...

Running the same command again after an interruption resumes from DIR/backup.
"""

from __future__ import annotations

import argparse
import sys

import models  # noqa: F401  (quiet TensorFlow logs before it loads)
# No TensorFlow: --help is fast.
from models.config import MODEL_NAMES, PRECISIONS, ConfigError, ModelConfig, TrainConfig


def parse_args(argv: list[str]) -> TrainConfig:
    d = TrainConfig.__dataclass_fields__
    m = d["model"].default
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train_data", required=True, help="shards directory written by beam_pipelines.build_shards")
    p.add_argument("--model_dir", required=True, help="checkpoints, logs, history.csv and the export")
    p.add_argument("--model", default=m.name, help=f"one of: {', '.join(MODEL_NAMES)}")
    p.add_argument("--eval_data", help="glob of AudioSet TFRecords or shards directory, scored every epoch")
    p.add_argument("--strategy", choices=["default", "mirrored", "multi_worker"], default="default",
                   help="tf.distribute strategy (BUILD.md)")
    p.add_argument("--cpu_replicas", type=int, default=0, help="split the CPU into N logical devices")
    p.add_argument("--batch_size", type=int, default=d["batch_size"].default, help="global batch size")
    p.add_argument("--steps", type=int, default=d["steps"].default, help="training steps in all")
    p.add_argument("--steps_per_epoch", "--eval_every", type=int, default=d["steps_per_epoch"].default,
                   help="steps between checkpoints, logs and evaluations")
    p.add_argument("--learning_rate", type=float, default=d["learning_rate"].default, help="Adam learning rate")
    p.add_argument("--lr_schedule", choices=["constant", "cosine"], default=d["lr_schedule"].default,
                   help="cosine: decay from --learning_rate to 0 over --steps")
    p.add_argument("--seed", type=int, help="seed of weights, data order and mixup (deterministic ops)")
    p.add_argument("--precision", choices=PRECISIONS, default=d["precision"].default,
                   help="Keras mixed precision: float16 (loss scaling) or bfloat16 compute, float32 variables "
                        "and output layer; the export is float32")
    p.add_argument("--mixed_precision", action="store_true",
                   help="deprecated: the same as --precision mixed_float16")
    p.add_argument("--jit_compile", action="store_true", help="compile the training step with XLA")
    p.add_argument("--steps_per_execution", type=int, default=d["steps_per_execution"].default,
                   help="training steps per call into TensorFlow (must divide --steps and --steps_per_epoch)")
    p.add_argument("--export_dir", help="where the SavedModel goes, if not MODEL_DIR/saved_model")
    p.add_argument("--class_labels", help="class_labels_indices.csv to export with the model")
    p.add_argument("--snapshots", type=int, default=d["snapshots"].default,
                   help="also export the last N epoch checkpoints to DIR/snapshots/ for snapshot averaging")
    p.add_argument("--ema", type=float, default=d["ema"].default,
                   help="export an exponential moving average of the weights with this decay (0: off)")
    p.add_argument("--mixup", type=float, default=d["mixup"].default,
                   help="mixup on the embeddings with mixing weights ~ Beta(a, a) (0: off)")
    p.add_argument("--weight_decay", type=float, default=d["weight_decay"].default,
                   help="decoupled weight decay of Adam (AdamW; 0: off)")
    p.add_argument("--label_smoothing", type=float, default=d["label_smoothing"].default,
                   help="binary cross-entropy label smoothing")
    p.add_argument("--hidden_units", type=int, default=m.hidden_units, help="width of the per-frame trunk")
    p.add_argument("--num_layers", type=int, default=m.num_layers, help="layers of the per-frame trunk")
    p.add_argument("--dropout", type=float, default=m.dropout, help="dropout after every trunk layer")
    p.add_argument("--input_batchnorm", action="store_true", help="BatchNorm on the input embeddings")
    p.add_argument("--num_heads", type=int, default=m.num_heads, help="heads of multi_head_attention")
    p.add_argument("--input_dropout", type=float, default=m.input_dropout,
                   help="dropout on the input embeddings (training only)")
    p.add_argument("--frame_dropout", type=float, default=m.frame_dropout,
                   help="drop each frame from pooling with this probability (training only)")
    a = p.parse_args(argv)
    if a.mixed_precision:
        if a.precision not in (d["precision"].default, "mixed_float16"):
            p.error(f"--mixed_precision (deprecated) means --precision mixed_float16, not {a.precision}")
        print("warning: --mixed_precision is deprecated; use --precision mixed_float16", file=sys.stderr)
        a.precision = "mixed_float16"
    model = ModelConfig(a.model, a.hidden_units, a.num_layers, a.dropout, a.input_batchnorm, a.num_heads,
                        a.input_dropout, a.frame_dropout)
    try:  # TrainConfig validates every number (models.config.validate)
        return _config(a, model)
    except ConfigError as e:
        p.error(str(e))


def _config(a: argparse.Namespace, model: ModelConfig) -> TrainConfig:
    return TrainConfig(
        train_data=a.train_data, model_dir=a.model_dir, model=model, eval_data=a.eval_data, strategy=a.strategy,
        cpu_replicas=a.cpu_replicas, batch_size=a.batch_size, steps=a.steps, steps_per_epoch=a.steps_per_epoch,
        learning_rate=a.learning_rate, lr_schedule=a.lr_schedule, seed=a.seed, jit_compile=a.jit_compile,
        precision=a.precision, steps_per_execution=a.steps_per_execution,
        export_dir=a.export_dir, class_labels=a.class_labels, snapshots=a.snapshots, ema=a.ema, mixup=a.mixup,
        weight_decay=a.weight_decay, label_smoothing=a.label_smoothing)


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

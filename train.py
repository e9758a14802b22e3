"""Trains an AudioSet classifier on balanced shards and exports a SavedModel.

    python train.py --train_data SHARDS --model NAME --model_dir DIR [--eval_data PATH]
        [--strategy default|mirrored|multi_worker] [--cpu_replicas N] [--batch_size 500] [--steps N] ...

Running the same command again after an interruption resumes from DIR/backup.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import models  # noqa: F401  (quiet TensorFlow logs before it loads)
# No TensorFlow: --help is fast.
from models.config import ConfigError, ModelConfig, TrainConfig

_TYPES = {"int": int, "float": float, "str": None}  # field annotation -> argparse type (None: the string)


def _add_flag(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
    """One flag from a config field: its name (or metadata["flag"]), default, type and help from the field;
    a bool field is a switch (its default is False)."""
    options = dict(field.metadata)
    names = [options.pop("flag", f"--{field.name}"), *options.pop("aliases", ())]
    if field.default is dataclasses.MISSING:
        options["required"] = True
    elif field.type == "bool":
        options["action"] = "store_true"
    else:
        options["default"] = field.default
        options["type"] = _TYPES[field.type.split(" | ")[0]]
    parser.add_argument(*names, dest=names[0][2:], **options)


def build_parser() -> argparse.ArgumentParser:
    """TrainConfig's fields as flags, in its order, with --model (ModelConfig.name) in place of the model and
    the model's other fields last; only --mixed_precision, a deprecated alias, is not a field."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model_fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    for field in dataclasses.fields(TrainConfig):
        _add_flag(p, model_fields.pop("name") if field.name == "model" else field)
        if field.name == "precision":
            p.add_argument("--mixed_precision", action="store_true",
                           help="deprecated: the same as --precision mixed_float16")
    for field in model_fields.values():
        _add_flag(p, field)
    return p


def parse_args(argv: list[str]) -> TrainConfig:
    p = build_parser()
    a = vars(p.parse_args(argv))
    if a.pop("mixed_precision"):
        if a["precision"] not in (TrainConfig.precision, "mixed_float16"):
            p.error(f"--mixed_precision (deprecated) means --precision mixed_float16, not {a['precision']}")
        print("warning: --mixed_precision is deprecated; use --precision mixed_float16", file=sys.stderr)
        a["precision"] = "mixed_float16"
    model = ModelConfig(name=a.pop("model"), **{f.name: a.pop(f.name) for f in dataclasses.fields(ModelConfig)
                                                 if f.name != "name"})
    try:  # TrainConfig validates every number (models.config.validate)
        return TrainConfig(model=model, **a)
    except ConfigError as e:
        p.error(str(e))


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

"""The configuration dataclasses of models and training, importable without TensorFlow (so that the
command-line tools can parse their flags and print --help before TensorFlow loads)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

# models.zoo.REGISTRY holds one builder per name, in this order.
MODEL_NAMES = ("average_pooling", "max_pooling", "single_attention", "multi_attention", "feature_attention",
               "multi_head_attention")
# Keras mixed-precision policies (--precision); the output layer computes in float32 under each.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


# Written by models.exporting beside saved_model.pb: which weights an export holds, and why.
EXPORT_METADATA_FILE = "export_metadata.json"


RESEARCH_DROPOUT = 0.5  # the research code's trunk (Kong et al.); our recipe uses ModelConfig's default


class ConfigError(ValueError):
    """A user error in the training configuration (one line, no traceback)."""


def _flag(default=dataclasses.MISSING, help: str = "", **argparse_options) -> dataclasses.Field:
    """A field that is also a train.py flag: its help text and argparse options live beside its default."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_options})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture. Defaults are our recipe's: 3 x [Dense 1024, BN, ReLU, Dropout 0.2], input dropout 0.2 and
    frame dropout 0.3 (both chosen on eval_a); the research code's trunk has dropout RESEARCH_DROPOUT and
    neither of the other two (experiments.quality names them for its runs)."""
    name: str = _flag("feature_attention", f"one of: {', '.join(MODEL_NAMES)}", flag="--model")
    hidden_units: int = _flag(1024, "width of the per-frame trunk")
    num_layers: int = _flag(3, "layers of the per-frame trunk")
    dropout: float = _flag(0.2, "dropout after every trunk layer")
    # Yu et al. 2018 normalise the input embeddings
    input_batchnorm: bool = _flag(False, "BatchNorm on the input embeddings")
    num_heads: int = _flag(4, "heads of multi_head_attention")
    input_dropout: float = _flag(0.2, "dropout on the input embeddings (training only)")
    frame_dropout: float = _flag(0.3, "drop each frame from pooling with this probability (training only)")

    @classmethod
    def yu2018(cls, name: str = "multi_attention") -> "ModelConfig":
        """Yu et al. 2018's trunk: input BatchNorm, 600 units, dropout 0.4 (no input or frame dropout)."""
        return cls(name=name, hidden_units=600, dropout=0.4, input_batchnorm=True, input_dropout=0.0, frame_dropout=0.0)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Defaults are our recipe (README, "Results"): the research recipe (Adam, batch 500, 3 x 1024 trunk) with
    uniform sampling instead of class-balanced batches, dropout 0.2, input dropout 0.2, frame dropout 0.3,
    learning rate 3e-3 on a cosine schedule, decoupled weight decay 0.1, mixup 0.5 and EMA 0.99.
    Every field is a train.py flag of the same name (the model's fields too), with the help in its metadata."""
    train_data: str = _flag(help="shards directory written by beam_pipelines.build_shards")
    model_dir: str = _flag(help="checkpoints, logs, history.csv and the export")
    model: ModelConfig = ModelConfig()
    eval_data: str | None = _flag(None, "glob of AudioSet TFRecords or shards directory, scored every epoch")
    strategy: str = _flag("default", "tf.distribute strategy (BUILD.md)",
                          choices=["default", "mirrored", "multi_worker"])
    cpu_replicas: int = _flag(0, "split the CPU into N logical devices")
    batch_size: int = _flag(500, "global batch size")  # as in the research code
    # uniform chosen on eval_a (README, "Results"); the research code balances its batches
    sampling: str = _flag("uniform", "training clips: uniform (each clip once per pass) or balanced (one clip "
                                     "per class in turn, the research code's)", choices=["uniform", "balanced"])
    # 27 passes over bal_train; chosen on eval_a with balanced batches (README, "Results"): 1,000, 1,600 and
    # 3,000 scored lower
    steps: int = _flag(1_200, "training steps in all")
    # Keras "epoch": checkpoint, log and (with eval_data) evaluation interval
    steps_per_epoch: int = _flag(200, "steps between checkpoints, logs and evaluations", aliases=("--eval_every",))
    learning_rate: float = _flag(3e-3, "Adam learning rate")
    lr_schedule: str = _flag("cosine", "cosine: decay from --learning_rate to 0 over --steps",
                             choices=["constant", "cosine"])
    seed: int | None = _flag(None, "seed of weights, data order and mixup (deterministic ops)")
    precision: str = _flag("float32", "Keras mixed precision: float16 (loss scaling) or bfloat16 compute, float32 "
                                      "variables and output layer; the export is float32", choices=PRECISIONS)
    jit_compile: bool = _flag(False, "compile the training step with XLA")
    steps_per_execution: int = _flag(1, "training steps per call into TensorFlow (must divide --steps and "
                                        "--steps_per_epoch)")  # fewer host round trips on a GPU
    export_dir: str | None = _flag(None, "where the SavedModel goes, if not MODEL_DIR/saved_model")
    class_labels: str | None = _flag(None, "class_labels_indices.csv to export with the model")
    # research snapshot averaging
    snapshots: int = _flag(0, "also export the last N epoch checkpoints to DIR/snapshots/ for snapshot averaging")
    ema: float = _flag(0.99, "export an exponential moving average of the weights with this decay (0: off)")
    mixup: float = _flag(0.5, "mixup on the embeddings with mixing weights ~ Beta(a, a) (0: off)")
    # per step, times the learning rate
    weight_decay: float = _flag(0.1, "decoupled weight decay of Adam (AdamW; 0: off)")
    # targets y * (1 - s) + s / 2
    label_smoothing: float = _flag(0.0, "binary cross-entropy label smoothing")

    # Fields that may change between a run and its resumption.
    RESUMABLE_CHANGES = ("steps", "export_dir", "eval_data", "snapshots")

    def __post_init__(self):
        problems = validate(self)
        if problems:
            raise ConfigError(problems[0])

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def validate(config: TrainConfig) -> list[str]:
    """What is wrong with the numbers of a configuration, as flag-named messages (empty: nothing)."""
    m = config.model
    checks = [
        (math.isfinite(config.learning_rate) and config.learning_rate > 0, "--learning_rate must be a finite number > 0"),
        (math.isfinite(m.dropout) and 0 <= m.dropout < 1, "--dropout must be in [0, 1)"),
        (math.isfinite(m.input_dropout) and 0 <= m.input_dropout < 1, "--input_dropout must be in [0, 1)"),
        (math.isfinite(m.frame_dropout) and 0 <= m.frame_dropout < 1, "--frame_dropout must be in [0, 1)"),
        (math.isfinite(config.weight_decay) and config.weight_decay >= 0, "--weight_decay must be >= 0"),
        (math.isfinite(config.label_smoothing) and 0 <= config.label_smoothing < 1,
         "--label_smoothing must be in [0, 1)"),
        (m.num_heads >= 1, "--num_heads must be at least 1"),
        (m.hidden_units >= 1 and m.num_layers >= 1, "--hidden_units and --num_layers must be positive"),
        (math.isfinite(config.mixup) and config.mixup >= 0, "--mixup must be a finite number >= 0 (0: off)"),
        (math.isfinite(config.ema) and 0 <= config.ema < 1, "--ema must be in [0, 1)"),
        (config.batch_size >= 1 and config.steps >= 1 and config.steps_per_epoch >= 1,
         "--batch_size, --steps and --steps_per_epoch must be positive"),
        (config.snapshots >= 0 and config.cpu_replicas >= 0, "--snapshots and --cpu_replicas must not be negative"),
        (config.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}"),
        (config.steps_per_execution >= 1 and config.steps_per_epoch % config.steps_per_execution == 0
         and config.steps % config.steps_per_execution == 0,
         "--steps_per_execution must be positive and divide --steps and --steps_per_epoch"),
    ]
    return [message for ok, message in checks if not ok]


def upgrade(saved: dict) -> dict:
    """A config.json written before a field existed, in today's fields (the field's value before it existed)."""
    if "mixed_precision" in saved:
        saved = dict(saved, precision="mixed_float16" if saved.pop("mixed_precision") else "float32")
    saved = {"steps_per_execution": 1, "weight_decay": 0.0, "label_smoothing": 0.0, "sampling": "balanced"} | saved
    if isinstance(saved.get("model"), dict):
        saved["model"] = {"input_dropout": 0.0, "frame_dropout": 0.0} | saved["model"]
    return saved


TRAIN_DESCRIPTION = "Trains an AudioSet classifier on balanced shards and exports a SavedModel."
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
    p = argparse.ArgumentParser(description=TRAIN_DESCRIPTION, allow_abbrev=False,
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
    """train.py's command line -> the TrainConfig it trains (argparse exits with a usage error on bad flags)."""
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

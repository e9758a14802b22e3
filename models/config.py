"""The configuration dataclasses of models and training, importable without TensorFlow (so that the
command-line tools can parse their flags and print --help before TensorFlow loads)."""

from __future__ import annotations

import dataclasses
import math

# models.zoo.REGISTRY holds one builder per name, in this order.
MODEL_NAMES = ("average_pooling", "max_pooling", "single_attention", "multi_attention", "feature_attention",
               "multi_head_attention")
# Keras mixed-precision policies (--precision); the output layer computes in float32 under each.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


# Written by models.exporting beside saved_model.pb: which weights an export holds, and why.
EXPORT_METADATA_FILE = "export_metadata.json"


class ConfigError(ValueError):
    """A user error in the training configuration (one line, no traceback)."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture. Defaults are the research code's trunk: 3 x [Dense 1024, BN, ReLU, Dropout 0.5]."""
    name: str = "feature_attention"
    hidden_units: int = 1024
    num_layers: int = 3
    dropout: float = 0.5
    input_batchnorm: bool = False  # Yu et al. 2018 normalise the input embeddings
    num_heads: int = 4  # multi_head_attention only
    input_dropout: float = 0.0  # dropout on the dequantized input embeddings (training only)
    frame_dropout: float = 0.0  # drop each real frame from pooling with this probability (training only)

    @classmethod
    def yu2018(cls, name: str = "multi_attention") -> "ModelConfig":
        """Yu et al. 2018's trunk: input BatchNorm, 600 units, dropout 0.4."""
        return cls(name=name, hidden_units=600, dropout=0.4, input_batchnorm=True)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Defaults are our recipe (README, "Results"): the research recipe (Adam, batch 500, balanced batches,
    3 x 1024 trunk) with dropout 0.2, learning rate 3e-3 on a cosine schedule, mixup 0.5 and EMA 0.99."""
    train_data: str
    model_dir: str
    model: ModelConfig = ModelConfig(dropout=0.2)
    eval_data: str | None = None
    strategy: str = "default"  # default | mirrored | multi_worker
    cpu_replicas: int = 0
    batch_size: int = 500  # global batch, as in the research code
    steps: int = 1_000  # 25 passes over bal_train; chosen on eval_a (README, "Results"): 3,000 score lower
    steps_per_epoch: int = 200  # Keras "epoch": checkpoint, log and (with eval_data) evaluation interval
    learning_rate: float = 3e-3
    lr_schedule: str = "cosine"  # constant | cosine (from learning_rate to 0 over `steps`)
    seed: int | None = None
    precision: str = "float32"  # float32 | mixed_float16 (with dynamic loss scaling) | mixed_bfloat16
    jit_compile: bool = False  # XLA-compile the training step
    steps_per_execution: int = 1  # training steps per tf.function call (fewer host round trips on a GPU)
    export_dir: str | None = None
    class_labels: str | None = None
    snapshots: int = 0  # also export the last N epoch checkpoints to DIR/snapshots/ (research snapshot averaging)
    ema: float = 0.99  # > 0: export an exponential moving average of the weights with this decay
    mixup: float = 0.5  # > 0: mixup on the dequantized embeddings, mixing weights ~ Beta(mixup, mixup)
    weight_decay: float = 0.0  # > 0: AdamW's decoupled weight decay (per step, times the learning rate)
    label_smoothing: float = 0.0  # binary cross-entropy targets y * (1 - s) + s / 2

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

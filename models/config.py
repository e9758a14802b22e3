"""The configuration dataclasses of models and training, importable without TensorFlow (so that the
command-line tools can parse their flags and print --help before TensorFlow loads)."""

from __future__ import annotations

import dataclasses

# models.zoo.REGISTRY holds one builder per name, in this order.
MODEL_NAMES = ("average_pooling", "max_pooling", "single_attention", "multi_attention", "feature_attention",
               "multi_head_attention")


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
    steps: int = 10_000
    steps_per_epoch: int = 500  # Keras "epoch": checkpoint, log and (with eval_data) evaluation interval
    learning_rate: float = 3e-3
    lr_schedule: str = "cosine"  # constant | cosine (from learning_rate to 0 over `steps`)
    seed: int | None = None
    jit_compile: bool = False
    mixed_precision: bool = False
    export_dir: str | None = None
    class_labels: str | None = None
    snapshots: int = 0  # also export the last N epoch checkpoints to DIR/snapshots/ (research snapshot averaging)
    ema: float = 0.99  # > 0: export an exponential moving average of the weights with this decay
    mixup: float = 0.5  # > 0: mixup on the dequantized embeddings, mixing weights ~ Beta(mixup, mixup)

    # Fields that may change between a run and its resumption.
    RESUMABLE_CHANGES = ("steps", "export_dir", "eval_data", "snapshots")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

"""Training: config -> strategy -> data -> model -> Keras fit -> SavedModel export (every worker exports; the chief's is kept)."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

from models import exporting, metrics, zoo
from models.config import ConfigError, TrainConfig, upgrade, validate  # noqa: F401  (trainer.TrainConfig)
from tfdata import datasets


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite: the run stops, nothing is exported."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite (Keras' TerminateOnNaN only
    stops, and the export would follow); train() then raises TrainingDivergedError."""

    def __init__(self):
        super().__init__()
        self.bad_step = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_step = int(self.model.optimizer.iterations.numpy())
            self.model.stop_training = True


def check_resume(config: TrainConfig) -> None:
    """Writes DIR/config.json, or refuses to resume a model dir written with another configuration."""
    path = os.path.join(config.model_dir, "config.json")
    current = {k: v for k, v in config.to_json().items() if k not in TrainConfig.RESUMABLE_CHANGES}
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            saved = upgrade(json.load(f))
        saved = {k: v for k, v in saved.items() if k not in TrainConfig.RESUMABLE_CHANGES}
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if changed:
            raise ConfigError(f"{config.model_dir} was trained with another configuration (differs in "
                              f"{', '.join(changed)}); use a new --model_dir or the same options")


def make_strategy(config: TrainConfig) -> tf.distribute.Strategy:
    if config.cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * config.cpu_replicas)
    if config.strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if config.strategy == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("--strategy multi_worker needs TF_CONFIG (see BUILD.md)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs)


def class_labels_path(config: TrainConfig) -> str:
    """--class_labels, else class_labels_indices.csv beside the data the shards were built from."""
    if config.class_labels:
        candidates = [config.class_labels]
    else:
        manifest = datasets.read_manifest(config.train_data)
        source = manifest.get("args", {}).get("input", "").split(",")[0]
        candidates = [os.path.join(os.path.dirname(source), exporting.CLASS_LABELS_ASSET),
                      os.path.join(os.path.dirname(os.path.dirname(source)), exporting.CLASS_LABELS_ASSET),
                      os.path.join(config.train_data, exporting.CLASS_LABELS_ASSET)]
    for path in candidates:
        if path and tf.io.gfile.exists(path):
            return path
    raise ConfigError(f"no {exporting.CLASS_LABELS_ASSET} found (looked at {', '.join(candidates)}); pass --class_labels")


class EvalMetrics(keras.callbacks.Callback):
    """Validation mAP, AUC and d-prime on the whole evaluation set at the end of every epoch; with EMA also
    `val_mAP_ema`, the mAP of the averaged weights (what the export holds)."""

    def __init__(self, eval_data: str, batch_size: int):
        super().__init__()
        self._eval_data, self._batch_size = eval_data, batch_size
        self.last_mAP: dict[str, float] = {}  # the last epoch's validation mAP: {"raw": ..., "ema": ...}
        self.raw_weights: list[np.ndarray] | None = None  # the last epoch's raw trainable weights (with EMA)

    def _evaluate(self) -> metrics.Metrics:
        scores, labels = [], []
        for features, y in datasets.eval_dataset(self._eval_data, self._batch_size):
            inputs = {"embedding": features["embedding"], "num_frames": features["num_frames"]}
            scores.append(self.model(inputs, training=False).numpy())
            labels.append(y.numpy())
        return metrics.compute(np.concatenate(labels), np.concatenate(scores))

    def on_epoch_end(self, epoch, logs=None):
        result = self._evaluate()
        logs.update({"val_mAP": result.mAP, "val_AUC": result.AUC, "val_d_prime": result.d_prime})
        self.last_mAP = {"raw": result.mAP}
        optimizer = self.model.optimizer
        if getattr(optimizer, "use_ema", False):
            variables = self.model.trainable_variables
            self.raw_weights = [v.numpy() for v in variables]
            optimizer.finalize_variable_values(variables)  # the moving averages into the model
            logs["val_mAP_ema"] = self.last_mAP["ema"] = self._evaluate().mAP
            for v, value in zip(variables, self.raw_weights):
                v.assign(value)


class LearningRateLogger(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logs["learning_rate"] = float(keras.backend.get_value(self.model.optimizer.learning_rate))


PROGRESS_SECONDS = 30  # a progress line at least this often when stdout is not a terminal


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{s:02d}s"


def _value(v) -> str:
    """A metric as Keras' progress bar prints it."""
    return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.4e}"


class Progress(keras.callbacks.Callback):
    """Progress for logs (Keras' progress bar is for terminals): steps done, steps/s, clips/s, loss and ETA at
    least every `seconds` within an epoch, and a line of metrics per epoch. Steps are global (a resumed run
    counts on)."""

    def __init__(self, steps: int, batch_size: int, seconds: float = PROGRESS_SECONDS, out=None):
        super().__init__()
        self._steps, self._batch_size, self._seconds, self._out = steps, batch_size, seconds, out

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self._start = self._last = self._epoch_start = time.monotonic()
        self._first = self._last_step = self._step()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self._last < self._seconds:
            return
        step = self._step()
        rate = (step - self._last_step) / max(now - self._last, 1e-9)
        overall = (step - self._first) / max(now - self._start, 1e-9)
        eta = (self._steps - step) / overall if overall > 0 else math.inf
        loss = f"  loss {_value(logs['loss'])}" if logs and "loss" in logs else ""
        print(f"step {step}/{self._steps}  {rate:.2f} steps/s  {rate * self._batch_size:.0f} clips/s{loss}  "
              f"ETA {_duration(eta)}", file=self._out or sys.stdout, flush=True)
        self._last, self._last_step = now, step

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        metrics_text = "".join(f" - {k}: {_value(v)}" for k, v in (logs or {}).items() if np.isscalar(v))
        print(f"epoch {epoch + 1}/{self.params['epochs']}  step {self._step()}/{self._steps}  "
              f"{now - self._epoch_start:.0f}s{metrics_text}", file=self._out or sys.stdout, flush=True)
        self._last, self._last_step = now, self._step()


class GlobalStepTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback with the epoch scalars at the global step (not the epoch index), so that
    runs with other --steps_per_epoch share an x axis, and with steps per second."""

    def __init__(self, log_dir: str):
        super().__init__(log_dir, update_freq="epoch", write_steps_per_second=True)

    def _log_epoch_metrics(self, epoch, logs):
        super()._log_epoch_metrics(int(self.model.optimizer.iterations.numpy()), logs)


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam at --learning_rate (constant, or cosine-decayed to 0 over --steps), with decoupled weight decay
    (each step w -= learning_rate * weight_decay * w) and an EMA of the weights when --ema > 0."""
    learning_rate = config.learning_rate
    if config.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, config.steps)
    return keras.optimizers.Adam(learning_rate, weight_decay=config.weight_decay or None,
                                 use_ema=config.ema > 0, ema_momentum=config.ema or 0.99)


def train(config: TrainConfig) -> str | None:
    """Trains to config.steps (resuming from DIR/backup if a run was interrupted); returns the export dir
    (None on a non-chief worker)."""
    if config.steps % config.steps_per_epoch and config.steps > config.steps_per_epoch:
        raise ConfigError(f"--steps {config.steps} must be a multiple of --steps_per_epoch {config.steps_per_epoch}")
    steps_per_epoch = min(config.steps, config.steps_per_epoch)
    strategy = make_strategy(config)
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(f"--batch_size {config.batch_size} is not divisible by the "
                          f"{strategy.num_replicas_in_sync} replicas")
    datasets.read_manifest(config.train_data)  # fails fast with a clear message
    labels_csv = class_labels_path(config)
    try:  # before the first step, not at export time
        exporting.check_class_labels(labels_csv)
    except ValueError as e:
        raise ConfigError(f"--class_labels: {e}; fix or replace the file") from None
    chief = is_chief(strategy)
    check_resume(config)
    tf.io.gfile.makedirs(config.model_dir)
    if chief:  # atomically: another worker may be reading it in check_resume
        path = os.path.join(config.model_dir, "config.json")
        with tf.io.gfile.GFile(path + ".tmp", "w") as f:
            json.dump(config.to_json(), f, indent=1)
        tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
        tf.config.experimental.enable_op_determinism()
    # Variables stay float32; layers compute in float16/bfloat16 except the float32 output layer. Under
    # mixed_float16, compile wraps the optimizer in a LossScaleOptimizer (dynamic loss scaling).
    keras.mixed_precision.set_global_policy(config.precision)

    with strategy.scope():
        model = zoo.build(config.model)
        model.compile(optimizer=make_optimizer(config), loss=keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing),
                      jit_compile=config.jit_compile,
                      steps_per_execution=config.steps_per_execution)
    data = datasets.distributed_train_dataset(strategy, config.train_data, config.batch_size, config.seed,
                                              sampling=config.sampling, mixup=config.mixup)
    # Under MultiWorkerMirroredStrategy these callbacks write to temporary directories on non-chief workers.
    # BackupAndRestore empties DIR/backup when fit ends: a non-empty one means fit resumes, else starts at epoch 1.
    backup = os.path.join(config.model_dir, "backup")  # listed, not globbed: the path is literal
    resuming = tf.io.gfile.isdir(backup) and bool(tf.io.gfile.listdir(backup))
    diverged = StopOnNonFiniteLoss()
    callbacks = [
        diverged,
        keras.callbacks.BackupAndRestore(os.path.join(config.model_dir, "backup")),
        keras.callbacks.ModelCheckpoint(os.path.join(config.model_dir, "checkpoints", "weights-{epoch:04d}.h5"),
                                        save_weights_only=True),
        LearningRateLogger(),
    ]
    validation = EvalMetrics(config.eval_data, config.batch_size) if config.eval_data else None
    if validation:
        callbacks.append(validation)
    callbacks.append(GlobalStepTensorBoard(os.path.join(config.model_dir, "logs")))
    history = os.path.join(config.model_dir, "history.csv") if chief else os.path.join(tempfile.mkdtemp(), "h.csv")
    callbacks.append(keras.callbacks.CSVLogger(history, append=resuming))  # per epoch; a resumed run appends
    terminal = sys.stdout.isatty()  # a terminal gets Keras' progress bar, a log our lines
    if not terminal:
        callbacks.append(Progress(config.steps, config.batch_size))
    model.fit(data, epochs=max(config.steps // steps_per_epoch, 1), steps_per_epoch=steps_per_epoch,
              callbacks=callbacks, verbose=1 if terminal else 0)
    if diverged.bad_step is not None:
        raise TrainingDivergedError(
            f"the training loss became NaN or infinite at step {diverged.bad_step}; nothing was exported. Lower "
            f"--learning_rate (now {config.learning_rate}) and start again with a new --model_dir")
    metadata = choose_weights(model, config, validation)  # fit leaves the EMA weights in the model
    print(f"exporting the {metadata['weights']} weights: {metadata['why']}", flush=True)

    export_dir = config.export_dir or os.path.join(config.model_dir, "saved_model")
    # Outside any strategy (distributed variables cannot be saved in signatures) and in float32. Every
    # worker exports, non-chief ones to a directory they delete, so that all finish together.
    keras.mixed_precision.set_global_policy("float32")
    serving = zoo.build(config.model)
    serving.set_weights(model.get_weights())
    target = export_dir if chief else tempfile.mkdtemp(prefix="export-")
    exporting.export(serving, target, labels_csv, metadata)
    if not chief:
        shutil.rmtree(target, ignore_errors=True)
    elif config.snapshots:
        export_snapshots(config, labels_csv)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):  # barrier: no worker leaves early
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)
    return export_dir if chief else None


def choose_weights(model: keras.Model, config: TrainConfig, validation: EvalMetrics | None) -> dict:
    """Leaves in `model` the weights to export, raw or EMA, whichever validated better at the last epoch
    (EMA when there is no validation data); returns the export metadata that says which and why."""
    metadata = {"weights": "raw", "ema_decay": config.ema, "steps": config.steps, "eval_data": config.eval_data,
                "validation_mAP": dict(validation.last_mAP) if validation else None}
    if config.ema <= 0:
        return metadata | {"why": "no weight averaging (--ema 0)"}
    if validation is None or validation.raw_weights is None:
        return metadata | {"weights": "ema", "why": "--ema is on and there is no validation data to compare"}
    raw, ema = validation.last_mAP["raw"], validation.last_mAP["ema"]
    if ema >= raw:
        return metadata | {"weights": "ema", "why": f"validation mAP {ema:.4f} (EMA) >= {raw:.4f} (raw)"}
    for variable, value in zip(model.trainable_variables, validation.raw_weights):
        variable.assign(value)
    return metadata | {"why": f"validation mAP {raw:.4f} (raw) > {ema:.4f} (EMA)"}


def export_snapshots(config: TrainConfig, labels_csv: str) -> list[str]:
    """Exports the last config.snapshots epoch checkpoints to DIR/snapshots/weights-EEEE (raw weights, no EMA)."""
    directory = os.path.join(config.model_dir, "checkpoints")  # listed, not globbed: the path is literal
    checkpoints = sorted(os.path.join(directory, name) for name in tf.io.gfile.listdir(directory)
                         if name.startswith("weights-") and name.endswith(".h5"))
    exported = []
    for path in checkpoints[-config.snapshots:]:
        model = zoo.build(config.model)
        model.load_weights(path)
        name = os.path.splitext(os.path.basename(path))[0]
        exported.append(exporting.export(model, os.path.join(config.model_dir, "snapshots", name), labels_csv))
    return exported

"""The model registry: research pooling and attention models over uint8 AudioSet embeddings, and ours.

Every model takes {"embedding": uint8 [B, T, 128], "num_frames": int32 [B]}, dequantizes first
(tfdata.schema.dequantize, inside the model, so serving takes raw bytes), runs a per-frame trunk,
pools over the real frames only and returns 527 independent sigmoid scores [B, 527].
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from models.config import MODEL_NAMES, ModelConfig  # noqa: F401  (zoo.ModelConfig)
from tfdata import schema


# --- Layers -----------------------------------------------------------------------------------

class Dequantize(keras.layers.Layer):
    """uint8 embeddings -> float32 VGGish units (tfdata.schema.dequantize)."""

    def call(self, embedding):
        return schema.dequantize(embedding)


class FrameMask(keras.layers.Layer):
    """num_frames [B] and frames [B, T, D] -> float mask [B, T, 1], 1 on real frames."""

    def call(self, num_frames, frames):
        mask = tf.sequence_mask(num_frames, tf.shape(frames)[1], dtype=frames.dtype)  # [B, T]
        return mask[:, :, None]  # [B, T, 1]


class FrameDropout(keras.layers.Layer):
    """Training only: drops each real frame of the mask [B, T, 1] with probability `rate`, keeping a clip's
    mask whole where every frame would go (a weak label holds for any subset of a clip's seconds)."""

    def __init__(self, rate: float, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate

    def call(self, mask, training=None):
        if not training or self.rate <= 0:
            return mask
        keep = tf.cast(tf.random.uniform(tf.shape(mask)) >= self.rate, mask.dtype) * mask  # [B, T, 1]
        empty = tf.reduce_sum(keep, axis=[1, 2], keepdims=True) == 0  # [B, 1, 1]
        return tf.where(empty, mask, keep)

    def get_config(self):
        return super().get_config() | {"rate": self.rate}


class MaskedAveragePooling(keras.layers.Layer):
    """Mean over real frames: [B, T, C], mask [B, T, 1] -> [B, C]."""

    def call(self, x, mask):
        mask = tf.cast(mask, x.dtype)
        return tf.reduce_sum(x * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


class MaskedMaxPooling(keras.layers.Layer):
    """Max over real frames: [B, T, C], mask [B, T, 1] -> [B, C]."""

    def call(self, x, mask):
        return tf.reduce_max(tf.where(mask > 0, x, tf.cast(-1e9, x.dtype)), axis=1)


class DecisionAttention(keras.layers.Layer):
    """Decision-level attention (Kong et al. 2018): per frame and class, cla = sigmoid(W_c h + b_c)
    and att = clip(sigmoid(W_a h + b_a), 1e-7, 1 - 1e-7), zero on padding; score = sum_t att*cla / sum_t att.

    [B, T, D], mask [B, T, 1] -> [B, units] probabilities.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        # Sublayers compute in this layer's dtype (a float32 output layer stays float32 under mixed_float16).
        self.classification = keras.layers.Dense(units, activation="sigmoid", dtype=self.dtype_policy)
        self.attention = keras.layers.Dense(units, activation="sigmoid", dtype=self.dtype_policy)

    def call(self, h, mask):
        mask = tf.cast(mask, h.dtype)
        cla = self.classification(h)  # [B, T, units]
        att = tf.clip_by_value(self.attention(h), 1e-7, 1.0 - 1e-7) * mask  # [B, T, units], 0 on padding
        return tf.reduce_sum(att * cla, axis=1) / tf.reduce_sum(att, axis=1)  # [B, units]

    def get_config(self):
        return super().get_config() | {"units": self.units}


class FeatureAttention(keras.layers.Layer):
    """Feature-level attention (Kong et al. 2019): sigmoid attention over time on linear values.

    [B, T, D], mask [B, T, 1] -> [B, units].
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.values = keras.layers.Dense(units, dtype=self.dtype_policy)
        self.attention = keras.layers.Dense(units, activation="sigmoid", dtype=self.dtype_policy)

    def call(self, h, mask):
        mask = tf.cast(mask, h.dtype)
        att = tf.clip_by_value(self.attention(h), 1e-7, 1.0 - 1e-7) * mask  # [B, T, units]
        return tf.reduce_sum(att * self.values(h), axis=1) / tf.reduce_sum(att, axis=1)  # [B, units]

    def get_config(self):
        return super().get_config() | {"units": self.units}


class MultiHeadFeatureAttention(keras.layers.Layer):
    """Ours: H feature-attention heads, each with a softmax over the real frames (so each head can
    pick its own frames, sharp or broad), values shared; heads concatenated.

    [B, T, D], mask [B, T, 1] -> [B, D].
    """

    def __init__(self, units: int, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        if units % num_heads:
            raise ValueError(f"hidden_units {units} is not divisible by num_heads {num_heads}")
        self.units, self.num_heads = units, num_heads
        self.values = keras.layers.Dense(units, dtype=self.dtype_policy)
        self.scores = keras.layers.Dense(units, dtype=self.dtype_policy)

    def call(self, h, mask):
        logits = self.scores(h)  # [B, T, units]: one attention logit per head and channel
        logits = tf.where(mask > 0, logits, tf.cast(-1e9, logits.dtype))
        weights = tf.nn.softmax(logits, axis=1)  # [B, T, units], sums to 1 over real frames
        return tf.reduce_sum(weights * self.values(h), axis=1)  # [B, units]

    def get_config(self):
        return super().get_config() | {"units": self.units, "num_heads": self.num_heads}


CUSTOM_OBJECTS = {cls.__name__: cls for cls in (
    Dequantize, FrameMask, FrameDropout, MaskedAveragePooling, MaskedMaxPooling, DecisionAttention, FeatureAttention,
    MultiHeadFeatureAttention)}


# --- Models -----------------------------------------------------------------------------------

def _trunk(x, config: ModelConfig) -> list:
    """Per-frame hidden layers [B, T, 128] -> list of each layer's output [B, T, units]."""
    if config.input_batchnorm:
        x = keras.layers.BatchNormalization(name="input_bn")(x)
    if config.input_dropout:
        x = keras.layers.Dropout(config.input_dropout, name="input_dropout")(x)
    outputs = []
    for i in range(config.num_layers):
        x = keras.layers.Dense(config.hidden_units, name=f"hidden{i + 1}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Dropout(config.dropout)(x)
        outputs.append(x)
    return outputs


def _head(x, config: ModelConfig):
    """Pooled features [B, D] -> BN, ReLU, dropout, dense sigmoid [B, 527] (Kong et al. 2019)."""
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Dropout(config.dropout)(x)
    return keras.layers.Dense(schema.NUM_CLASSES, activation="sigmoid", dtype="float32", name="scores")(x)


def average_pooling(hidden: list, mask, config: ModelConfig):
    """Average pooling of per-frame sigmoid scores (Kong et al. 2018, 'average pooling' baseline)."""
    frame_scores = keras.layers.Dense(schema.NUM_CLASSES, activation="sigmoid", name="frame_scores")(hidden[-1])
    return MaskedAveragePooling(dtype="float32", name="scores")(frame_scores, mask)


def max_pooling(hidden: list, mask, config: ModelConfig):
    """Max pooling of per-frame sigmoid scores (Kong et al. 2018, 'max pooling' baseline)."""
    frame_scores = keras.layers.Dense(schema.NUM_CLASSES, activation="sigmoid", name="frame_scores")(hidden[-1])
    return MaskedMaxPooling(dtype="float32", name="scores")(frame_scores, mask)


def single_attention(hidden: list, mask, config: ModelConfig):
    """Decision-level single attention (Kong et al. 2018, 'Audio Set classification with attention model')."""
    return DecisionAttention(schema.NUM_CLASSES, dtype="float32", name="scores")(hidden[-1], mask)


def multi_attention(hidden: list, mask, config: ModelConfig):
    """Multi-level attention (Yu et al. 2018): attention on hidden layers 2 and 3, concatenated, dense sigmoid."""
    pooled = [DecisionAttention(schema.NUM_CLASSES, name=f"attention{i}")(hidden[i - 1], mask)
              for i in (config.num_layers - 1, config.num_layers)]
    x = keras.layers.Concatenate()(pooled)  # [B, 2 * 527]
    return keras.layers.Dense(schema.NUM_CLASSES, activation="sigmoid", dtype="float32", name="scores")(x)


def feature_attention(hidden: list, mask, config: ModelConfig):
    """Feature-level attention (Kong et al. 2019, 'Weakly labelled AudioSet tagging with attention neural networks')."""
    return _head(FeatureAttention(config.hidden_units)(hidden[-1], mask), config)


def multi_head_attention(hidden: list, mask, config: ModelConfig):
    """Ours: multi-head softmax feature attention (see MultiHeadFeatureAttention), then the 2019 head."""
    return _head(MultiHeadFeatureAttention(config.hidden_units, config.num_heads)(hidden[-1], mask), config)


REGISTRY = {f.__name__: f for f in (average_pooling, max_pooling, single_attention, multi_attention,
                                    feature_attention, multi_head_attention)}
assert tuple(REGISTRY) == MODEL_NAMES, "models.config.MODEL_NAMES lists the registry's names"


class UnknownModelError(ValueError):
    pass


def build(config: ModelConfig) -> keras.Model:
    if config.name not in REGISTRY:
        raise UnknownModelError(f"unknown model {config.name!r}; known models: {', '.join(REGISTRY)}")
    if config.name == "multi_attention" and config.num_layers < 2:
        raise ValueError("multi_attention needs at least 2 hidden layers")
    embedding = keras.Input([None, schema.EMBEDDING_DIM], dtype=tf.uint8, name="embedding")
    num_frames = keras.Input([], dtype=tf.int32, name="num_frames")
    x = Dequantize()(embedding)  # [B, T, 128] float32
    mask = FrameMask()(num_frames, x)  # [B, T, 1]
    if config.frame_dropout:
        mask = FrameDropout(config.frame_dropout)(mask)
    scores = REGISTRY[config.name](_trunk(x, config), mask, config)
    return keras.Model({"embedding": embedding, "num_frames": num_frames}, scores, name=config.name)

"""VGGish, Google's AudioSet embedding network, loadable from its TF1 checkpoint, and its postprocessing.

Reproduces ``tensorflow/models`` ``research/audioset/vggish`` (Apache 2.0): ``vggish_slim.py``
(the network) and ``vggish_postprocess.py`` (PCA, clip, uint8), so that a waveform becomes the
same uint8 codes as the released AudioSet embeddings, inside one TensorFlow graph:

    waveform [B, N] --tfdata.audio.log_mel_examples--> [B, T, 96, 64] --VGGish--> [B, T, 128]
    --Postprocess--> uint8 [B, T, 128]

- :class:`VGGish`: conv 3x3 SAME + ReLU (64) -> max-pool 2x2 -> conv 128 -> pool -> conv 256 x 2
  -> pool -> conv 512 x 2 -> pool -> flatten (NHWC) -> fc 4096 + ReLU x 2 -> fc 128, *no*
  activation (ports that add a ReLU there are wrong). Weights come from ``vggish_model.ckpt`` by the
  reference's variable names (:func:`checkpoint_variables`).
- :class:`Postprocess`: ``E (x - mean)`` with ``vggish_pca_params.npz``, then
  ``tfdata.schema``'s quantizer (clip to [-2, 2], scale by 255/4, truncate to uint8).
- :class:`Embedder`: both, behind the front end, in chunks of examples so that memory stays flat
  for long recordings. The Beam job ``embed_audio`` and the ``serve_waveform`` signature both call it.

Google publishes the two files on the VGGish page (research/audioset/vggish/README.md):
https://storage.googleapis.com/audioset/vggish_model.ckpt (about 277 MB) and
https://storage.googleapis.com/audioset/vggish_pca_params.npz (73 KB).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfdata import audio, schema

PCA_EIGEN_VECTORS = "pca_eigen_vectors"
PCA_MEANS = "pca_means"


@dataclasses.dataclass(frozen=True)
class VGGishParams:
    """The released network's shape (``vggish_slim.py``, ``vggish_params.py``)."""
    num_frames: int = 96
    num_bands: int = 64
    conv_blocks: tuple[tuple[int, ...], ...] = ((64,), (128,), (256, 256), (512, 512))  # one pool after each
    fc_units: tuple[int, ...] = (4096, 4096)
    embedding_size: int = schema.EMBEDDING_DIM  # 128
    chunk_examples: int = 64  # examples per network call inside Embedder (peak ~1.5 MB of activations each)

    @property
    def flat_size(self) -> int:
        """Features after the last pool: 6 x 4 x 512 = 12288."""
        pools = len(self.conv_blocks)
        return -(-self.num_frames // 2 ** pools) * -(-self.num_bands // 2 ** pools) * self.conv_blocks[-1][-1]


PARAMS = VGGishParams()


def checkpoint_variables(params: VGGishParams = PARAMS) -> dict[str, tuple[int, ...]]:
    """The reference's variable names -> shapes, in network order (slim's scopes and repeat naming)."""
    shapes, channels = {}, 1
    for i, block in enumerate(params.conv_blocks, start=1):
        for j, width in enumerate(block, start=1):
            scope = f"vggish/conv{i}" if len(block) == 1 else f"vggish/conv{i}/conv{i}_{j}"
            shapes[f"{scope}/weights"], shapes[f"{scope}/biases"] = (3, 3, channels, width), (width,)
            channels = width
    inputs = params.flat_size
    for j, units in enumerate(params.fc_units, start=1):
        scope = f"vggish/fc1/fc1_{j}" if len(params.fc_units) > 1 else "vggish/fc1"
        shapes[f"{scope}/weights"], shapes[f"{scope}/biases"] = (inputs, units), (units,)
        inputs = units
    shapes["vggish/fc2/weights"], shapes["vggish/fc2/biases"] = (inputs, params.embedding_size), (params.embedding_size,)
    return shapes


class CheckpointError(ValueError):
    """A VGGish checkpoint or PCA file that does not have the reference's variables."""


def _open_checkpoint(path: str, params: VGGishParams):
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable TensorFlow checkpoint ({_first_line(e)})") from e
    available = reader.get_variable_to_shape_map()
    for name, shape in checkpoint_variables(params).items():
        if name not in available:
            raise CheckpointError(f"{path}: variable {name} is missing (expected shape {list(shape)})")
        if tuple(available[name]) != shape:
            raise CheckpointError(f"{path}: variable {name} has shape {available[name]}, expected {list(shape)}")
    return reader


def read_checkpoint_shapes(path: str, params: VGGishParams = PARAMS) -> None:
    """Checks names and shapes only (no values read): fails fast before a job starts."""
    _open_checkpoint(path, params)


def read_checkpoint(path: str, params: VGGishParams = PARAMS) -> dict[str, np.ndarray]:
    """Reads the VGGish variables of a TF1 (or TF2 name-based) checkpoint; names a missing or
    mis-shaped variable. Other variables in the file are ignored."""
    reader = _open_checkpoint(path, params)
    return {name: reader.get_tensor(name).astype(np.float32) for name in checkpoint_variables(params)}


def _first_line(error: Exception) -> str:
    return (str(error).strip() or type(error).__name__).splitlines()[0]


def read_pca_params(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``vggish_pca_params.npz`` -> (eigen vectors [128, 128], means [128]), checked."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            npz = np.load(io.BytesIO(f.read()))
    except (ValueError, OSError, tf.errors.OpError) as e:
        raise CheckpointError(f"{path}: not a readable .npz file ({_first_line(e)})") from e
    dim = schema.EMBEDDING_DIM
    for key, shape in ((PCA_EIGEN_VECTORS, (dim, dim)), (PCA_MEANS, (dim,))):
        if key not in npz.files:
            raise CheckpointError(f"{path}: array {key} is missing (expected shape {list(shape)})")
        found = npz[key].shape if key == PCA_EIGEN_VECTORS else (npz[key].size,)  # means: [128] or [128, 1]
        if found != shape:
            raise CheckpointError(f"{path}: array {key} has shape {list(npz[key].shape)}, expected {list(shape)}")
    return npz[PCA_EIGEN_VECTORS].astype(np.float64), npz[PCA_MEANS].reshape(-1).astype(np.float64)


@keras.utils.register_keras_serializable(package="vggish")
class VGGish(keras.layers.Layer):
    """Log-mel examples [B, 96, 64] -> raw 128-d embeddings [B, 128] (pre-PCA, linear last layer)."""

    def __init__(self, params: VGGishParams = PARAMS, **kwargs):
        super().__init__(**kwargs)
        self.params = params
        self.convs, self.fcs = [], []
        for name, shape in checkpoint_variables(params).items():
            if name.endswith("/weights"):
                scope = name[:-len("/weights")]
                target = self.convs if len(shape) == 4 else self.fcs
                activation = None if scope == "vggish/fc2" else "relu"
                layer_name = scope[len("vggish/"):].replace("/", "_")  # conv3_conv3_1, fc1_fc1_2, fc2
                layer = (keras.layers.Conv2D(shape[-1], 3, padding="same", activation=activation, name=layer_name)
                         if len(shape) == 4 else keras.layers.Dense(shape[-1], activation=activation, name=layer_name))
                target.append((scope, layer))
        self.pool = keras.layers.MaxPooling2D(2, 2, padding="same")
        self.flatten = keras.layers.Flatten()  # NHWC order, as slim.flatten
        self._pool_after = {f"vggish/conv{i}" + (f"/conv{i}_{len(b)}" if len(b) > 1 else "")
                            for i, b in enumerate(params.conv_blocks, start=1)}

    def call(self, examples):
        p = self.params
        x = tf.reshape(examples, [-1, p.num_frames, p.num_bands, 1])  # [B, 96, 64, 1]
        for scope, conv in self.convs:
            x = conv(x)  # [B, H, W, C]
            if scope in self._pool_after:
                x = self.pool(x)  # [B, H/2, W/2, C]
        x = self.flatten(x)  # [B, 12288]
        for _, dense in self.fcs:
            x = dense(x)  # [B, 4096] ... [B, 128], the last one linear
        return x

    def build_weights(self) -> None:
        self(tf.zeros([1, self.params.num_frames, self.params.num_bands]))

    def set_checkpoint_values(self, values: dict[str, np.ndarray]) -> None:
        """Assigns read_checkpoint's values to the layers by the reference's names."""
        self.build_weights()
        for scope, layer in self.convs + self.fcs:
            layer.set_weights([values[f"{scope}/weights"], values[f"{scope}/biases"]])

    def load_checkpoint(self, path: str) -> "VGGish":
        self.set_checkpoint_values(read_checkpoint(path, self.params))
        return self

    def get_config(self):
        return super().get_config() | {"params": dataclasses.asdict(self.params)}

    @classmethod
    def from_config(cls, config):
        params = config.pop("params", {})
        params["conv_blocks"] = tuple(tuple(b) for b in params.get("conv_blocks", PARAMS.conv_blocks))
        params["fc_units"] = tuple(params.get("fc_units", PARAMS.fc_units))
        return cls(VGGishParams(**params), **config)


@keras.utils.register_keras_serializable(package="vggish")
class Postprocess(keras.layers.Layer):
    """Raw embeddings [..., 128] -> uint8 codes [..., 128]: PCA, clip to [-2, 2], scale to 0..255, truncate."""

    def __init__(self, eigen_vectors: np.ndarray | None = None, means: np.ndarray | None = None, **kwargs):
        super().__init__(**kwargs)
        dim = schema.EMBEDDING_DIM
        # float64 like the reference's NumPy, so that codes on a bin edge truncate the same way.
        self.eigen_vectors = self.add_weight(name="pca_eigen_vectors", shape=(dim, dim), trainable=False,
                                             initializer="identity", dtype=tf.float64)
        self.means = self.add_weight(name="pca_means", shape=(dim,), trainable=False, initializer="zeros",
                                     dtype=tf.float64)
        if eigen_vectors is not None:
            self.eigen_vectors.assign(eigen_vectors.astype(np.float64))
            self.means.assign(means.reshape(-1).astype(np.float64))

    def call(self, raw):
        centred = tf.cast(raw, tf.float64) - self.means  # [..., 128]
        pca = tf.tensordot(centred, self.eigen_vectors, axes=[[-1], [1]])  # [..., 128]: E (x - mean)
        return schema.quantize_tensor(pca)  # uint8 [..., 128]


class Embedder(tf.Module):
    """16-kHz waveforms [B, N] -> uint8 codes [B, T, 128] (and the raw embeddings), all in TF ops."""

    def __init__(self, vggish: VGGish, postprocess: Postprocess, front_end: audio.FrontEndParams = audio.PARAMS):
        super().__init__()
        self.vggish, self.postprocess, self.front_end = vggish, postprocess, front_end

    @classmethod
    def from_files(cls, checkpoint: str, pca_params: str, params: VGGishParams = PARAMS) -> "Embedder":
        """The released model: ``vggish_model.ckpt`` and ``vggish_pca_params.npz`` (clear errors if not)."""
        vggish = VGGish(params, name="vggish")
        vggish.load_checkpoint(checkpoint)
        return cls(vggish, Postprocess(*read_pca_params(pca_params), name="postprocess"))

    def raw_embeddings(self, waveform: tf.Tensor) -> tf.Tensor:
        """float32 [B, N] -> float32 [B, T, 128]; runs the network on chunks of chunk_examples examples."""
        examples = audio.log_mel_examples(waveform, self.front_end)  # [B, T, 96, 64]
        shape = tf.shape(examples)
        p = self.vggish.params
        flat = tf.reshape(examples, [-1, p.num_frames, p.num_bands])  # [B*T, 96, 64]
        n, chunk = tf.shape(flat)[0], p.chunk_examples
        full = n // chunk * chunk  # whole chunks through map_fn, the rest in one call: no padded examples
        chunks = tf.reshape(flat[:full], [-1, chunk, p.num_frames, p.num_bands])  # [C, chunk, 96, 64]
        head = tf.map_fn(self.vggish, chunks, parallel_iterations=1,
                         fn_output_signature=tf.TensorSpec([chunk, p.embedding_size], tf.float32))  # [C, chunk, 128]
        tail = tf.cond(n > full, lambda: self.vggish(flat[full:]),  # [n - full, 128]; oneDNN rejects empty batches
                       lambda: tf.zeros([0, p.embedding_size]))
        raw = tf.concat([tf.reshape(head, [-1, p.embedding_size]), tail], axis=0)  # [B*T, 128]
        return tf.reshape(raw, [shape[0], shape[1], p.embedding_size])  # [B, T, 128]

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveform")])
    def __call__(self, waveform):
        """float32 [B, N] -> {"embedding": uint8 [B, T, 128], "raw_embedding": float32 [B, T, 128]}."""
        raw = self.raw_embeddings(waveform)  # [B, T, 128]
        return {"embedding": self.postprocess(raw), "raw_embedding": raw}

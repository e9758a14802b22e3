"""An independent NumPy (float64) VGGish, written from the algorithm in issue #13, and random weights.

Shares no code with tfdata.audio or tfdata.vggish: the tests compare the two.
"""

from __future__ import annotations

import os

import numpy as np

SR, WINDOW, HOP, FFT, BANDS, LO_HZ, HI_HZ = 16000, 400, 160, 512, 64, 125.0, 7500.0


def mel(f):
    return 1127.0 * np.log1p(f / 700.0)


def mel_weights() -> np.ndarray:
    """[257, 64] HTK triangles in the mel domain between 66 equally spaced mel edges, DC row zero."""
    bins = mel(np.linspace(0, SR / 2, FFT // 2 + 1))
    edges = np.linspace(mel(LO_HZ), mel(HI_HZ), BANDS + 2)
    weights = np.zeros((FFT // 2 + 1, BANDS))
    for b in range(BANDS):
        lo, c, hi = edges[b], edges[b + 1], edges[b + 2]
        weights[:, b] = np.clip(np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)), 0, None)
    weights[0] = 0.0
    return weights


def log_mel_examples(x: np.ndarray) -> np.ndarray:
    """Waveform [N] -> [T, 96, 64]."""
    n_frames = 1 + (len(x) - WINDOW) // HOP
    idx = np.arange(WINDOW)[None, :] + HOP * np.arange(n_frames)[:, None]  # [F, 400]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)  # periodic Hann
    spec = np.abs(np.fft.rfft(x.astype(np.float64)[idx] * window, FFT))  # [F, 257] magnitude
    weights = mel_weights()
    logmel = np.log(spec @ weights + 0.01)  # [F, 64]
    t = n_frames // 96
    return logmel[:t * 96].reshape(t, 96, BANDS)


def variables() -> dict[str, tuple]:
    shapes = {}
    layers = [("conv1", 1, 64), ("conv2", 64, 128), ("conv3/conv3_1", 128, 256), ("conv3/conv3_2", 256, 256),
              ("conv4/conv4_1", 256, 512), ("conv4/conv4_2", 512, 512)]
    for name, cin, cout in layers:
        shapes[f"vggish/{name}/weights"], shapes[f"vggish/{name}/biases"] = (3, 3, cin, cout), (cout,)
    for name, cin, cout in [("fc1/fc1_1", 12288, 4096), ("fc1/fc1_2", 4096, 4096), ("fc2", 4096, 128)]:
        shapes[f"vggish/{name}/weights"], shapes[f"vggish/{name}/biases"] = (cin, cout), (cout,)
    return shapes


def random_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """He-normal weights and small biases, float32, the released names and shapes."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in variables().items():
        if name.endswith("weights"):
            fan_in = int(np.prod(shape[:-1]))
            out[name] = (rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)))
        else:
            out[name] = rng.uniform(-0.05, 0.05, shape).astype(np.float32)
    return out


def random_pca(seed: int = 1, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((128, 128)))
    return (q * scale).astype(np.float32), rng.normal(0, 0.1, 128).astype(np.float32)


def write_checkpoint(path: str, weights: dict[str, np.ndarray]) -> str:
    """A TF1 (V1, one file) checkpoint like vggish_model.ckpt, written with the Save op."""
    import tensorflow as tf

    names = sorted(weights)
    tf.raw_ops.Save(filename=path, tensor_names=names, data=[tf.constant(weights[n]) for n in names])
    assert os.path.exists(path)
    return path


def _conv_relu(x, w, b):
    """SAME 3x3 conv + ReLU: [B, H, W, C] -> [B, H, W, O]."""
    bsz, h, wd, c = x.shape
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = np.concatenate([p[:, dy:dy + h, dx:dx + wd, :] for dy in range(3) for dx in range(3)], axis=-1)
    return np.maximum(cols @ w.reshape(9 * c, -1).astype(np.float64) + b, 0.0)


def _pool(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def embed(examples: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """[B, 96, 64] -> raw [B, 128] (float64)."""
    x = examples.astype(np.float64)[..., None]
    for names in (["conv1"], ["conv2"], ["conv3/conv3_1", "conv3/conv3_2"], ["conv4/conv4_1", "conv4/conv4_2"]):
        for n in names:
            x = _conv_relu(x, weights[f"vggish/{n}/weights"], weights[f"vggish/{n}/biases"])
        x = _pool(x)
    x = x.reshape(len(x), -1)  # NHWC flatten
    for n in ("fc1/fc1_1", "fc1/fc1_2"):
        x = np.maximum(x @ weights[f"vggish/{n}/weights"].astype(np.float64) + weights[f"vggish/{n}/biases"], 0)
    return x @ weights["vggish/fc2/weights"].astype(np.float64) + weights["vggish/fc2/biases"]


def postprocess(raw: np.ndarray, eigen: np.ndarray, means: np.ndarray) -> np.ndarray:
    pca = (eigen.astype(np.float64) @ (raw.T - means.reshape(-1, 1).astype(np.float64))).T
    return ((np.clip(pca, -2.0, 2.0) + 2.0) * (255.0 / 4.0)).astype(np.uint8)


def codes(waveform: np.ndarray, weights, eigen, means) -> np.ndarray:
    """16-kHz waveform [N] -> uint8 [T, 128]."""
    return postprocess(embed(log_mel_examples(waveform), weights), eigen, means)


def test_waveform(seconds: float, seed: int = 0, sample_rate: int = SR) -> np.ndarray:
    """A chirp, a tone and noise in [-1, 1]: float64 [seconds * sample_rate]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    chirp = 0.4 * np.sin(2 * np.pi * (200 + 300 * t) * t)
    tone = 0.2 * np.sin(2 * np.pi * rng.uniform(300, 3000) * t) * (t % 2 < 1)
    return chirp + tone + 0.05 * rng.standard_normal(len(t))


class Files:
    """A random checkpoint and PCA file with the released names and shapes, and their values."""

    def __init__(self, directory: str, seed: int = 0):
        self.weights = random_weights(seed)
        self.checkpoint = write_checkpoint(os.path.join(directory, "vggish_model.ckpt"), self.weights)
        # PCA parameters that spread the codes of the test signals over 0..255 instead of clipping them.
        calibration = embed(log_mel_examples(test_waveform(3.0, seed=99)), self.weights)  # [3, 128]
        eigen, noise = random_pca(seed + 1)
        self.eigen = (eigen / max(calibration.std(axis=0).mean(), 1e-3) * 0.5).astype(np.float32)
        self.means = (calibration.mean(axis=0) + noise).astype(np.float32)
        self.pca_params = os.path.join(directory, "vggish_pca_params.npz")
        np.savez(self.pca_params, pca_eigen_vectors=self.eigen, pca_means=self.means)

    @classmethod
    def read(cls, directory: str, seed: int = 0) -> "Files":
        """The Files that Files(directory, seed) wrote (another test process may have written them)."""
        files = cls.__new__(cls)
        files.weights = random_weights(seed)
        files.checkpoint = os.path.join(directory, "vggish_model.ckpt")
        files.pca_params = os.path.join(directory, "vggish_pca_params.npz")
        with np.load(files.pca_params) as pca:
            files.eigen, files.means = pca["pca_eigen_vectors"], pca["pca_means"]
        return files

    def codes(self, waveform: np.ndarray) -> np.ndarray:
        return codes(waveform, self.weights, self.eigen, self.means)

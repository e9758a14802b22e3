"""Sound files -> 16 kHz mono waveforms -> VGGish's log-mel examples, as Google's VGGish computes them.

Reproduces ``tensorflow/models`` ``research/audioset/vggish`` (Apache 2.0): ``vggish_input.py``
(decode, mono, resample) in NumPy, and ``mel_features.py`` (STFT magnitude, mel matrix, log,
framing into examples) in TensorFlow ops, so that the front end runs inside a SavedModel.

- :func:`load` decodes with ``soundfile`` (16-bit PCM as int16 / 32768, the reference's scaling),
  averages the channels and resamples to 16 kHz with ``resampy`` (the reference's resampler, its
  default ``kaiser_best`` filter). Audio that cannot become an example raises :class:`AudioError`
  with a reason the Beam job counts (``REJECT_REASONS``).
- :func:`log_mel_examples` turns waveforms [..., N] into examples [..., T, 96, 64]:
  400-sample periodic Hann frames every 160 samples, |rfft 512|, the reference's HTK mel matrix
  (:func:`mel_matrix`), log(mel + 0.01), then 96-frame examples every 96 frames, the incomplete
  last one dropped. A waveform needs ``FrontEndParams.min_samples`` (15,600 samples, 0.975 s: 96
  hops of 10 ms plus the 25-ms window) for one example.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class FrontEndParams:
    """The reference's feature parameters (``vggish_params.py``); VGGish was trained on exactly these."""
    sample_rate: int = 16000
    stft_window_seconds: float = 0.025
    stft_hop_seconds: float = 0.010
    num_mel_bins: int = 64
    mel_min_hz: float = 125.0
    mel_max_hz: float = 7500.0
    log_offset: float = 0.01  # log(mel + 0.01): a stabilized log
    example_window_seconds: float = 0.96  # 96 frames of 10 ms per example
    example_hop_seconds: float = 0.96  # no overlap

    @property
    def window_samples(self) -> int:
        return int(round(self.sample_rate * self.stft_window_seconds))  # 400

    @property
    def hop_samples(self) -> int:
        return int(round(self.sample_rate * self.stft_hop_seconds))  # 160

    @property
    def fft_length(self) -> int:
        return 2 ** int(np.ceil(np.log2(self.window_samples)))  # 512

    @property
    def example_frames(self) -> int:
        return int(round(self.example_window_seconds / self.stft_hop_seconds))  # 96

    @property
    def example_hop_frames(self) -> int:
        return int(round(self.example_hop_seconds / self.stft_hop_seconds))  # 96

    @property
    def min_samples(self) -> int:
        """Samples of the shortest waveform that gives one example (15,600)."""
        return self.window_samples + (self.example_frames - 1) * self.hop_samples

    def num_examples(self, num_samples: int) -> int:
        """Examples of a waveform of num_samples (the reference's framing, incomplete ones dropped)."""
        if num_samples < self.window_samples:
            return 0
        frames = 1 + (num_samples - self.window_samples) // self.hop_samples
        return max(0, 1 + (frames - self.example_frames) // self.example_hop_frames)


PARAMS = FrontEndParams()

# --- Decoding ------------------------------------------------------------------------------------

REJECT_REASONS = (
    "not_audio",  # soundfile does not recognise the format (e.g. a text file named .wav)
    "unreadable",  # a recognised file that fails to decode, or cannot be opened
    "empty",  # no samples, or no channels
    "too_short",  # fewer than FrontEndParams.min_samples at 16 kHz: no 0.96-s example
)


class AudioError(ValueError):
    """A file that cannot give a VGGish example; ``reason`` is one of REJECT_REASONS."""

    def __init__(self, path: str, reason: str, detail: str):
        super().__init__(f"{path}: {reason.replace('_', ' ')} ({detail})")
        self.path, self.reason, self.detail = path, reason, detail


@dataclasses.dataclass(frozen=True)
class Audio:
    waveform: np.ndarray  # float32 [N], 16 kHz mono, in [-1, 1] for PCM input
    source_sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return len(self.waveform) / PARAMS.sample_rate


def decode(path: str) -> tuple[np.ndarray, int]:
    """A sound file (local or any tf.io.gfile path) -> float64 [frames, channels] and its sample rate.

    16-bit PCM is read as int16 and divided by 32768, as ``vggish_input.wavfile_to_examples`` does;
    other encodings (float, 24-bit, FLAC, OGG, MP3) as libsndfile's floats.
    """
    import io

    import soundfile as sf

    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
    except (OSError, tf.errors.OpError) as e:
        raise AudioError(path, "unreadable", _one_line(e)) from e
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.subtype == "PCM_16":
                samples = f.read(dtype="int16", always_2d=True) / 32768.0  # [frames, channels]
            else:
                samples = f.read(dtype="float64", always_2d=True)  # [frames, channels]
            rate = f.samplerate
    except sf.LibsndfileError as e:
        reason = "not_audio" if "recogni" in str(e) or "unknown format" in str(e).lower() else "unreadable"
        # error_string, not str(e): that names the BytesIO's address, which differs between runs and runners.
        raise AudioError(path, reason, getattr(e, "error_string", None) or _one_line(e)) from e
    except (RuntimeError, ValueError, TypeError, EOFError) as e:
        raise AudioError(path, "unreadable", _one_line(e)) from e
    return samples, rate


def to_mono_16k(samples: np.ndarray, sample_rate: int, params: FrontEndParams = PARAMS) -> np.ndarray:
    """[frames, channels] or [frames] at sample_rate -> float32 [N] mono at params.sample_rate (resampy)."""
    mono = samples.mean(axis=1) if samples.ndim > 1 else samples  # [frames]
    if sample_rate != params.sample_rate:
        import resampy

        mono = resampy.resample(mono, sample_rate, params.sample_rate)  # [N], the reference's filter
    return mono.astype(np.float32)


def load(path: str, params: FrontEndParams = PARAMS) -> Audio:
    """Decodes, mixes to mono and resamples one file; raises AudioError (with a reason) when it
    cannot give at least one example."""
    samples, rate = decode(path)
    if samples.size == 0 or rate <= 0:
        raise AudioError(path, "empty", "no samples")
    waveform = to_mono_16k(samples, rate, params)
    if len(waveform) < params.min_samples:
        raise AudioError(path, "too_short", f"{len(waveform) / params.sample_rate:.2f} s; VGGish needs at least "
                                            f"{params.min_samples / params.sample_rate:.3f} s")
    return Audio(waveform, rate, samples.shape[1])


def _one_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# --- The log-mel front end, in TensorFlow ops -----------------------------------------------------

def hertz_to_mel(hertz: np.ndarray) -> np.ndarray:
    """HTK mel scale, as the reference: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log(1.0 + hertz / 700.0)


def mel_matrix(params: FrontEndParams = PARAMS) -> np.ndarray:
    """float64 [fft_length // 2 + 1, num_mel_bins]: spectrogram rows @ matrix = mel bands.

    ``mel_features.spectrogram_to_mel_matrix``: triangles linear in the mel domain between
    num_mel_bins + 2 equally spaced mel edges, DC bin zeroed (not ``tf.signal``'s matrix).
    """
    num_bins = params.fft_length // 2 + 1
    nyquist = params.sample_rate / 2.0
    if not 0.0 <= params.mel_min_hz < params.mel_max_hz <= nyquist:
        raise ValueError(f"mel edges {params.mel_min_hz}..{params.mel_max_hz} Hz do not fit 0..{nyquist} Hz")
    bins_mel = hertz_to_mel(np.linspace(0.0, nyquist, num_bins))  # [257]
    edges = np.linspace(hertz_to_mel(params.mel_min_hz), hertz_to_mel(params.mel_max_hz),
                        params.num_mel_bins + 2)  # [66]
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]  # [64] each
    rising = (bins_mel[:, None] - lower) / (center - lower)  # [257, 64]
    falling = (upper - bins_mel[:, None]) / (upper - center)  # [257, 64]
    matrix = np.maximum(0.0, np.minimum(rising, falling))  # [257, 64]
    matrix[0, :] = 0.0  # HTK excludes the DC bin
    return matrix


def log_mel(waveform: tf.Tensor, params: FrontEndParams = PARAMS) -> tf.Tensor:
    """float32 waveforms [..., N] at 16 kHz -> log-mel spectrogram [..., F, 64], F = 1 + (N - 400) // 160.

    Computed in float64, as the reference's NumPy (the front end is ~1% of VGGish's cost)."""
    x = tf.cast(waveform, tf.float64)  # [..., N]
    stft = tf.signal.stft(x, frame_length=params.window_samples, frame_step=params.hop_samples,
                          fft_length=params.fft_length, window_fn=tf.signal.hann_window,  # periodic Hann
                          pad_end=False)  # [..., F, 257] complex128
    magnitude = tf.abs(stft)  # [..., F, 257]
    mel = tf.tensordot(magnitude, tf.constant(mel_matrix(params), tf.float64), axes=1)  # [..., F, 64]
    return tf.cast(tf.math.log(mel + params.log_offset), tf.float32)  # [..., F, 64]


def log_mel_examples(waveform: tf.Tensor, params: FrontEndParams = PARAMS) -> tf.Tensor:
    """float32 waveforms [..., N] at 16 kHz -> examples [..., T, 96, 64] (incomplete examples dropped)."""
    frames = log_mel(waveform, params)  # [..., F, 64]
    return tf.signal.frame(frames, params.example_frames, params.example_hop_frames, axis=-2)  # [..., T, 96, 64]

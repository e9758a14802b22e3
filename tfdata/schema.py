"""The AudioSet wire format: feature keys, sizes, label files and dequantization.

This module is the only place that knows how AudioSet clips are stored. Every
reader, writer, model and export goes through it.

The released embeddings are VGGish's 128-d PCA output, clipped to [-2, 2] and
scaled to 0..255 (``vggish_postprocess.py``: ``uint8((clip(x, -2, 2) + 2) * 255 / 4)``,
which truncates). They are *unsigned* bytes: read them as ``tf.uint8``.
"""

from __future__ import annotations

import csv
import dataclasses
import io

import numpy as np

# TensorFlow is imported where it is used: the command-line tools read this module before they parse
# their arguments, and --help must not wait for TensorFlow.

# --- SequenceExample keys of the released TFRecords (features.tar.gz). ---
VIDEO_ID_KEY = "video_id"
START_TIME_KEY = "start_time_seconds"
END_TIME_KEY = "end_time_seconds"
LABELS_KEY = "labels"
EMBEDDING_KEY = "audio_embedding"
CONTEXT_KEYS = (VIDEO_ID_KEY, START_TIME_KEY, END_TIME_KEY, LABELS_KEY)

# --- Sizes. ---
NUM_CLASSES = 527
NUM_FRAMES = 10  # one embedding per second of a 10-second clip
EMBEDDING_DIM = 128

# --- The research code's HDF5 layout (Kong et al.), plus two optional datasets
# that this project writes so that nothing is lost in a round trip. ---
H5_EMBEDDING = "x"  # uint8 [N, 10, 128], short clips zero-padded
H5_LABELS = "y"  # bool [N, 527]
H5_VIDEO_ID = "video_id_list"  # bytes [N]
H5_NUM_FRAMES = "num_frames"  # optional int32 [N]
H5_START_TIME = "start_time_seconds"  # optional float32 [N]

# --- Quantization (VGGish postprocessing). ---
QUANTIZE_MIN = -2.0
QUANTIZE_MAX = 2.0
_STEP = (QUANTIZE_MAX - QUANTIZE_MIN) / 255.0


def dequantize(embedding: tf.Tensor) -> tf.Tensor:
    """uint8 embedding -> float32 in VGGish units: the centre of each quantization bin.

    ``(q + 0.5) * 4 / 255 - 2`` is the exact inverse of VGGish's quantizer (up to
    the bin width of 0.0157), as youtube-8m does, rather than the research code's
    ``(q - 128) / 128``. We pick it because it puts the released embeddings in the
    same units as VGGish's float output, so a model trained here can be fed
    embeddings computed from new audio without knowing about bytes. Training,
    evaluation and serving all call this function (inside the model).
    """
    import tensorflow as tf

    if embedding.dtype != tf.uint8:
        raise TypeError(f"dequantize expects uint8 embeddings, got {embedding.dtype.name}")
    return (tf.cast(embedding, tf.float32) + 0.5) * _STEP + QUANTIZE_MIN


def quantize(embedding: np.ndarray) -> np.ndarray:
    """float VGGish PCA output -> uint8, exactly as ``vggish_postprocess.py`` does."""
    clipped = np.clip(embedding, QUANTIZE_MIN, QUANTIZE_MAX)
    return ((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN))).astype(np.uint8)


def quantize_tensor(embedding: tf.Tensor) -> tf.Tensor:
    """:func:`quantize` in TensorFlow ops (inside a SavedModel): clip, scale, truncate to uint8."""
    import tensorflow as tf

    clipped = tf.clip_by_value(embedding, QUANTIZE_MIN, QUANTIZE_MAX)
    scaled = (clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN))  # [0, 255]
    return tf.cast(scaled, tf.uint8)  # truncates, as numpy's astype(uint8)


# --- Class label files (class_labels_indices.csv: index,mid,display_name). ---
@dataclasses.dataclass(frozen=True)
class ClassLabels:
    mids: tuple[str, ...]
    names: tuple[str, ...]

    def __post_init__(self):
        if len(self.mids) != NUM_CLASSES or len(self.names) != NUM_CLASSES:
            raise ValueError(f"expected {NUM_CLASSES} classes, got {len(self.mids)}")

    def index_of_mid(self) -> dict[str, int]:
        return {mid: i for i, mid in enumerate(self.mids)}

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["index", "mid", "display_name"])
        for i, (mid, name) in enumerate(zip(self.mids, self.names)):
            writer.writerow([i, mid, name])
        return out.getvalue()


def read_class_labels(path: str) -> ClassLabels:
    """Reads ``class_labels_indices.csv`` (local or ``gs://``; a UTF-8 BOM is allowed).

    Raises ValueError naming the file unless it has the columns index,mid,display_name and exactly
    the rows 0..526 in order, each with a distinct, non-empty mid.
    """
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            text = f.read().decode("utf-8-sig")
        rows = list(csv.DictReader(io.StringIO(text)))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a readable UTF-8 CSV ({e})") from None
    if not rows or set(rows[0]) != {"index", "mid", "display_name"}:
        raise ValueError(f"{path}: not a class_labels_indices.csv (columns index,mid,display_name)")
    if len(rows) != NUM_CLASSES:
        raise ValueError(f"{path}: {len(rows)} classes, expected {NUM_CLASSES}")
    for i, row in enumerate(rows):
        if (row["index"] or "").strip() != str(i):
            raise ValueError(f"{path}: row {i + 2} has index {row['index']!r}, expected {i} (indices 0..{NUM_CLASSES - 1} "
                             "in order, each once)")
        if not row["mid"] or None in row:
            raise ValueError(f"{path}: row {i + 2} has no mid or more than 3 columns")
    mids = [r["mid"] for r in rows]
    if len(set(mids)) != len(mids):
        raise ValueError(f"{path}: mid {next(m for m in mids if mids.count(m) > 1)!r} appears twice")
    return ClassLabels(tuple(mids), tuple(r["display_name"] for r in rows))


# --- Validation: why a record is not a usable clip. The Beam job counts these
# names in its manifest; readers that skip records count them too. ---
OK = "ok"
REJECT_REASONS = (
    "not_a_sequence_example",  # bytes that do not parse as tf.train.SequenceExample
    "missing_video_id",
    "missing_labels",  # no `labels` context feature, or an empty one
    "no_frames",  # no `audio_embedding` feature list, or an empty one
    "too_many_frames",  # more than NUM_FRAMES: not a 10-second AudioSet clip
    "bad_frame_length",  # a frame whose byte string is not EMBEDDING_DIM bytes
    "label_out_of_range",  # a label id outside 0..NUM_CLASSES-1
    "duplicate",  # same (video_id, start_time_seconds) seen before (Beam job only)
    "unreadable_data",  # the rest of a TFRecord file after a truncated or corrupt record, or a record whose
    # length field claims more bytes than the file has left (Beam job only)
    "too_many_labels",  # more than MAX_LABELS distinct label ids (the Beam job's --max_labels)
    "bad_time",  # start_time_seconds missing (TFRecords), NaN, infinite or negative, or after end_time_seconds
    "bad_video_id",  # a video_id that is not valid UTF-8
    "unreadable_file",  # an input path that is not a readable regular file (directory, FIFO, socket,
    # dangling symlink, symlink loop, permission denied): counts as one input record (Beam job only)
    "conflicting_duplicate",  # same (video_id, start_time_seconds) as a clip seen before, other labels (Beam job only)
)
# A clip with more distinct labels than this is rejected (the released data has at most 12 per clip).
MAX_LABELS = 32
# Codes returned by the vectorized validator, in order of precedence.
REASON_CODES = (OK,) + REJECT_REASONS


def encode_sequence_example(video_id: bytes, start_time_seconds: float, num_frames: int,
                            label_ids: list[int], embedding: np.ndarray,
                            end_time_seconds: float | None = None) -> bytes:
    """One clip -> a serialized SequenceExample in the released format (frames past num_frames dropped).

    end_time_seconds defaults to start + num_frames (one frame per second, as the release).
    Serialized deterministically: protobuf's upb backend writes map entries (the context features)
    in a per-process hash order otherwise, so the same clip gave other bytes in another process.
    """
    import tensorflow as tf

    end = start_time_seconds + num_frames if end_time_seconds is None else end_time_seconds
    context = {
        VIDEO_ID_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[video_id])),
        START_TIME_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=[start_time_seconds])),
        END_TIME_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=[end])),
        LABELS_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=label_ids)),
    }
    frames = [_bytes_feature(row.tobytes()) for row in embedding[:num_frames]]
    return tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(feature_list={EMBEDDING_KEY: tf.train.FeatureList(feature=frames)}),
    ).SerializeToString(deterministic=True)


# --- Balanced training shards written by beam_pipelines.build_shards. ---
# One TFRecord record per *block* of K clips of one class (clips are repeated to
# fill the last block of a small class), so that the reader moves large byte
# strings instead of single clips. A block is raw bytes, not a tf.train.Example,
# so that one decode_raw and three slices decode a batch of blocks (2.5x faster
# than parse_example; BUILD.md, "Benchmarks"):
#   class_index  uint32 little-endian    4 bytes
#   num_frames   uint8 [K]               K bytes
#   labels       uint8 [K, 66]           np.packbits of the multi-hot [K, 528] (big-endian bits)
#   embedding    uint8 [K, 10, 128]      K * 1280 bytes
# Plain shards (holdout, eval) are validated SequenceExamples in the released
# format and need no format of their own.
SHARD_SCHEMA_VERSION = 2
PACKED_LABEL_BYTES = (NUM_CLASSES + 7) // 8  # 66
_BLOCK_HEADER_BYTES = 4
_CLIP_BYTES = 1 + PACKED_LABEL_BYTES + NUM_FRAMES * EMBEDDING_DIM  # 1347


def block_bytes(block_size: int) -> int:
    """Length of one serialized block of block_size clips."""
    return _BLOCK_HEADER_BYTES + block_size * _CLIP_BYTES


def encode_block(class_index: int, embedding: np.ndarray, num_frames: np.ndarray,
                 labels: np.ndarray) -> bytes:
    """Serializes one block: embedding uint8 [K,10,128], num_frames [K], labels 0/1 [K,527]."""
    k = embedding.shape[0]
    if embedding.shape != (k, NUM_FRAMES, EMBEDDING_DIM) or embedding.dtype != np.uint8:
        raise ValueError(f"block embedding must be uint8 [K,{NUM_FRAMES},{EMBEDDING_DIM}], got "
                         f"{embedding.dtype} {embedding.shape}")
    if num_frames.shape != (k,) or labels.shape != (k, NUM_CLASSES):
        raise ValueError(f"block of {k} clips has num_frames {num_frames.shape}, labels {labels.shape}")
    packed = np.packbits(labels.astype(bool), axis=1)  # [K, 66]
    return b"".join([np.uint32(class_index).astype("<u4").tobytes(), num_frames.astype(np.uint8).tobytes(),
                     packed.tobytes(), embedding.tobytes()])


_UNPACK_TABLE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1)  # [256, 8]: byte -> its bits


def decode_blocks(serialized: tf.Tensor, block_size: int) -> dict[str, tf.Tensor]:
    """Vectorized inverse of :func:`encode_block` for a batch of N serialized blocks.

    Returns class_index int64 [N], embedding uint8 [N, K, 10, 128], num_frames int32 [N, K],
    labels uint8 [N, K, 527]. A record of another length fails (InvalidArgumentError).
    """
    import tensorflow as tf

    k = block_size
    raw = tf.io.decode_raw(serialized, tf.uint8, fixed_length=block_bytes(k))  # [N, 4 + K * 1347]
    header = _BLOCK_HEADER_BYTES
    class_index = tf.bitcast(tf.reshape(raw[:, :header], [-1, header]), tf.uint32)  # [N]
    num_frames = raw[:, header:header + k]  # [N, K]
    labels_at = header + k
    packed = tf.reshape(raw[:, labels_at:labels_at + k * PACKED_LABEL_BYTES], [-1, k, PACKED_LABEL_BYTES])  # [N,K,66]
    bits = tf.gather(tf.constant(_UNPACK_TABLE), tf.cast(packed, tf.int32))  # [N, K, 66, 8]
    labels = tf.reshape(bits, [-1, k, PACKED_LABEL_BYTES * 8])[..., :NUM_CLASSES]  # [N, K, 527]
    embedding = tf.reshape(raw[:, labels_at + k * PACKED_LABEL_BYTES:], [-1, k, NUM_FRAMES, EMBEDDING_DIM])
    return {
        "class_index": tf.cast(class_index, tf.int64),
        "embedding": embedding,  # [N, K, 10, 128]
        "num_frames": tf.cast(num_frames, tf.int32),
        "labels": labels,
    }


def _bytes_feature(value: bytes) -> tf.train.Feature:
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

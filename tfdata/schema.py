"""The AudioSet wire format: feature keys, sizes, label files and dequantization.

The one owner of every on-disk contract: the SequenceExample keys and parse spec, the reject
table (each reason with its check), the input-file checks, the class-labels file, the balanced
block format and the shards' Manifest. Readers, the Beam jobs and the export all go through it.

The released embeddings are VGGish's 128-d PCA output, clipped to [-2, 2] and
scaled to 0..255 (``vggish_postprocess.py``: ``uint8((clip(x, -2, 2) + 2) * 255 / 4)``,
which truncates). They are *unsigned* bytes: read them as ``tf.uint8``.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import functools
import io
import json
import os
import re
import stat
import struct
import typing

import numpy as np

# TensorFlow is imported where it is used: the command-line tools read this module before they parse
# their arguments, and --help must not wait for TensorFlow.

# --- SequenceExample keys of the released TFRecords (features.tar.gz). ---
VIDEO_ID_KEY = "video_id"
START_TIME_KEY = "start_time_seconds"
END_TIME_KEY = "end_time_seconds"
LABELS_KEY = "labels"
EMBEDDING_KEY = "audio_embedding"

# --- Sizes. ---
NUM_CLASSES = 527
NUM_FRAMES = 10  # one embedding per second of a 10-second clip
EMBEDDING_DIM = 128

# --- The parse spec of those SequenceExamples (every parser uses these two). ---
def context_features() -> dict:
    """Context spec: a missing video_id or start time parses as "" or NaN (then rejected, see
    REJECT_CHECKS); end_time_seconds (optional) and labels are ragged, so any count parses."""
    import tensorflow as tf

    return {
        VIDEO_ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
        START_TIME_KEY: tf.io.FixedLenFeature([], tf.float32, default_value=float("nan")),
        END_TIME_KEY: tf.io.RaggedFeature(tf.float32),  # [] when absent
        LABELS_KEY: tf.io.RaggedFeature(tf.int64),
    }


def sequence_features(padded: bool = False) -> dict:
    """Frame spec: ragged strings [B, (T), (values per frame)], so that a frame of another shape is
    rejected rather than failing the batch; padded=True: one string per frame, [B, T_max] with ""
    after a clip's end (the serving signature, which refuses anything else)."""
    import tensorflow as tf

    frame = tf.io.FixedLenSequenceFeature([], tf.string) if padded else tf.io.RaggedFeature(tf.string)
    return {EMBEDDING_KEY: frame}


# --- The research code's HDF5 layout (Kong et al.), plus two optional datasets
# that this project writes so that nothing is lost in a round trip. ---
H5_EMBEDDING = "x"  # uint8 [N, 10, 128], short clips zero-padded
H5_LABELS = "y"  # bool [N, 527]
H5_VIDEO_ID = "video_id_list"  # bytes [N]
H5_NUM_FRAMES = "num_frames"  # optional int32 [N]
H5_START_TIME = START_TIME_KEY  # optional float32 [N]

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
CLASS_LABELS_FILE = "class_labels_indices.csv"  # beside the data, and an exported model's asset


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
    """Reads a CLASS_LABELS_FILE (local or ``gs://``; a UTF-8 BOM is allowed).

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
        raise ValueError(f"{path}: not a {CLASS_LABELS_FILE} (columns index,mid,display_name)")
    if len(rows) != NUM_CLASSES:
        raise ValueError(f"{path}: {len(rows)} classes, expected {NUM_CLASSES}")
    for i, row in enumerate(rows):
        if (row["index"] or "").strip() != str(i):
            raise ValueError(f"{path}: row {i + 2} has index {row['index']!r}, expected {i} "
                             f"(indices 0..{NUM_CLASSES - 1} in order, each once)")
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
# The readers' `reason` column: an index into this tuple (0 = ok; the precedence is REJECT_CHECKS').
REASON_CODES = (OK,) + REJECT_REASONS


class RejectCheck(typing.NamedTuple):
    """One rule of the reject table: `failed(facts[fact])` is bool [B] (numpy and TensorFlow alike)."""
    reason: str
    fact: str
    failed: typing.Callable


# The checks on a parsed clip, in order of precedence: a clip gets the reason of the first that fails.
# A reader passes the facts (bool or int [B] columns) its format has: parse_sequence_examples all of
# them, the HDF5 readers fewer; a check whose fact is not given does not apply. The other reasons are found outside a parsed clip
# (the parse itself, the Beam job's files and deduplication).
REJECT_CHECKS = (
    RejectCheck("missing_video_id", "video_id_length", lambda n: n == 0),
    RejectCheck("bad_video_id", "video_id_utf8", lambda ok: ~ok),
    RejectCheck("missing_labels", "num_label_ids", lambda n: n == 0),
    RejectCheck("no_frames", "total_frames", lambda n: n <= 0),
    RejectCheck("too_many_frames", "total_frames", lambda n: n > NUM_FRAMES),
    RejectCheck("bad_frame_length", "bad_frames", lambda bad: bad),
    RejectCheck("label_out_of_range", "bad_label_ids", lambda bad: bad),
    RejectCheck("bad_time", "bad_time", lambda bad: bad),
    # last, so that the Beam job's --max_labels can lift it (beam_pipelines.validate.limit_labels)
    RejectCheck("too_many_labels", "num_labels", lambda n: n > MAX_LABELS),
)


def failed(reason: str, facts: dict):
    """bool [B]: the clips that fail the check of one reason (REJECT_CHECKS)."""
    check = next(c for c in REJECT_CHECKS if c.reason == reason)
    return check.failed(facts[check.fact])


def reason_codes(facts: dict, where):
    """int [B]: index into REASON_CODES of the first check that fails (0 = ok). where: np.where or tf.where."""
    code = 0
    for check in reversed(REJECT_CHECKS):
        if check.fact in facts:
            code = where(check.failed(facts[check.fact]), REASON_CODES.index(check.reason), code)
    return code


# --- Parsing and validating the released SequenceExamples (the tf.data readers, the Beam job). ---
_ZERO_FRAME = b"\x00" * EMBEDDING_DIM


def parse_sequence_examples(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses and validates a batch of serialized AudioSet SequenceExamples at once (a tf.function).

    Returns a clip batch (tfdata.readers) with a `reason` per clip (REJECT_CHECKS). Raises
    InvalidArgumentError if any record is not a SequenceExample (or has a key of the wrong type);
    :func:`parse_records` isolates such records.
    """
    return _parse_function()(serialized)


@functools.cache
def _parse_function():
    import tensorflow as tf

    return tf.function(_parse, input_signature=[tf.TensorSpec([None], tf.string)])


def _parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    import tensorflow as tf

    context, sequence, _ = tf.io.parse_sequence_example(
        serialized, context_features=context_features(), sequence_features=sequence_features())
    values = sequence[EMBEDDING_KEY]  # ragged string [B, (T), (values per frame)]
    label_ids = context[LABELS_KEY]  # ragged int64 [B, (L)]
    n = tf.shape(serialized)[0]

    frame_values = values.values  # ragged [F, (V)], F = all frames of the batch
    frames = tf.RaggedTensor.from_row_splits(
        tf.strings.reduce_join(frame_values, axis=1), values.row_splits)  # ragged string [B, (T)]
    frame_ok = (tf.equal(frame_values.row_lengths(), 1)
                & tf.equal(tf.strings.length(frames.flat_values), EMBEDDING_DIM))  # [F]
    decoded = tf.io.decode_raw(tf.where(frame_ok, frames.flat_values, _ZERO_FRAME), tf.uint8)
    decoded = tf.reshape(decoded, [-1, EMBEDDING_DIM])  # [F, 128], also when F = 0
    embedding = frames.with_flat_values(decoded)[:, :NUM_FRAMES]  # ragged [B, (<=10), 128]
    embedding = embedding.to_tensor(shape=[None, NUM_FRAMES, EMBEDDING_DIM])  # [B, 10, 128]
    total_frames = tf.cast(frames.row_lengths(), tf.int32)  # [B]

    in_range = (label_ids.flat_values >= 0) & (label_ids.flat_values < NUM_CLASSES)  # [L_total]
    indices = tf.stack([tf.cast(label_ids.value_rowids(), tf.int64),
                        tf.where(in_range, label_ids.flat_values, 0)], 1)  # [L_total, 2]
    hits = tf.scatter_nd(indices, tf.cast(in_range, tf.int32), [tf.cast(n, tf.int64), NUM_CLASSES])
    labels = tf.cast(tf.minimum(hits, 1), tf.uint8)  # [B, 527]
    video_id = context[VIDEO_ID_KEY]
    start = context[START_TIME_KEY]  # NaN when missing
    end = context[END_TIME_KEY]  # ragged [B, (0 or 1)]
    end_bad = tf.reduce_any(~tf.math.is_finite(end) | (end < start[:, None]), axis=1) | (end.row_lengths() > 1)

    facts = {  # [B] each, the columns of REJECT_CHECKS
        "video_id_length": tf.strings.length(video_id),
        "video_id_utf8": tf.equal(video_id, tf.strings.unicode_transcode(video_id, "UTF-8", "UTF-8", errors="replace")),
        "num_label_ids": label_ids.row_lengths(),
        "total_frames": total_frames,
        "bad_frames": tf.reduce_any(frames.with_flat_values(~frame_ok), axis=1),
        "bad_label_ids": tf.reduce_any(label_ids.with_flat_values(~in_range), axis=1),
        "bad_time": ~tf.math.is_finite(start) | (start < 0) | end_bad,
        "num_labels": tf.reduce_sum(tf.cast(labels, tf.int32), axis=1),
    }
    reason = reason_codes(facts, tf.where)
    return {
        "embedding": embedding,
        "num_frames": tf.minimum(total_frames, NUM_FRAMES),
        LABELS_KEY: labels,
        VIDEO_ID_KEY: video_id,
        START_TIME_KEY: start,
        "reason": reason,
    }


def parse_records(records: list[bytes]) -> dict[str, np.ndarray]:
    """:func:`parse_sequence_examples` for Python callers (the Beam job), as numpy arrays.

    Parses the whole list in one call; only if that fails does it parse record by record to
    mark the ones that are not SequenceExamples, so one bad record costs one batch a slow path.
    """
    import tensorflow as tf

    try:
        return _to_numpy(parse_sequence_examples(tf.constant(records, tf.string)))
    except tf.errors.InvalidArgumentError:
        pass
    parts = []
    for record in records:
        try:
            parts.append(_to_numpy(parse_sequence_examples(tf.constant([record], tf.string))))
        except tf.errors.InvalidArgumentError:
            parts.append(_unparseable())
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _to_numpy(batch: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in batch.items()}


def _unparseable() -> dict[str, np.ndarray]:
    return {
        "embedding": np.zeros([1, NUM_FRAMES, EMBEDDING_DIM], np.uint8),
        "num_frames": np.zeros([1], np.int32),
        LABELS_KEY: np.zeros([1, NUM_CLASSES], np.uint8),
        VIDEO_ID_KEY: np.array([b""], object),
        START_TIME_KEY: np.array([np.nan], np.float32),
        "reason": np.array([REASON_CODES.index("not_a_sequence_example")], np.int32),
    }


# --- Input files: the checks behind `unreadable_file` and `unreadable_data`, run before any reader. ---
def list_files(pattern: str | list[str]) -> list[str]:
    """Sorted files matching a glob (or comma-separated globs, or a list); fails when none match."""
    import tensorflow as tf

    patterns = pattern.split(",") if isinstance(pattern, str) else list(pattern)
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p.strip())})
    if not files:
        raise FileNotFoundError(f"no files match {pattern!r}")
    return files


def file_problem(path: str) -> str | None:
    """Why an input path is not a readable regular file, or None. Never opens anything but a regular
    file (a FIFO would block), so a directory, FIFO, socket, device, dangling symlink, symlink loop or
    unreadable file is named before any reader touches it. gs:// paths are not checked (None)."""
    if "://" in path:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ENOENT and os.path.islink(path):
            return "a dangling symbolic link"
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"cannot be read ({e.strerror})"
    if stat.S_ISDIR(mode):
        return "a directory, not a file"
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
        return f"{kind}, not a regular file"
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    return None


def tfrecord_length_problem(path: str) -> tuple[int, str] | None:
    """(record position, message) of the first record whose length field claims more bytes than the
    file has left, else None. TensorFlow's record readers allocate what a length field claims before
    checking it (a length of 2**62 with a valid header CRC crashes the process), so every reader of
    TFRecords checks here first. One seek per record; *.gz files are decompressed to check them."""
    import gzip

    import tensorflow as tf

    local = "://" not in path
    with open(path, "rb") if local else tf.io.gfile.GFile(path, "rb") as raw:
        f = gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
        size = None if path.endswith(".gz") else os.fstat(raw.fileno()).st_size if local else raw.size()
        at, position = 0, 0
        while True:
            header = f.read(12)
            if len(header) < 12:
                return None  # end of file, or a truncated header: the readers report that themselves
            (length,) = struct.unpack_from("<Q", header)
            end = at + 12 + length + 4
            if size is None:  # gzip: a forward seek stops at the end of the data
                fits, left = f.seek(length + 4, 1) == end, "fewer"
            else:
                fits, left = end <= size, size - at - 12
            if not fits:
                return position, f"record {position} claims {length} bytes, {left} left in the file"
            if size is not None:
                f.seek(end)  # GFile cannot seek past the end: only after the check
            at, position = end, position + 1


def hdf5_datasets(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Checks the research HDF5 layout; returns {dataset: (shape, dtype)}. Raises ValueError."""
    import h5py
    import tensorflow as tf

    problem = file_problem(path)
    if problem:
        raise ValueError(f"{path}: {problem}")
    integral_frames = True
    try:
        with tf.io.gfile.GFile(path, "rb") as f, h5py.File(f, "r") as h5:
            # Members that are not datasets (groups, links to nothing) are not part of the layout: ignored.
            datasets = {name: h5.get(name) for name in h5.keys()}
            found = {name: (d.shape, d.dtype) for name, d in datasets.items() if isinstance(d, h5py.Dataset)}
            frames = datasets.get(H5_NUM_FRAMES)
            if H5_NUM_FRAMES in found and found[H5_NUM_FRAMES][1].kind == "f":
                values = frames[()]
                integral_frames = bool(np.all(np.isfinite(values) & (values == np.round(values))))
    except (OSError, KeyError, RuntimeError) as e:  # not HDF5, truncated, damaged
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from None
    missing = [k for k in (H5_EMBEDDING, H5_LABELS, H5_VIDEO_ID) if k not in found]
    if missing:
        raise ValueError(f"{path}: HDF5 file has no dataset {', '.join(missing)}")
    (x_shape, x_dtype), (y_shape, y_dtype), (v_shape, v_dtype) = (
        found[H5_EMBEDDING], found[H5_LABELS], found[H5_VIDEO_ID])
    n = x_shape[0]
    expected = [
        (x_shape[1:] == (NUM_FRAMES, EMBEDDING_DIM) and x_dtype == np.uint8,
         f"x is {x_dtype} {x_shape}, expected uint8 [N, {NUM_FRAMES}, {EMBEDDING_DIM}]"),
        (y_shape == (n, NUM_CLASSES) and y_dtype in (np.bool_, np.uint8),
         f"y is {y_dtype} {y_shape}, expected bool [{n}, {NUM_CLASSES}]"),
        (v_shape == (n,) and v_dtype.kind == "S", f"video_id_list is {v_dtype} {v_shape}, expected bytes [{n}]"),
    ]
    for name in (H5_NUM_FRAMES, H5_START_TIME):
        if name in found:
            expected.append((found[name][0] == (n,), f"{name} has shape {found[name][0]}, expected [{n}]"))
            expected.append((found[name][1].kind in "iuf", f"{name} is {found[name][1]}, expected numbers"))
    expected.append((integral_frames, f"{H5_NUM_FRAMES} holds values that are not whole numbers "
                                      "(e.g. 9.5 or NaN), expected integers"))
    problems = [message for ok, message in expected if not ok]
    if problems:
        raise ValueError(f"{path}: {'; '.join(problems)}")
    return found


def error_message(error: Exception) -> str:
    """One line for a user: a TensorFlow error without its graph-node prefix and op suffix."""
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text, flags=re.S)
    return text.strip().splitlines()[0]


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
# than parse_example; docs/design.md, "On-disk formats"):
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


def class_plan(num_clips: int, block_size: int, min_blocks: int, blocks_per_file: int) -> list[tuple[int, int]]:
    """[(first block, end block)] per file of a class with num_clips distinct clips (the balanced layout's
    files, written by beam_pipelines.layout, read by tfdata.datasets' uniform sampling).

    The class gets max(min_blocks, ceil(num_clips / K)) blocks and one file per blocks_per_file
    blocks of its own clips (at least one); the last file takes the remaining blocks, so all the
    cycled repeats of a rare class are in its last file.
    """
    own_blocks = -(-num_clips // block_size)
    total = max(min_blocks, own_blocks)
    files = max(1, -(-own_blocks // blocks_per_file))
    bounds = [(s * blocks_per_file, (s + 1) * blocks_per_file) for s in range(files - 1)]
    return bounds + [((files - 1) * blocks_per_file, total)]


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
        LABELS_KEY: labels,
    }


# --- The manifest of a shards directory (written last by beam_pipelines.build_shards). ---
MANIFEST_FILE = "manifest.json"


class ShardsError(ValueError):
    """A shards directory that cannot be read (missing, unfinished, other schema version)."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    """manifest.json: what a finished run wrote (see beam_pipelines.build_shards' docstring).

    splits maps a split name to {layout, clips, class_counts, files} (balanced: also block_size,
    blocks and class_files, the files of each class). `complete` marks a finished run.
    """
    args: dict
    input_records: int
    written_clips: int
    rejected: int
    rejected_reasons: dict  # every reason of REJECT_REASONS -> count
    class_counts: list  # [527] clips per class over all splits
    splits: dict
    rejected_file: str | None = None  # relative to the shards directory
    schema_version: int = SHARD_SCHEMA_VERSION
    complete: bool = True

    _KEYS = ("schema_version", "complete", "args", "input_records", "written_clips", "rejected",
             "rejected_reasons", "rejected_file", "class_counts", "splits")

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in self._KEYS}

    def write(self, shards_dir: str) -> None:
        """Writes DIR/manifest.json atomically (tfdata.fileio), so a reader finds all of it or none."""
        from tfdata import fileio

        fileio.write_atomically(os.path.join(shards_dir, MANIFEST_FILE), json.dumps(self.to_dict(), indent=1).encode())

    @classmethod
    def read(cls, shards_dir: str) -> Manifest:
        """The manifest of a finished run; ShardsError for a missing, unfinished or other-version one."""
        import tensorflow as tf

        path = os.path.join(shards_dir, MANIFEST_FILE)
        if not tf.io.gfile.isdir(shards_dir):
            raise ShardsError(f"{shards_dir}: no such directory")
        if not tf.io.gfile.exists(path):
            raise ShardsError(f"{shards_dir}: no {MANIFEST_FILE}: not shards written by beam_pipelines.build_shards, "
                              "or a run that did not finish")
        try:
            with tf.io.gfile.GFile(path) as f:
                manifest = json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            raise ShardsError(f"{path}: not a valid manifest ({e}); the run that wrote it did not finish: rebuild "
                              "the shards with beam_pipelines.build_shards --overwrite") from None
        if not isinstance(manifest, dict):
            raise ShardsError(f"{path}: not a valid manifest (not a JSON object): rebuild the shards")
        if manifest.get("schema_version") != SHARD_SCHEMA_VERSION:
            raise ShardsError(f"{shards_dir}: shards have schema version {manifest.get('schema_version')}, this code "
                              f"reads version {SHARD_SCHEMA_VERSION}: rebuild them with beam_pipelines.build_shards")
        if manifest.get("complete") is not True:
            raise ShardsError(f"{shards_dir}: the run that wrote these shards did not finish")
        try:
            return cls(**{key: manifest[key] for key in cls._KEYS if key in manifest})
        except TypeError as e:
            raise ShardsError(f"{path}: not a valid manifest ({e}): rebuild the shards") from None


def _bytes_feature(value: bytes) -> tf.train.Feature:
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

"""Sound files -> VGGish embeddings as AudioSet SequenceExamples, ready for build_shards.

    python -m beam_pipelines.embed_audio --input 'sounds/*.wav,sounds/*/*.flac' --output_dir OUT \
        --vggish_checkpoint vggish_model.ckpt --pca_params vggish_pca_params.npz \
        [--labels segments.csv [--class_labels class_labels_indices.csv]] [--num_shards 8] [--overwrite] \
        [Beam pipeline options]

Writes, under OUT:
  part-SSSSS-of-NNNNN.tfrecord  SequenceExamples in the released format (tfdata.schema), one per
                                *segment*: a file's 0.96-s VGGish examples cut into runs of 10, so a
                                file of up to 9.6 s is one clip and longer files are several clips;
                                video_id is the file name without its extension, start_time_seconds
                                9.6 k for segment k, end_time_seconds its start + 0.96 x its examples.
                                A file goes to shard sha256(video_id) mod N; records sorted by
                                (video_id, start) in each shard, so reruns are byte-identical.
  manifest.json                 counts (files, segments, examples, seconds of audio), rejections by
                                reason (tfdata.audio.REJECT_REASONS + duplicate_video_id) with each
                                rejected file, the shard list; written last, with "complete": true.

--labels takes the AudioSet segments CSV format (`YTID, start_seconds, end_seconds, "l1,l2"`, '#'
comments): YTID is the file name without extension, labels are class ids, mids or display names
(mids and names need --class_labels). A row labels each segment of its file that it covers for at
least half of the segment's length. Segments without labels are still written (predict.py reads
them) and counted as unlabelled_segments; build_shards rejects them as missing_labels.

`python -m beam_pipelines.build_shards --input 'OUT/*.tfrecord' ...` then builds training shards
like from the released files. Runs on the DirectRunner by default and on any Beam runner; workers
need the package installed (BUILD.md) and read the VGGish files from any tf.io.gfile path (gs://).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import os
import sys

import apache_beam as beam
import numpy as np

from beam_pipelines import UsageError, absolute_paths
from tfdata import audio, schema

NAMESPACE = "embed_audio"
REJECT_REASONS = audio.REJECT_REASONS + ("duplicate_video_id",)  # a second file with the same name
SEGMENT_EXAMPLES = schema.NUM_FRAMES  # 10 examples of 0.96 s per clip, as the released 10-s clips


def _counter(name: str):
    return beam.metrics.Metrics.counter(NAMESPACE, name)


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    input: str
    output_dir: str
    vggish_checkpoint: str
    pca_params: str
    labels: str | None = None
    class_labels: str | None = None
    num_shards: int = 8
    overwrite: bool = False

    @property
    def out(self) -> str:
        return self.output_dir.rstrip("/")


_HELP = {
    "input": "glob(s), comma-separated, of sound files (WAV, FLAC, OGG, MP3, ...)",
    "output_dir": "an empty or absent directory (local or gs://)",
    "vggish_checkpoint": "Google's vggish_model.ckpt",
    "pca_params": "Google's vggish_pca_params.npz",
    "labels": "optional AudioSet segments CSV: file name (YTID), start, end, labels",
    "class_labels": f"{schema.CLASS_LABELS_FILE}, to read mids or display names in --labels",
    "num_shards": "output TFRecord files",
    "overwrite": "delete an earlier output of this job first",
}


def parse_args(argv: list[str]) -> tuple[EmbedConfig, list[str]]:
    """Flags derived from EmbedConfig (one default, one place); the rest are Beam's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for field in dataclasses.fields(EmbedConfig):
        flag = f"--{field.name}"
        if field.type == "bool":
            parser.add_argument(flag, action="store_true", help=_HELP[field.name])
        elif field.default is dataclasses.MISSING:
            parser.add_argument(flag, required=True, help=_HELP[field.name])
        else:
            kind = int if field.type == "int" else str
            parser.add_argument(flag, type=kind, default=field.default, help=_HELP[field.name])
    known, pipeline_args = parser.parse_known_args(argv)
    if known.num_shards < 1:
        parser.error("--num_shards must be positive")
    for name in ("input", "output_dir", "vggish_checkpoint", "pca_params", "labels", "class_labels"):
        setattr(known, name, absolute_paths(getattr(known, name)))  # workers of a portable runner run elsewhere
    return EmbedConfig(**vars(known)), pipeline_args


# --- Labels ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LabelRow:
    start: float
    end: float
    label_ids: tuple[int, ...]


def read_labels(path: str, class_labels: str | None) -> dict[str, list[LabelRow]]:
    """AudioSet segments CSV -> {YTID: rows}; labels as ids, mids or display names (UsageError otherwise)."""
    import tensorflow as tf

    known = schema.read_class_labels(class_labels) if class_labels else None
    by_token = {}
    if known:
        by_token = {m: i for i, m in enumerate(known.mids)} | {n: i for i, n in enumerate(known.names)}
    with tf.io.gfile.GFile(path, "r") as f:
        lines = [line for line in f if line.strip() and not line.lstrip().startswith("#")]
    table: dict[str, list[LabelRow]] = {}
    for number, row in enumerate(csv.reader(lines, skipinitialspace=True), start=1):
        if len(row) != 4:
            raise UsageError(f"{path}: row {number} has {len(row)} columns; expected YTID, start, end, labels")
        ids = []
        for token in (t.strip() for t in row[3].split(",") if t.strip()):
            if token.isdigit() and int(token) < schema.NUM_CLASSES:
                ids.append(int(token))
            elif token in by_token:
                ids.append(by_token[token])
            else:
                hint = "" if known else " (mids and class names need --class_labels)"
                raise UsageError(f"{path}: row {number}: unknown label {token!r}{hint}")
        try:
            start, end = float(row[1]), float(row[2])
        except ValueError as e:
            raise UsageError(f"{path}: row {number}: start and end must be seconds ({e})") from e
        table.setdefault(row[0].strip(), []).append(LabelRow(start, end, tuple(sorted(set(ids)))))
    return table


def segment_labels(rows: list[LabelRow], start: float, end: float) -> list[int]:
    """The labels of the rows that cover at least half of [start, end)."""
    ids = set()
    for row in rows:
        if min(end, row.end) - max(start, row.start) >= 0.5 * (end - start):
            ids.update(row.label_ids)
    return sorted(ids)


# --- Transforms -----------------------------------------------------------------------------------

def video_id_of(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def shard_of(video_id: str, num_shards: int) -> int:
    return int.from_bytes(hashlib.sha256(video_id.encode()).digest()[:8], "big") % num_shards


def segments(codes: np.ndarray, video_id: str) -> list[dict]:
    """uint8 [T, 128] -> runs of up to SEGMENT_EXAMPLES examples with their times in the file."""
    hop = audio.PARAMS.example_hop_seconds
    out = []
    for first in range(0, len(codes), SEGMENT_EXAMPLES):
        part = codes[first:first + SEGMENT_EXAMPLES]  # [<=10, 128]
        start = round(first * hop, 6)
        out.append({schema.VIDEO_ID_KEY: video_id, "start": start, "end": round(start + len(part) * hop, 6),
                    "embedding": part})
    return out


class _EmbedFile(beam.DoFn):
    """A (path, video_id) -> segment dicts; a file that gives no example -> a tagged rejection."""

    def __init__(self, vggish_checkpoint: str, pca_params: str):
        self._files = (vggish_checkpoint, pca_params)
        self._embedder = None

    def setup(self):
        from tfdata import vggish

        self._embedder = vggish.Embedder.from_files(*self._files)  # once per worker: ~277 MB of weights

    def process(self, item: tuple[str, str]):
        import tensorflow as tf

        path, video_id = item
        try:
            loaded = audio.load(path)
        except audio.AudioError as e:
            _counter(f"rejected_{e.reason}").inc()
            yield beam.pvalue.TaggedOutput("rejected", {"file": path, "reason": e.reason, "detail": e.detail})
            return
        codes = self._embedder(tf.constant(loaded.waveform[None]))["embedding"].numpy()[0]  # [T, 128]
        _counter("files_embedded").inc()
        _counter("examples").inc(len(codes))
        _counter("audio_milliseconds").inc(int(1000 * loaded.seconds))
        yield beam.pvalue.TaggedOutput("stats", {"embedded_files": 1, "examples": len(codes),
                                                 "audio_seconds": loaded.seconds})
        for segment in segments(codes, video_id):
            yield segment | {"file": path}


class EmbedFiles(beam.PTransform):
    """(path, video_id) pairs -> `segments` (uint8 embeddings per <=9.6-s segment), `rejected`
    entries ({file, reason, detail}) and per-file `stats`. Files are spread over workers first."""

    def __init__(self, vggish_checkpoint: str, pca_params: str):
        super().__init__()
        self._files = (vggish_checkpoint, pca_params)

    def expand(self, files):
        return (files
                | "Spread" >> beam.Reshuffle()
                | "Embed" >> beam.ParDo(_EmbedFile(*self._files)).with_outputs("rejected", "stats", main="segments"))


class EncodeSegments(beam.PTransform):
    """Segment dicts -> (shard, (video_id, start, serialized SequenceExample)), with labels from the table."""

    def __init__(self, labels: dict[str, list[LabelRow]] | None, num_shards: int):
        super().__init__()
        self._labels, self._num_shards = labels or {}, num_shards

    def expand(self, segments_):
        labels, num_shards = self._labels, self._num_shards

        def encode(segment):
            ids = segment_labels(labels.get(segment[schema.VIDEO_ID_KEY], []), segment["start"], segment["end"])
            _counter("segments").inc()
            if not ids:
                _counter("unlabelled_segments").inc()
            record = schema.encode_sequence_example(
                segment[schema.VIDEO_ID_KEY].encode(), segment["start"], len(segment["embedding"]), ids,
                segment["embedding"], end_time_seconds=segment["end"])
            video_id = segment[schema.VIDEO_ID_KEY]
            return shard_of(video_id, num_shards), (video_id, segment["start"], record, bool(ids))

        return segments_ | "Encode" >> beam.Map(encode)


class WriteShards(beam.PTransform):
    """(shard, (video_id, start, record, labelled)) -> one TFRecord file per non-empty shard, sorted;
    emits {path, records, unlabelled} per file."""

    def __init__(self, out: str, num_shards: int):
        super().__init__()
        self._out, self._num_shards = out, num_shards

    def expand(self, keyed):
        out, num_shards = self._out, self._num_shards

        def write(item):
            import tensorflow as tf

            shard, rows = item
            rows = sorted(rows, key=lambda r: (r[0], r[1]))
            path = f"{out}/part-{shard:05d}-of-{num_shards:05d}.tfrecord"
            with tf.io.TFRecordWriter(path) as writer:
                for row in rows:
                    writer.write(row[2])
            _counter("shards_written").inc()
            return {"path": path, "records": len(rows), "unlabelled": sum(1 for r in rows if not r[3])}

        return keyed | "GroupByShard" >> beam.GroupByKey() | "Write" >> beam.Map(write)


class WriteManifest(beam.PTransform):
    """Shard entries, rejections and per-file stats -> OUT/manifest.json (last), returns its path."""

    def __init__(self, out: str, input_files: int, args: dict):
        super().__init__()
        self._out, self._input_files, self._args = out, input_files, args

    def expand(self, inputs):
        shards, rejected, stats = inputs
        out, input_files, args = self._out, self._input_files, self._args

        def write(_, shard_list, rejected_list, stats_list):
            import tensorflow as tf

            reasons = {r: 0 for r in REJECT_REASONS}
            for entry in rejected_list:
                reasons[entry["reason"]] += 1
            manifest = {
                "complete": True,
                "input_files": input_files,
                "embedded_files": sum(s["embedded_files"] for s in stats_list),
                "rejected": len(rejected_list),
                "rejected_reasons": reasons,
                "rejected_files": sorted(rejected_list, key=lambda e: e["file"]),
                "segments": sum(s["records"] for s in shard_list),
                "unlabelled_segments": sum(s["unlabelled"] for s in shard_list),
                "examples": sum(s["examples"] for s in stats_list),
                "audio_seconds": round(sum(s["audio_seconds"] for s in stats_list), 3),
                "segment_examples": SEGMENT_EXAMPLES,
                "example_seconds": audio.PARAMS.example_hop_seconds,
                "files": sorted(os.path.basename(s["path"]) for s in shard_list),
                "args": args,
            }
            path = f"{out}/manifest.json"
            with tf.io.gfile.GFile(path, "w") as f:
                f.write(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            return path

        side = beam.pvalue.AsList
        return (shards.pipeline
                | "Once" >> beam.Create([None])
                | "Write" >> beam.Map(write, side(shards), side(rejected), side(stats)))


# --- The job ----------------------------------------------------------------------------------------

def assign_video_ids(files: list[str]) -> tuple[list[tuple[str, str]], list[dict]]:
    """Sorted files -> (path, video_id) to embed, and duplicate_video_id rejections (the first file
    of a name keeps it)."""
    seen, keep, rejected = {}, [], []
    for path in files:
        video_id = video_id_of(path)
        if video_id in seen:
            rejected.append({"file": path, "reason": "duplicate_video_id",
                             "detail": f"{seen[video_id]} has the same name"})
        else:
            seen[video_id] = path
            keep.append((path, video_id))
    return keep, rejected


def prepare_output(config: EmbedConfig) -> None:
    import tensorflow as tf

    out = config.out
    existing = tf.io.gfile.glob(out + "/*") if tf.io.gfile.isdir(out) else []
    if existing and not config.overwrite:
        raise UsageError(f"{out} is not empty ({len(existing)} files); choose an empty directory or pass --overwrite")
    foreign = [p for p in existing if not (os.path.basename(p).startswith("part-") or p.endswith("manifest.json"))]
    if foreign:
        raise UsageError(f"--overwrite refused: {out} holds files this job did not write, e.g. {foreign[0]}")
    for path in existing:
        tf.io.gfile.remove(path)
    tf.io.gfile.makedirs(out)


def build_pipeline(pipeline: beam.Pipeline, config: EmbedConfig, files: list[str],
                   labels: dict | None, args: dict) -> None:
    """ListFiles -> EmbedFiles -> EncodeSegments -> WriteShards -> WriteManifest."""
    keep, duplicates = assign_video_ids(files)
    embedded = (pipeline
                | "ListFiles" >> beam.Create(keep)
                | "EmbedFiles" >> EmbedFiles(config.vggish_checkpoint, config.pca_params))
    shards = (embedded.segments
              | "EncodeSegments" >> EncodeSegments(labels, config.num_shards)
              | "WriteShards" >> WriteShards(config.out, config.num_shards))
    rejected = ((embedded.rejected, pipeline | "DuplicateNames" >> beam.Create(duplicates))
                | "AllRejected" >> beam.Flatten())
    _ = (shards, rejected, embedded.stats) | "WriteManifest" >> WriteManifest(config.out, len(files), args)


def run(argv: list[str] | None = None) -> dict:
    """Runs the job and returns the manifest. Raises UsageError before writing anything when the
    input matches nothing, a VGGish file or the labels are unusable, or the output is not empty."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from tfdata import vggish

    config, pipeline_args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        files = schema.list_files(config.input)
        vggish.read_pca_params(config.pca_params)
        vggish.read_checkpoint_shapes(config.vggish_checkpoint)
        labels = read_labels(config.labels, config.class_labels) if config.labels else None
    except (FileNotFoundError, OSError, ValueError) as e:  # includes vggish.CheckpointError
        raise UsageError(str(e)) from e
    prepare_output(config)
    args = dataclasses.asdict(config) | {"pipeline_args": pipeline_args}
    with beam.Pipeline(options=PipelineOptions(pipeline_args)) as pipeline:
        build_pipeline(pipeline, config, files, labels, args)
    import tensorflow as tf

    with tf.io.gfile.GFile(f"{config.out}/manifest.json") as f:
        return json.load(f)


def summary(manifest: dict) -> str:
    reasons = "".join(f", {n} {r}" for r, n in manifest["rejected_reasons"].items() if n)
    return (f"{manifest['input_files']} files: {manifest['embedded_files']} embedded "
            f"({manifest['audio_seconds']:.1f} s of audio, {manifest['examples']} examples, "
            f"{manifest['segments']} segments in {len(manifest['files'])} files), "
            f"{manifest['rejected']} rejected{reasons}")


def main(argv: list[str] | None = None) -> int:
    try:
        manifest = run(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(manifest))
    for entry in manifest["rejected_files"]:
        print(f"  rejected {entry['file']}: {entry['reason']} ({entry['detail']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

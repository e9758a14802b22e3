"""Original AudioSet TFRecords (or the research code's HDF5) -> validated, deduplicated, balanced shards.

    python -m beam_pipelines.build_shards --input 'bal_train/*.tfrecord' --output_dir OUT \
        [--holdout_fraction 0.1] [--layout balanced|plain] [--block_size 64] [--min_blocks_per_class 8] \
        [--seed 0] [--num_plain_shards 16] [--overwrite] [Beam pipeline options]

Writes, under OUT:
  train/class-CCC-SSSSS-of-NNNNN.tfrecord  balanced layout (default): per class C, records that are
                                           tfdata.schema.encode_block blocks of K clips that all carry C
  eval/part-IIIII-of-NNNNN.tfrecord        plain layout (--layout plain): the original records of the
                                           valid clips, each once, each file sorted by (video_id, start)
  holdout/part-IIIII-of-NNNNN.tfrecord     with --holdout_fraction F: clips whose sha256(video_id) falls
                                           below F (all clips of a video on one side), always plain
  rejected/rejected.jsonl                  one JSON line per rejected record: file, position, video_id,
                                           reason (tfdata.schema.REJECT_REASONS)
  manifest.json                            counts, reasons and file lists; written last

Every input record is either written or rejected with a reason: manifest.json's input_records equals
written_clips + rejected. A clip seen twice (same video_id and start_time_seconds) is kept at its
first (file, position) and its other copies are rejected as "duplicate".

Balanced layout: the clips of class C are put in a pseudo-random order (a hash of seed, class,
video_id and start time), cut into blocks of K; a class gets at least --min_blocks_per_class blocks
by going through its clips again in a fresh order (rare classes repeat, as the research code's
balanced sampler repeats them), and the last block is filled by continuing that cycle. A class gets
one file per --blocks_per_file blocks. Multi-label clips are stored once per label.

Completion: manifest.json is the last file written and carries "complete": true. A run killed part
way leaves no manifest, and the readers (tfdata.datasets.read_manifest, evaluate.py) refuse a
directory without a complete manifest of this schema version. OUT must be empty or absent; with
--overwrite an earlier output of this job is deleted first (a directory holding anything else is
refused). The same input and options give byte-identical shards on every runner.

Runs on Beam's DirectRunner by default (see DEFAULT_DIRECT_OPTIONS); pass ordinary pipeline options
for Dataflow, Flink or Spark (BUILD.md). All file I/O goes through Beam's FileSystems or tf.io.gfile,
so gs:// paths work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

# Beam, TensorFlow and the transforms are imported where they are used: --help does not wait for them.
# Chosen by measurement on 2 cores (BUILD.md, "Beam runner modes"); only used when the pipeline
# options name no runner (or the DirectRunner) and no running mode.
DEFAULT_DIRECT_OPTIONS = ["--direct_running_mode=multi_threading", f"--direct_num_workers={os.cpu_count() or 1}"]
OUTPUT_ENTRIES = ("manifest.json", "train", "eval", "holdout", "rejected", "_tmp")
SPILL_DIR = "_tmp"  # OUT/_tmp: shuffled clip parts, deleted before the manifest is written


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    input: str
    output_dir: str
    holdout_fraction: float = 0.0
    layout: str = "balanced"  # or "plain"
    block_size: int = 64  # clips per record of the balanced layout
    min_blocks_per_class: int = 8  # rare classes are cycled until they fill this many blocks
    blocks_per_file: int = 64  # a class gets one file per this many blocks of its own clips
    num_plain_shards: int = 16
    records_per_batch: int = 1000  # records parsed per vectorized call
    dedup_buckets: int = 64  # parallelism of the deduplication step
    buffer_mb: int = 256  # clip columns buffered per grouping step (and worker thread) before a shuffle
    shuffle_values: str = "files"  # or "beam": clip parts go through Beam's shuffle themselves
    seed: int = 0
    overwrite: bool = False

    @property
    def main_split(self) -> str:
        return "train" if self.layout == "balanced" else "eval"

    @property
    def out(self) -> str:
        return self.output_dir.rstrip("/")

    @property
    def spill_dir(self) -> str | None:
        return f"{self.out}/{SPILL_DIR}" if self.shuffle_values == "files" else None


class UsageError(Exception):
    """A problem the user must fix; reported as one line, nothing written."""


def parse_args(argv: list[str]) -> tuple[BuildConfig, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", required=True,
                        help="glob(s), comma-separated, of AudioSet TFRecords or of .h5/.hdf5 files")
    parser.add_argument("--output_dir", required=True, help="an empty or absent directory (local or gs://)")
    parser.add_argument("--holdout_fraction", type=float, default=0.0,
                        help="share of video ids held out as a plain split (stable hash of the video id)")
    parser.add_argument("--layout", choices=["balanced", "plain"], default="balanced",
                        help="balanced: train/ per-class blocks; plain: eval/ records, each clip once")
    for name, help_text in (("block_size", "clips per block (balanced layout)"),
                            ("min_blocks_per_class", "blocks of each class at least (rare classes repeat)"),
                            ("blocks_per_file", "blocks of a class per file"),
                            ("num_plain_shards", "files of a plain split"),
                            ("records_per_batch", "records parsed per vectorized call"),
                            ("dedup_buckets", "parallelism of deduplication"),
                            ("buffer_mb", "MB of clips each grouping step buffers per worker thread")):
        parser.add_argument(f"--{name}", type=int, default=getattr(BuildConfig, name), help=help_text)
    parser.add_argument("--seed", type=int, default=0, help="seed of the order of clips within a class")
    parser.add_argument("--shuffle_values", choices=["files", "beam"], default=BuildConfig.shuffle_values,
                        help="files: shuffle references to clip parts spilled under OUT/_tmp; "
                             "beam: shuffle the parts themselves")
    parser.add_argument("--overwrite", action="store_true", help="delete an earlier output of this job first")
    known, pipeline_args = parser.parse_known_args(argv)
    if not 0.0 <= known.holdout_fraction < 1.0:
        parser.error("--holdout_fraction must be in [0, 1)")
    for name in ("block_size", "min_blocks_per_class", "blocks_per_file", "num_plain_shards",
                 "records_per_batch", "dedup_buckets", "buffer_mb"):
        if getattr(known, name) < 1:
            parser.error(f"--{name} must be positive")
    if known.block_size > 255 * 255:
        parser.error("--block_size is too large")
    return BuildConfig(**vars(known)), pipeline_args


def pipeline_options(pipeline_args: list[str]):
    """The user's pipeline options, plus DEFAULT_DIRECT_OPTIONS when they run on the DirectRunner
    without choosing a running mode."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(pipeline_args)
    runner = options.view_as(StandardOptions).runner
    if runner in (None, "DirectRunner", "direct") and not any(
            a.startswith(("--direct_running_mode", "--direct_num_workers")) for a in pipeline_args):
        options = PipelineOptions(pipeline_args + DEFAULT_DIRECT_OPTIONS)
    return options


def input_files(pattern: str) -> tuple[list[str], list[int], bool]:
    """Sorted input files, their sizes, and whether they are HDF5. Fails fast when nothing matches."""
    from apache_beam.io import filesystems

    from tfdata import readers

    files = readers.list_files(pattern)  # FileNotFoundError naming the pattern
    hdf5 = [f.endswith((".h5", ".hdf5")) for f in files]
    if any(hdf5) and not all(hdf5):
        raise UsageError(f"--input {pattern!r} mixes HDF5 and TFRecord files")
    sizes = {}
    for result in filesystems.FileSystems.match([p.strip() for p in pattern.split(",")]):
        sizes.update((m.path, m.size_in_bytes) for m in result.metadata_list)
    missing = [f for f in files if f not in sizes]
    if missing:
        for result in filesystems.FileSystems.match(missing):
            sizes.update((m.path, m.size_in_bytes) for m in result.metadata_list)
    return files, [sizes.get(f, 1 << 20) for f in files], all(hdf5)


def prepare_output(config: BuildConfig, files: list[str]) -> None:
    """Refuses a non-empty OUT (or deletes an earlier output with --overwrite); creates the split dirs."""
    from apache_beam.io import filesystems

    from beam_pipelines import core

    out = config.out
    if "://" not in out and (os.path.exists(out) and not os.path.isdir(out)):
        raise UsageError(f"--output_dir {out} is a file, not a directory; choose a new directory")
    if "://" not in out and not os.path.isdir(out) and _existing_file_above(out):
        raise UsageError(f"--output_dir {out}: {_existing_file_above(out)} is a file, not a directory")
    if any(os.path.abspath(f).startswith(os.path.abspath(out) + os.sep) for f in files if "://" not in f) or any(
            f.startswith(out + "/") for f in files):
        raise UsageError(f"--input files lie inside --output_dir {out}")
    existing = [m.path for m in filesystems.FileSystems.match([out + "/**"])[0].metadata_list]
    if existing and not config.overwrite:
        raise UsageError(f"{out} is not empty ({len(existing)} files); choose an empty directory or pass --overwrite")
    if existing:
        foreign = [p for p in existing if p[len(out) + 1:].split("/")[0] not in OUTPUT_ENTRIES]
        if foreign:
            raise UsageError(f"--overwrite refused: {out} holds files this job did not write, e.g. {foreign[0]}")
        core.delete_tree(out)
    if "://" not in out:
        for name in (config.main_split, "holdout", "rejected"):
            os.makedirs(os.path.join(out, name), exist_ok=True)


def _existing_file_above(path: str) -> str | None:
    """The first existing non-directory among the parents of a local path, if any."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return parent if parent and not os.path.isdir(parent) else None


def build_pipeline(pipeline, config: BuildConfig, files: list[str], sizes: list[int], hdf5: bool, args: dict) -> None:
    """The job's graph: Read -> Parse -> Validate -> Deduplicate / Write* -> Summarize -> WriteManifest."""
    import apache_beam as beam

    from beam_pipelines import transforms

    out = config.out
    if hdf5:
        clips = pipeline | "ReadHdf5" >> transforms.ReadHdf5(files, config.records_per_batch)
        unreadable = pipeline | "NoUnreadableData" >> beam.Create([])
    else:
        read = pipeline | "ReadTFRecords" >> transforms.ReadTFRecords(files, sizes, config.records_per_batch)
        clips = read["batches"] | "Parse" >> transforms.ParseRecords()
        unreadable = read["unreadable"]
    checked = clips | "Validate" >> transforms.Validate(files, config.holdout_fraction)
    spill, buffer = config.spill_dir, config.buffer_mb << 20
    dedup = checked["valid"] | "Deduplicate" >> transforms.FindDuplicates(files, config.dedup_buckets, spill, buffer)
    to_write = (checked["valid"], dedup["duplicates"])
    if config.layout == "balanced":
        main_files = to_write | "WriteTrain" >> transforms.WriteBalancedShards(
            out, config.seed, config.block_size, config.min_blocks_per_class, config.blocks_per_file, spill, buffer)
    else:
        main_files = to_write | "WriteEval" >> transforms.WritePlainShards(
            out, "eval", config.num_plain_shards, holdout=False, spill_dir=spill, buffer_bytes=buffer)
    if config.holdout_fraction > 0:
        holdout_files = to_write | "WriteHoldout" >> transforms.WritePlainShards(
            out, "holdout", config.num_plain_shards, holdout=True, spill_dir=spill, buffer_bytes=buffer)
    else:
        holdout_files = pipeline | "NoHoldout" >> beam.Create([])
    unreadable_lists = unreadable | "UnreadableAsLists" >> beam.Map(lambda entry: [entry])
    unreadable_stats = unreadable | "UnreadableStats" >> beam.Map(_unreadable_stats)
    rejected_file = ((unreadable_lists, checked["rejected"], dedup["rejected"])
                     | "AllRejected" >> beam.Flatten()
                     | "WriteRejected" >> transforms.WriteRejected(out))
    stats = ((unreadable_stats, checked["stats"], dedup["stats"])
             | "AllStats" >> beam.Flatten()
             | "Summarize" >> transforms.Summarize())
    _ = (stats, main_files, holdout_files, rejected_file) | "WriteManifest" >> transforms.WriteManifest(
        out, args, config.main_split, config.layout, config.block_size, config.holdout_fraction > 0, spill)


def _unreadable_stats(entry: dict) -> dict:
    from beam_pipelines import core

    stats = core.empty_stats()
    stats["input_records"], stats["rejected_reasons"] = 1, {entry["reason"]: 1}
    return stats


def run(argv: list[str] | None = None) -> dict:
    """Runs the job and returns the manifest. Raises UsageError before writing anything when the
    input matches nothing, an HDF5 file has another layout, or the output directory is not empty."""
    config, pipeline_args = parse_args(sys.argv[1:] if argv is None else argv)
    import apache_beam as beam
    from apache_beam.io import filesystems

    from beam_pipelines import transforms

    try:
        files, sizes, hdf5 = input_files(config.input)
        if hdf5:
            transforms.hdf5_row_ranges(files, config.records_per_batch)  # checks every layout before writing
    except (FileNotFoundError, ValueError, OSError) as e:  # no match; an HDF5 file of another layout
        raise UsageError(str(e)) from e
    prepare_output(config, files)
    options = pipeline_options(pipeline_args)
    args = dataclasses.asdict(config) | {
        "input_files": len(files), "input_format": "hdf5" if hdf5 else "tfrecord",
        "pipeline_args": pipeline_args,
        "pipeline_options": {k: v for k, v in options.get_all_options(drop_default=True).items()}}
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, config, files, sizes, hdf5, json.loads(json.dumps(args, default=str)))
    with filesystems.FileSystems.open(f"{config.out}/manifest.json") as f:
        return json.loads(f.read())


def summary(manifest: dict) -> str:
    lines = [f"{manifest['input_records']} input records: {manifest['written_clips']} clips written, "
             f"{manifest['rejected']} rejected"
             + "".join(f", {n} {r}" for r, n in manifest["rejected_reasons"].items() if n)]
    for name, split in manifest["splits"].items():
        present = sum(1 for n in split["class_counts"] if n)
        extra = f", {split['blocks']} blocks of {split['block_size']}" if split["layout"] == "balanced" else ""
        lines.append(f"  {name:8s} {split['layout']:8s} {split['clips']:9d} clips, {present} classes, "
                     f"{len(split['files'])} files{extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        manifest = run(argv)
    except UsageError as e:
        from tfdata import readers

        print(f"error: {readers.error_message(e)}", file=sys.stderr)
        return 2
    print(summary(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())

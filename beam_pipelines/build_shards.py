"""Original AudioSet TFRecords (or the research code's HDF5) -> validated, class-balanced shards.

    python -m beam_pipelines.build_shards --input 'bal_train/*.tfrecord' --output_dir OUT \
        [--holdout_fraction 0.1] [--layout balanced|plain] [--block_size 64] [Beam pipeline options]

Writes, under OUT:
  train/class-CCC-SSSSS-of-NNNNN.tfrecord  balanced layout: per class, blocks of K clips (tfdata.schema)
  eval/part-*.tfrecord                      plain layout (--layout plain): each valid clip once, sorted
  holdout/part-*.tfrecord                   with --holdout_fraction: clips held out by a hash of video_id
  rejected/rejected-*.jsonl                 one line per rejected record: file, position, video id, reason
  manifest.json                             counts and file lists; written last, it marks a finished run

Readers refuse a directory without manifest.json, so a run killed part way is never mistaken for a
finished one. OUT must be empty or absent (or pass --overwrite, which deletes it first).
Any Beam runner works through the usual pipeline options (see BUILD.md for Dataflow).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import apache_beam as beam
from apache_beam.io import filesystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import transforms


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    input: str
    output_dir: str
    holdout_fraction: float = 0.0
    layout: str = "balanced"  # or "plain"
    block_size: int = 64  # clips per record of the balanced layout
    min_blocks_per_class: int = 8  # rare classes are cycled until they fill this many blocks
    blocks_per_file: int = 64  # a class gets one file per this many blocks
    num_plain_shards: int = 16
    records_per_batch: int = 1000  # clips parsed per vectorized call
    seed: int = 0
    overwrite: bool = False

    @property
    def main_split(self) -> str:
        return "train" if self.layout == "balanced" else "eval"


def parse_args(argv: list[str]) -> tuple[BuildConfig, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="glob(s) of AudioSet TFRecords, or .h5/.hdf5 file(s), comma-separated")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--holdout_fraction", type=float, default=0.0)
    parser.add_argument("--layout", choices=["balanced", "plain"], default="balanced")
    parser.add_argument("--block_size", type=int, default=BuildConfig.block_size)
    parser.add_argument("--min_blocks_per_class", type=int, default=BuildConfig.min_blocks_per_class)
    parser.add_argument("--blocks_per_file", type=int, default=BuildConfig.blocks_per_file)
    parser.add_argument("--num_plain_shards", type=int, default=BuildConfig.num_plain_shards)
    parser.add_argument("--records_per_batch", type=int, default=BuildConfig.records_per_batch)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="delete OUTPUT_DIR first")
    known, pipeline_args = parser.parse_known_args(argv)
    if not 0.0 <= known.holdout_fraction < 1.0:
        parser.error("--holdout_fraction must be in [0, 1)")
    for name in ("block_size", "min_blocks_per_class", "blocks_per_file", "num_plain_shards", "records_per_batch"):
        if getattr(known, name) < 1:
            parser.error(f"--{name} must be positive")
    return BuildConfig(**vars(known)), pipeline_args


class UsageError(Exception):
    """A problem the user must fix before anything is written."""


def prepare_output(config: BuildConfig) -> None:
    out = config.output_dir.rstrip("/")
    if filesystems.FileSystems.exists(out):
        existing = filesystems.FileSystems.match([out + "/**"])[0].metadata_list
        if existing and not config.overwrite:
            raise UsageError(f"{out} already holds {len(existing)} files; choose an empty directory or pass --overwrite")
        if existing:
            filesystems.FileSystems.delete([out])
    for split in (config.main_split, "holdout"):
        filesystems.FileSystems.mkdirs(f"{out}/{split}") if not filesystems.FileSystems.exists(f"{out}/{split}") else None


def input_files(config: BuildConfig) -> tuple[list[str], bool]:
    from tfdata import readers

    files = readers.list_files(config.input)
    hdf5 = [f.endswith((".h5", ".hdf5")) for f in files]
    if any(hdf5) and not all(hdf5):
        raise UsageError(f"--input {config.input!r} mixes HDF5 and TFRecord files")
    return files, all(hdf5)


def build_pipeline(pipeline: beam.Pipeline, config: BuildConfig, files: list[str], hdf5: bool, args: dict) -> None:
    out = config.output_dir.rstrip("/")
    read = pipeline | "Read" >> transforms.ReadClipBatches(files, config.records_per_batch, hdf5)
    parsed = read["batches"] | "Validate" >> transforms.ParseAndValidate()
    duplicates = parsed | "FindDuplicates" >> transforms.FindDuplicates()
    split = (parsed, duplicates) | "Split" >> transforms.SplitClips(config.holdout_fraction)
    stats = (split.stats, read["rejected"]) | "Summarize" >> transforms.Summarize()
    ((split.rejected, read["rejected"]) | "AllRejected" >> beam.Flatten()
     | "WriteRejected" >> beam.io.WriteToText(f"{out}/rejected/rejected", file_name_suffix=".jsonl"))
    if config.layout == "balanced":
        class_counts = stats | "TrainClassCounts" >> beam.Map(lambda s: s["train"])
        train_files = (split.train, class_counts) | "WriteTrain" >> transforms.WriteBalancedShards(
            out, config.seed, config.block_size, config.min_blocks_per_class, config.blocks_per_file)
    else:
        train_files = split.train | "WriteEval" >> transforms.WritePlainShards(out, "eval", config.num_plain_shards)
    holdout_files = split.holdout | "WriteHoldout" >> transforms.WritePlainShards(
        out, "holdout", config.num_plain_shards)
    _ = (stats, train_files, holdout_files) | "WriteManifest" >> transforms.WriteManifest(
        out, args, config.main_split, config.layout, config.block_size)


def run(argv: list[str] | None = None) -> dict:
    """Runs the job; returns the manifest. Raises UsageError / FileNotFoundError / ValueError on bad input."""
    import json

    config, pipeline_args = parse_args(sys.argv[1:] if argv is None else argv)
    files, hdf5 = input_files(config)
    if hdf5:
        for path in files:
            transforms.hdf5_row_ranges(path, config.records_per_batch)  # validates the layout before writing
    prepare_output(config)
    args = dataclasses.asdict(config) | {"pipeline_args": pipeline_args, "input_files": len(files)}
    options = PipelineOptions(pipeline_args)
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, config, files, hdf5, args)
    with filesystems.FileSystems.open(f"{config.output_dir.rstrip('/')}/manifest.json") as f:
        return json.loads(f.read())


def main(argv: list[str] | None = None) -> int:
    try:
        manifest = run(argv)
    except (UsageError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(manifest))
    return 0


def summary(manifest: dict) -> str:
    lines = [f"input records {manifest['input_records']}: written {manifest['written_clips']} clips, "
             f"rejected {manifest['rejected']}"
             + "".join(f", {r} {n}" for r, n in manifest["rejected_reasons"].items() if n)]
    for name, split in manifest["splits"].items():
        present = sum(1 for n in split["class_counts"] if n)
        extra = f", {split['blocks']} blocks of {split['block_size']}" if split["layout"] == "balanced" else ""
        lines.append(f"  {name:8s} {split['layout']:8s} {split['clips']:9d} clips, {present} classes, "
                     f"{len(split['files'])} files{extra}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

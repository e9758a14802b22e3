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

Completion: manifest.json is the last file written (under a temporary name, then renamed) and carries
"complete": true. A run killed part way leaves no manifest, and the readers (tfdata.datasets.read_manifest,
evaluate.py) refuse a directory without a complete manifest of this schema version. OUT must be empty
or absent; with --overwrite an earlier output of this job is deleted first (a directory holding
anything else is refused). OUT is a literal path (glob characters in it are plain characters), and
it may not be matched by --input. A run holds OUT/.build_shards.lock (created atomically, holding its
pid and host) from before it looks at OUT until it ends: a second run into the same OUT refuses, and
a lock left by a killed run is reported as stale (--overwrite takes it over). Object-store outputs
(gs://) are not locked. The same input and options give byte-identical shards on every runner.

Input paths that are not readable regular files (directory, FIFO, socket, dangling symlink, symlink
loop, unreadable file) are never opened: each counts as one input record rejected `unreadable_file`.

Runs on Beam's DirectRunner by default (see DEFAULT_DIRECT_OPTIONS); pass ordinary pipeline options
for Dataflow, Flink or Spark (BUILD.md). All file I/O goes through Beam's FileSystems or tf.io.gfile,
so gs:// paths work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import socket
import sys
import time
import uuid

from beam_pipelines import UsageError, absolute_paths, literal_pattern
from tfdata import schema

# Beam, TensorFlow and the stages are imported where they are used: --help does not wait for them.

# Chosen by measurement on 2 cores (docs/benchmarks.md, "Beam runner modes"); only used when the pipeline
# options name no runner (or the DirectRunner) and no running mode.
DEFAULT_DIRECT_OPTIONS = ["--direct_running_mode=multi_threading", f"--direct_num_workers={os.cpu_count() or 1}"]
LOCK_FILE = ".build_shards.lock"
OUTPUT_ENTRIES = (schema.MANIFEST_FILE, "train", "eval", "holdout", "rejected", "_tmp", LOCK_FILE)
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
    max_labels: int = schema.MAX_LABELS  # clips with more distinct labels are rejected too_many_labels

    @property
    def main_split(self) -> str:
        return "train" if self.layout == "balanced" else "eval"

    @property
    def out(self) -> str:
        return self.output_dir.rstrip("/")

    @property
    def spill_dir(self) -> str | None:
        return f"{self.out}/{SPILL_DIR}" if self.shuffle_values == "files" else None


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
                            ("max_labels", "reject clips with more distinct labels than this (too_many_labels)"),
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
                 "records_per_batch", "dedup_buckets", "buffer_mb", "max_labels"):
        if getattr(known, name) < 1:
            parser.error(f"--{name} must be positive")
    if known.block_size > 255 * 255:
        parser.error("--block_size is too large")
    if known.max_labels > schema.NUM_CLASSES:
        parser.error(f"--max_labels must be at most {schema.NUM_CLASSES}")
    known.input = absolute_paths(known.input)  # workers of a portable runner run elsewhere
    known.output_dir = absolute_paths(known.output_dir)
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


def input_files(pattern: str, output_dir: str | None = None) -> tuple[list[str], list[int], bool, list[dict]]:
    """Sorted readable input files, their sizes, whether they are HDF5, and an `unreadable_file`
    dead-letter entry per matched path that is not a readable regular file (never opened).
    Fails fast when nothing matches or when the pattern matches output_dir or files in it."""
    from apache_beam.io import filesystems

    from beam_pipelines import clips

    matched = schema.list_files(pattern)  # FileNotFoundError naming the pattern
    if output_dir:
        out = output_dir.rstrip("/")
        local_out = os.path.realpath(out) if "://" not in out else None
        inside = [f for f in matched if f.rstrip("/") == out or f.startswith(out + "/") or (
            local_out and "://" not in f and (os.path.realpath(f) + os.sep).startswith(local_out + os.sep))]
        if inside:
            raise UsageError(f"--input {pattern!r} matches the output directory or files in it ({inside[0]}); "
                             "narrow the glob or choose an --output_dir outside it (nothing was deleted)")
    unreadable, files = [], []
    for f in matched:
        problem = schema.file_problem(f)
        if problem:
            unreadable.append(clips.rejection(f, 0, None, "unreadable_file", problem))
        else:
            files.append(f)
    hdf5 = [f.endswith((".h5", ".hdf5")) for f in files]
    if any(hdf5) and not all(hdf5):
        raise UsageError(f"--input {pattern!r} mixes HDF5 and TFRecord files")
    sizes = {}
    if "://" in pattern:
        for result in filesystems.FileSystems.match([p.strip() for p in pattern.split(",")]):
            sizes.update((m.path, m.size_in_bytes) for m in result.metadata_list)
    else:
        sizes = {f: os.path.getsize(f) for f in files}
    return files, [sizes.get(f, 1 << 20) for f in files], bool(files) and all(hdf5), unreadable


def _existing_outputs(out: str) -> list[str]:
    """Files under OUT, found literally (OUT's name may hold glob characters), without the lock."""
    if "://" in out:
        from apache_beam.io import filesystems

        return [m.path for m in filesystems.FileSystems.match([literal_pattern(out) + "/**"])[0].metadata_list]
    found = []
    for root, dirs, names in os.walk(out):
        found += [os.path.join(root, n) for n in names if not (root == out and n == LOCK_FILE)]
    return found


def _ours(entry: str) -> bool:
    """Whether a top-level name in OUT is one this job writes (with the temporaries of a killed run)."""
    return entry in OUTPUT_ENTRIES or entry.startswith((schema.MANIFEST_FILE + ".tmp-", LOCK_FILE + "."))


def prepare_output(config: BuildConfig, files: list[str]) -> None:
    """Refuses a non-empty OUT (or deletes an earlier output with --overwrite); creates the split dirs."""
    from beam_pipelines import write

    out = config.out
    if any(os.path.abspath(f).startswith(os.path.abspath(out) + os.sep) for f in files if "://" not in f) or any(
            f.startswith(out + "/") for f in files):
        raise UsageError(f"--input files lie inside --output_dir {out}")
    existing = _existing_outputs(out)
    if existing and not config.overwrite:
        raise UsageError(f"{out} is not empty ({len(existing)} files); choose an empty directory or pass --overwrite")
    if existing:
        foreign = [p for p in existing if not _ours(p[len(out) + 1:].split("/")[0])]
        if foreign:
            raise UsageError(f"--overwrite refused: {out} holds files this job did not write, e.g. {foreign[0]}")
        if "://" in out:
            write.delete_tree(out)
        else:  # everything but the lock this run holds
            for name in os.listdir(out):
                path = os.path.join(out, name)
                if name != LOCK_FILE:
                    shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
    if "://" not in out:
        for name in (config.main_split, "holdout", "rejected"):
            os.makedirs(os.path.join(out, name), exist_ok=True)


def _process_start(pid: int) -> str | None:
    """The start time of a process (Linux /proc), to tell a live lock holder from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _holder_alive(holder: dict) -> bool | None:
    """Whether the process that wrote a lock still runs: True, False, or None (another host: unknown)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return None
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = _process_start(holder["pid"])
    return started is None or holder.get("process_start") in (None, started)


def acquire_lock(config: BuildConfig) -> str | None:
    """Creates OUT/.build_shards.lock atomically (a hard link of a complete file), or raises UsageError:
    OUT is used by a live run, or holds a stale lock of a killed run (taken over with --overwrite)."""
    out = config.out
    if "://" in out:
        return None
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, LOCK_FILE)
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = f"{path}.{uuid.uuid4().hex[:12]}"
    with open(tmp, "w") as f:
        json.dump(holder, f)
    try:
        for _ in range(2):
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                pass
            try:
                with open(path) as f:
                    held = json.load(f)
            except (OSError, ValueError):
                held = {}
            who = f"pid {held.get('pid', '?')} on {held.get('host', '?')}, started {held.get('started', '?')}"
            alive = _holder_alive(held)
            if alive is not False:
                state = "another build_shards run" if alive else "a build_shards run on another host (or unknown)"
                raise UsageError(f"{out} is locked by {state} ({who}); wait for it to finish or choose another "
                                 f"--output_dir (if no run uses it, delete {path})")
            if not config.overwrite:
                raise UsageError(f"{out} is not empty: it holds a stale lock {path} of a build_shards run that "
                                 f"was killed ({who}); pass --overwrite to replace that run's output")
            print(f"warning: taking over the stale lock {path} of a killed run ({who})", file=sys.stderr)
            os.unlink(path)
        raise UsageError(f"{out} is locked by another build_shards run that started just now")
    finally:
        os.unlink(tmp)


def _existing_file_above(path: str) -> str | None:
    """The first existing non-directory among the parents of a local path, if any."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return parent if parent and not os.path.isdir(parent) else None


def build_pipeline(pipeline, config: BuildConfig, files: list[str], sizes: list[int],
                   hdf5: bool, args: dict, unreadable_files: list[dict] = ()) -> None:
    """The job's graph: Read -> Parse -> Validate -> Deduplicate / Write* -> Summarize -> WriteManifest."""
    import apache_beam as beam

    from beam_pipelines import dedup, layout, manifest, read, validate, write

    out = config.out
    not_files = pipeline | "UnreadableFiles" >> beam.Create(list(unreadable_files))
    if hdf5:
        batches = pipeline | "ReadHdf5" >> read.ReadHdf5(files, config.records_per_batch)
        unreadable = not_files
    else:
        records = pipeline | "ReadTFRecords" >> read.ReadTFRecords(files, sizes, config.records_per_batch)
        batches = records["batches"] | "Parse" >> read.ParseRecords()
        unreadable = (records["unreadable"], not_files) | "AllUnreadable" >> beam.Flatten()
    checked = batches | "Validate" >> validate.Validate(files, config.holdout_fraction, config.max_labels)
    spill, buffer = config.spill_dir, config.buffer_mb << 20
    found = checked["valid"] | "Deduplicate" >> dedup.FindDuplicates(files, config.dedup_buckets, spill, buffer)
    to_write = (checked["valid"], found["duplicates"])
    if config.layout == "balanced":
        main_files = to_write | "WriteTrain" >> layout.WriteBalancedShards(
            out, config.seed, config.block_size, config.min_blocks_per_class, config.blocks_per_file, spill, buffer)
    else:
        main_files = to_write | "WriteEval" >> write.WritePlainShards(
            out, "eval", config.num_plain_shards, holdout=False, spill_dir=spill, buffer_bytes=buffer)
    if config.holdout_fraction > 0:
        holdout_files = to_write | "WriteHoldout" >> write.WritePlainShards(
            out, "holdout", config.num_plain_shards, holdout=True, spill_dir=spill, buffer_bytes=buffer)
    else:
        holdout_files = pipeline | "NoHoldout" >> beam.Create([])
    unreadable_lists = unreadable | "UnreadableAsLists" >> beam.Map(lambda entry: [entry])
    unreadable_stats = unreadable | "UnreadableStats" >> beam.Map(_unreadable_stats)
    rejected_file = ((unreadable_lists, checked["rejected"], found["rejected"])
                     | "AllRejected" >> beam.Flatten()
                     | "WriteRejected" >> write.WriteRejected(out))
    stats = ((unreadable_stats, checked["stats"], found["stats"])
             | "AllStats" >> beam.Flatten()
             | "Summarize" >> manifest.Summarize())
    _ = (stats, main_files, holdout_files, rejected_file) | "WriteManifest" >> manifest.WriteManifest(
        out, args, config.main_split, config.layout, config.block_size, config.holdout_fraction > 0, spill)


def _unreadable_stats(entry: dict) -> dict:
    from beam_pipelines import clips

    stats = clips.empty_stats()
    stats["input_records"], stats["rejected_reasons"] = 1, {entry["reason"]: 1}
    return stats


def run(argv: list[str] | None = None) -> dict:
    """Runs the job and returns the manifest. Raises UsageError before writing anything when the
    input matches nothing (or matches OUT), an HDF5 file has another layout, OUT is not empty, is
    locked by another run, or cannot be written."""
    config, pipeline_args = parse_args(sys.argv[1:] if argv is None else argv)
    import apache_beam as beam
    from apache_beam.io import filesystems

    from beam_pipelines import read

    out = config.out
    if "://" not in out and os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--output_dir {out} is a file, not a directory; choose a new directory")
    if "://" not in out and not os.path.isdir(out) and _existing_file_above(out):
        raise UsageError(f"cannot write to --output_dir {out}: {_existing_file_above(out)} is a file, not a directory")
    try:
        files, sizes, hdf5, unreadable = input_files(config.input, config.out)
        if hdf5:
            read.hdf5_row_ranges(files, config.records_per_batch)  # checks every layout before writing
    except (FileNotFoundError, ValueError, OSError) as e:  # no match; an HDF5 file of another layout
        raise UsageError(str(e)) from e
    created = "://" not in config.out and not os.path.lexists(config.out)
    lock = None
    try:
        lock = acquire_lock(config)
        prepare_output(config, files)
    except UsageError:
        _release(lock, config.out if created else None)
        raise
    except OSError as e:  # read-only or full disk, a file where a directory should be
        _release(lock, config.out if created else None)
        raise UsageError(f"cannot write to --output_dir {config.out}: {e.strerror or e}") from e
    try:
        options = pipeline_options(pipeline_args)
        args = dataclasses.asdict(config) | {
            "input_files": len(files) + len(unreadable), "input_format": "hdf5" if hdf5 else "tfrecord",
            "pipeline_args": pipeline_args,
            "pipeline_options": {k: v for k, v in options.get_all_options(drop_default=True).items()}}
        with beam.Pipeline(options=options) as pipeline:
            build_pipeline(pipeline, config, files, sizes, hdf5, json.loads(json.dumps(args, default=str)),
                           unreadable)
        with filesystems.FileSystems.open(f"{config.out}/{schema.MANIFEST_FILE}") as f:
            return json.loads(f.read())
    finally:
        _release(lock, None)


def _release(lock: str | None, created_dir: str | None) -> None:
    """Removes this run's lock, and OUT itself when this run created it and wrote nothing else."""
    if lock:
        try:
            os.unlink(lock)
        except OSError:
            pass
    if created_dir and not _existing_outputs(created_dir):
        shutil.rmtree(created_dir, ignore_errors=True)


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
        print(f"error: {schema.error_message(e)}", file=sys.stderr)
        return 2
    print(summary(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())

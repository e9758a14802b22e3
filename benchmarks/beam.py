"""Times build_shards against a single-process Python loop that does the same conversion.

    python -m benchmarks beam --num_clips N --work_dir DIR [--holdout_fraction 0.1] \
        [--beam_args='--direct_running_mode=multi_processing --direct_num_workers=2'] [--skip_naive] [--json OUT]

Generates synthetic AudioSet (python -m tfdata.synthetic, seed 0) into DIR/synthetic-N unless it is
there, then runs, one after the other, each in a fresh process:
  beam   python -m beam_pipelines.build_shards --input 'DIR/synthetic-N/*.tfrecord' --output_dir DIR/beam-N
  naive  python -m benchmarks.beam --naive ...: one Python loop (tf.data reads every file in
         order, readers.parse_records per 1,000 records, a set for duplicates, then per class the same
         blocks and files through the stage modules of beam_pipelines) into DIR/naive-N
and prints wall time, clips/s, peak memory (RSS of the largest process), the per-clip ratio, and
whether the two outputs are byte-identical (they must be: same functions, same order).
Wall times include interpreter and TensorFlow start-up (~5 s each), which the last column removes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time

from benchmarks import common

# numpy, TensorFlow and the Beam job's functions (beam_pipelines.clips, read, layout, write) are imported where they are used.
PYTHON = sys.executable


def ensure_synthetic(work_dir: str, num_clips: int) -> str:
    data = os.path.join(work_dir, f"synthetic-{num_clips}")
    marker = os.path.join(data, ".complete")
    if not os.path.exists(marker):
        print(f"generating {num_clips} synthetic clips in {data} ...", flush=True)
        subprocess.run([PYTHON, "-m", "tfdata.synthetic", "--output_dir", data, "--num_clips", str(num_clips),
                        "--seed", "0"], check=True)
        open(marker, "w").close()
    return data


@dataclasses.dataclass
class Timing:
    name: str
    seconds: float  # wall
    cpu_seconds: float  # user + system, of the process and the children it waited for
    peak_rss_gib: float


def timed(name: str, command: list[str]) -> Timing:
    print("$ " + " ".join(shlex.quote(c) for c in command), flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)  # usage of this child (max RSS over it and its children)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return Timing(name, seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2 ** 20)


def startup_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([PYTHON, "-c", "import apache_beam, tensorflow, beam_pipelines.build_shards"], check=True,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def output_digests(out: str) -> dict[str, str]:
    digests = {}
    for root, _, names in os.walk(out):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, out)
            if rel == "manifest.json":
                with open(path) as f:
                    manifest = json.load(f)
                manifest.pop("args")
                digests[rel] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
            else:
                with open(path, "rb") as f:
                    digests[rel] = hashlib.sha256(f.read()).hexdigest()
    return digests


# --- The naive loop ---------------------------------------------------------------------------------

def naive_build(input_pattern: str, output_dir: str, holdout_fraction: float, block_size: int, min_blocks: int,
                blocks_per_file: int, num_plain_shards: int, seed: int, batch_size: int = 1000) -> dict:
    """build_shards' conversion (TFRecord input) in one process, without Beam."""
    import numpy as np
    import tensorflow as tf

    from beam_pipelines import clips as shard_clips, layout, manifest as shard_manifest, read, write
    from tfdata import readers, schema

    files = readers.list_files(input_pattern)
    threshold = np.uint64(min(shard_clips.holdout_threshold(holdout_fraction), 2 ** 64 - 1))

    def record_batches():  # (file index, position, record) in file order, batch_size at a time
        file, position, serialized = [], [], []
        for index, path in enumerate(files):
            records = tf.data.TFRecordDataset(path).as_numpy_iterator()  # TensorFlow's C++ reader, in order
            for i, record in enumerate(records):
                file.append(index)
                position.append(i)
                serialized.append(record)
                if len(serialized) == batch_size:
                    yield file, position, serialized
                    file, position, serialized = [], [], []
        if serialized:
            yield file, position, serialized

    stats, rejected, seen, kept_parts = shard_clips.empty_stats(), [], set(), []
    for file, position, serialized in record_batches():
        batch = read.parse_batch(serialized, file, position)
        stats["input_records"] += len(file)
        bad = np.flatnonzero(batch["reason"] != shard_clips.OK)
        rejected += shard_clips.rejections(batch, bad, batch["reason"][bad], files)
        keep = batch["reason"] == shard_clips.OK
        for row in np.flatnonzero(keep).tolist():
            key = shard_clips.clip_key(batch["video_id"][row], float(batch["start_time_seconds"][row]))
            if key in seen:
                keep[row] = False
                rejected += shard_clips.rejections(batch, [row], ["duplicate"], files)
            seen.add(key)
        holdout = batch["video_hash"] < threshold if holdout_fraction > 0 else np.zeros(len(keep), bool)
        part = shard_clips.take(batch, keep, layout.BALANCED_COLUMNS + write.PLAIN_COLUMNS[:-1] + ("video_hash",))
        part["holdout"] = holdout[keep]
        part["record"] = np.where(holdout[keep], batch["record"][keep], None)  # only plain rows keep records
        kept_parts.append(part)
    for entry in rejected:
        stats["rejected_reasons"][entry["reason"]] = stats["rejected_reasons"].get(entry["reason"], 0) + 1
    clips = shard_clips.concat(kept_parts)
    labels = shard_clips.unpack_labels(clips["labels"])  # [N, 527]
    main = ~clips["holdout"]
    stats["main"] = labels[main].sum(axis=0, dtype=np.int64)
    stats["holdout"] = labels[~main].sum(axis=0, dtype=np.int64)
    stats["main_clips"], stats["holdout_clips"] = int(main.sum()), int((~main).sum())

    for name in ("train", "holdout", "rejected"):
        os.makedirs(os.path.join(output_dir, name), exist_ok=True)
    main_files = []
    for c in range(schema.NUM_CLASSES):
        rows = np.flatnonzero(labels[:, c] & main)
        main_files += layout.write_class_files(output_dir, c, shard_clips.take(clips, rows, layout.BALANCED_COLUMNS), seed,
                                             block_size, min_blocks, blocks_per_file)
    holdout_files = []
    if holdout_fraction > 0:
        shards = shard_clips.plain_shard(clips["video_hash"], num_plain_shards)
        for shard in range(num_plain_shards):
            rows = np.flatnonzero(clips["holdout"] & (shards == shard))
            if len(rows):
                name = write.plain_file_name("holdout", shard, num_plain_shards)
                write.write_plain_file(output_dir, name, shard_clips.take(clips, rows, write.PLAIN_COLUMNS))
                holdout_files.append(name)
    with open(os.path.join(output_dir, "rejected", "rejected.jsonl"), "wb") as f:
        f.write(write.rejected_lines(rejected))
    manifest = shard_manifest.build_manifest(stats, main_files, holdout_files, "rejected/rejected.jsonl",
                                             {"naive": True}, "train", "balanced", block_size,
                                             holdout_fraction > 0).to_dict()
    with open(os.path.join(output_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


# --- Command line -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = common.parser(__doc__)
    parser.add_argument("--num_clips", type=int, default=200_000)
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--holdout_fraction", type=float, default=0.1)
    parser.add_argument("--block_size", type=int, default=64)
    parser.add_argument("--beam_args", default="", help="extra build_shards arguments (pipeline options)")
    parser.add_argument("--skip_naive", action="store_true")
    parser.add_argument("--skip_beam", action="store_true")
    parser.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)  # internal: run the loop only
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output_dir", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.naive:
        naive_build(args.input, args.output_dir, args.holdout_fraction, args.block_size, 8, 64, 16, 0)
        return 0

    data = ensure_synthetic(args.work_dir, args.num_clips)
    pattern = os.path.join(data, "*.tfrecord")
    startup = startup_seconds()
    load = " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "?"
    results, outputs = [], {}
    for name, skip in (("beam", args.skip_beam), ("naive", args.skip_naive)):
        if skip:
            continue
        out = os.path.join(args.work_dir, f"{name}-{args.num_clips}")
        subprocess.run(["rm", "-rf", out], check=True)
        options = ["--holdout_fraction", str(args.holdout_fraction), "--block_size", str(args.block_size)]
        if name == "beam":
            command = [PYTHON, "-m", "beam_pipelines.build_shards", "--input", pattern, "--output_dir", out,
                       *options, *shlex.split(args.beam_args)]
        else:
            command = [PYTHON, "-m", "benchmarks.beam", "--naive", "--work_dir", args.work_dir,
                       "--input", pattern, "--output_dir", out, *options]
        results.append(timed(name, command))
        outputs[name] = out

    n = args.num_clips
    print(f"\n{n} clips, holdout {args.holdout_fraction}, block size {args.block_size}, "
          f"start-up (imports) {startup:.1f} s; beam args: {args.beam_args or '(defaults)'}")
    print(f"load average before: {load}")
    print(f"{'':6s} {'wall s':>7s} {'clips/s':>8s} {'us/clip':>8s} {'CPU s':>7s} {'peak GiB':>9s} "
          f"{'clips/s w/o start-up':>21s}")
    for r in results:
        print(f"{r.name:6s} {r.seconds:7.1f} {n / r.seconds:8.0f} {r.seconds / n * 1e6:8.1f} {r.cpu_seconds:7.1f} "
              f"{r.peak_rss_gib:9.2f} {n / max(r.seconds - startup, 1e-9):21.0f}")
    figures = {"startup_seconds": startup, "load_average_before": load,
               "runs": [dataclasses.asdict(r) | {"clips_per_s": n / r.seconds} for r in results]}
    if len(results) == 2:
        beam, naive = results
        print(f"per-clip ratio beam / naive: wall {beam.seconds / naive.seconds:.2f} "
              f"(without start-up {(beam.seconds - startup) / (naive.seconds - startup):.2f}), "
              f"CPU {beam.cpu_seconds / naive.cpu_seconds:.2f}")
        a, b = output_digests(outputs["beam"]), output_digests(outputs["naive"])
        same = a == b
        print(f"outputs byte-identical: {same} ({len(a)} files)" if same else
              f"outputs differ: {sorted(set(a) ^ set(b))[:5]} {[k for k in a if k in b and a[k] != b[k]][:5]}")
        figures["outputs_identical"] = same
    common.write_json(args.json, "beam", args, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())

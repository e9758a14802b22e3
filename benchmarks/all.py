"""Everything measured in one run, for a GPU machine lent for a few minutes: one JSON, one Markdown table.

    python -m benchmarks all --work_dir /tmp/bench --out bench_results [--tiny]
    (benchmarks/gpu.sh runs this after checking the install)

1. input pipeline: `train_dataset` (balanced sampling) clips/s pulled inside a tf.function, at 1, 2 and 8 reader threads;
2. training (benchmarks.training): `average_pooling` and `feature_attention` at global batch 500 and 4,096,
   real input against one cached batch, share of the matmul peak, for every setting of --precision,
   --jit_compile and --steps_per_execution (1, 8);
3. MirroredStrategy over 1, 2, ... N visible GPUs (scaling of feature_attention at batch 4,096 per GPU);
4. serving (benchmarks.serving), in a fresh process.
Without a GPU the 16-bit, XLA and multi-GPU parts are skipped and the results say so; --tiny shrinks every
size so that a test runs the whole script in about a minute.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from benchmarks import common

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class Sizes:
    num_clips: int = 20000
    batch_sizes: tuple = (500, 4096)
    hidden_units: int = 1024
    steps: int = 10
    warmup: int = 3
    input_batches: int = 200
    serving_requests: int = 1000
    serving_batch: int = 1024
    peak_seconds: float = 1.0


TINY = Sizes(num_clips=1000, batch_sizes=(32,), hidden_units=16, steps=2, warmup=2, input_batches=5,
             serving_requests=10, serving_batch=8, peak_seconds=0.05)


def input_pipeline(shards: str, sizes: Sizes) -> list[dict]:
    from benchmarks import input as input_benchmark
    from tfdata import datasets

    rows = []
    for threads in (1, 2, 8):
        dataset = datasets.train_dataset(shards, 500, seed=0, sampling="balanced", read_threads=threads)
        rows.append({"read_threads": threads, "clips_per_s": input_benchmark.clips_per_second_in_graph(
            dataset, sizes.input_batches, warmup=2, batch_size=500)})
    return rows


def training_settings(gpus: int) -> tuple[list[dict], list[str]]:
    settings, skipped = [], []
    for precision in PRECISIONS:
        for jit in (False, True):
            for spe in (1, 8):
                setting = {"precision": precision, "jit_compile": jit, "steps_per_execution": spe}
                if gpus or (precision == "float32" and not jit and spe == 1):
                    settings.append(setting)
                else:
                    skipped.append(f"training {setting}: no GPU")
    return settings, skipped


def training(work_dir: str, sizes: Sizes, setting: dict, batch_sizes, devices: list[str] | None = None) -> dict:
    from benchmarks import training as bench

    argv = ["--work_dir", work_dir, "--num_clips", str(sizes.num_clips), "--hidden_units", str(sizes.hidden_units),
            "--batch_sizes", ",".join(str(b) for b in batch_sizes), "--steps", str(sizes.steps),
            "--warmup", str(sizes.warmup), "--precision", setting["precision"],
            "--steps_per_execution", str(setting["steps_per_execution"]), "--peak_seconds", str(sizes.peak_seconds)]
    args = bench.parse_args(argv + (["--jit_compile"] if setting["jit_compile"] else []))
    return bench.run(args, devices)


def mirrored_scaling(work_dir: str, sizes: Sizes, gpus: int) -> list[dict]:
    rows = []
    for n in range(1, gpus + 1):
        batch = sizes.batch_sizes[-1] * n  # the same batch per GPU
        result = training(work_dir, sizes, {"precision": "float32", "jit_compile": False, "steps_per_execution": 1},
                          [batch], [f"/gpu:{i}" for i in range(n)])
        rows += [dict(r, gpus=n) for r in result["rows"] if r["model"] == "feature_attention"]
    return rows


def markdown(envelope: dict) -> str:
    results = envelope["results"]
    lines = [f"# Benchmarks ({envelope['date']}, {results['devices']})", ""]
    lines += ["| reader threads | clips/s |", "|---|---|"]
    lines += [f"| {r['read_threads']} | {r['clips_per_s']:,.0f} |" for r in results["input"]]
    lines += ["", "| precision | jit | steps/exec | model | batch | real ms | cached ms | input ratio | of peak |",
              "|---|---|---|---|---|---|---|---|---|"]
    for t in results["training"]:
        o = t["options"]
        for r in t["rows"]:
            lines.append(f"| {o['precision']} | {o['jit_compile']} | {o['steps_per_execution']} | {r['model']} | "
                         f"{r['batch_size']} | {r['real_step_ms']:.1f} | {r['cached_step_ms']:.1f} | "
                         f"{r['input_ratio']:.2f} | {100 * r['fraction_of_peak']:.0f}% |")
    if results["mirrored"]:
        lines += ["", "| GPUs | global batch | step ms | clips/s |", "|---|---|---|---|"]
        lines += [f"| {r['gpus']} | {r['batch_size']} | {r['real_step_ms']:.1f} | {r['clips_per_s']:,.0f} |"
                  for r in results["mirrored"]]
    lines += ["", "| signature | p50 ms | p99 ms | batch | clips/s | of peak |", "|---|---|---|---|---|---|"]
    for name, r in results["serving"]["signatures"].items():
        if r is None:
            lines.append(f"| {name} | skipped: not in the export | | | | |")
        else:
            share = f"{100 * r['fraction_of_peak']:.0f}%" if r["fraction_of_peak"] is not None else "-"
            lines.append(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['batch_size']} | "
                         f"{r['clips_per_s']:,.0f} | {share} |")
    lines += ["", "Skipped:"] + [f"- {s}" for s in results["skipped"]] if results["skipped"] else []
    return "\n".join(lines) + "\n"


def build_parser():
    p = common.parser(__doc__)
    p.add_argument("--work_dir", required=True, help="synthetic data and shards (built once)")
    p.add_argument("--out", required=True, help="directory for results.json (the envelope; --json: a copy) "
                                                "and results.md")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (tests)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = TINY if args.tiny else Sizes()

    import tensorflow as tf

    from benchmarks import input as input_benchmark
    from benchmarks import serving

    start = time.time()
    gpus = len(tf.config.list_physical_devices("GPU"))
    _, shards = input_benchmark.prepare(args.work_dir, sizes.num_clips)
    settings, skipped = training_settings(gpus)
    results = {"devices": f"{gpus} GPU(s)" if gpus else f"CPU only ({os.cpu_count()} cores)",
               "sizes": dataclasses.asdict(sizes), "skipped": skipped}
    print("input pipeline ...", flush=True)
    results["input"] = input_pipeline(shards, sizes)
    results["training"] = []
    for setting in settings:
        print(f"training {setting} ...", flush=True)
        results["training"].append(training(args.work_dir, sizes, setting, sizes.batch_sizes))
    if gpus:
        results["mirrored"] = mirrored_scaling(args.work_dir, sizes, gpus)
    else:
        results["mirrored"] = []
        results["skipped"].append("MirroredStrategy scaling over GPUs: no GPU")
    print("serving ...", flush=True)
    results["serving"] = serving.run(serving.build_parser().parse_args(
        ["--hidden_units", str(sizes.hidden_units), "--requests", str(sizes.serving_requests),
         "--batch_size", str(sizes.serving_batch), "--batches", "5", "--peak_seconds", str(sizes.peak_seconds)]))
    results["seconds"] = time.time() - start
    os.makedirs(args.out, exist_ok=True)
    envelope = common.write_json(os.path.join(args.out, "results.json"), "all", args, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(envelope, f, indent=1)
    table = markdown(envelope)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    print(table + f"\n{results['seconds']:.0f} s; wrote {args.out}/results.json and results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

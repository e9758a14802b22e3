"""Latency and throughput of an exported SavedModel's signatures, measured in a fresh process.

    python -m benchmarks serving [--model feature_attention] [--hidden_units 1024] [--requests 2000]
        [--batch_size 1024] [--batches 20] [--vggish_checkpoint CKPT --pca_params NPZ] [--json OUT.json]

Exports a freshly initialized model (export.py's float32 path, weights do not change the timing), then a new
Python process loads it with `tf.saved_model.load` (as TF Serving or predict.py would) and calls each
signature: `serving_default` (uint8 [B, 10, 128]), `serve_examples` (serialized SequenceExamples) and,
with Google's VGGish files, `serve_waveform` (10 s of 16-kHz audio; `models.exporting --audio` of the same
model, batches of at most 8). Prints batch-1 latency p50 / p99 (one call at a time) and
batch throughput, which it compares with a float32 `tf.matmul` loop of the model's own forward shapes
run in the same process (this machine's practical peak, benchmarks.flops); also how long the export took
to write and the fresh process to load it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import common

GOAL_P50_MS = 1.5  # batch-1 serving_default p50 (issue #17)


def build_parser() -> argparse.ArgumentParser:
    p = common.parser(__doc__)
    p.add_argument("--model", default="feature_attention")
    p.add_argument("--hidden_units", type=int, default=1024)
    p.add_argument("--requests", type=int, default=2000, help="timed batch-1 calls per signature")
    p.add_argument("--batch_size", type=int, default=1024)
    p.add_argument("--batches", type=int, default=20, help="timed batches per signature")
    p.add_argument("--peak_seconds", type=float, default=2.0, help="duration of the matmul peak loop")
    p.add_argument("--vggish_checkpoint", help="vggish_model.ckpt: also time serve_waveform")
    p.add_argument("--pca_params", help="vggish_pca_params.npz (with --vggish_checkpoint)")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    p.add_argument("--measure_audio", help=argparse.SUPPRESS)  # internal: the fresh process measuring this export
    return p


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _inputs(signature: str, batch: int):
    import numpy as np
    import tensorflow as tf

    from tfdata import schema, synthetic

    clips = next(synthetic.generate(synthetic.SyntheticConfig(num_clips=max(batch, 1), seed=0)))
    embedding = clips["embedding"][:batch]  # [B, 10, 128] uint8
    if signature == "serving_default":
        return {"embedding": tf.constant(embedding)}
    if signature == "serve_examples":
        return {"examples": tf.constant([schema.encode_sequence_example(b"x%d" % i, 0.0, schema.NUM_FRAMES, [0], e)
                                         for i, e in enumerate(embedding)])}
    rng = np.random.default_rng(0)  # serve_waveform: 10 s at 16 kHz
    return {"waveform": tf.constant(rng.uniform(-0.5, 0.5, [batch, 160_000]).astype(np.float32))}


def measure(export_dir: str, config: dict, args: argparse.Namespace, audio_dir: str | None = None) -> dict:
    """Runs in the fresh process: loads export_dir (and audio_dir, for serve_waveform) and times each signature."""
    import tensorflow as tf

    from benchmarks import flops
    from models import zoo

    start = time.perf_counter()
    plain = tf.saved_model.load(export_dir)
    load_s = time.perf_counter() - start
    models = {"plain": plain, "audio": tf.saved_model.load(audio_dir) if audio_dir else None}
    shapes = flops.matmul_shapes(zoo.build(zoo.ModelConfig(**config)), args.batch_size)
    flops_per_clip = flops.flops(shapes) / args.batch_size
    peak = flops.matmul_peak(shapes, args.peak_seconds)
    results = {"peak_flops": peak, "forward_flops_per_clip": flops_per_clip, "load_s": load_s, "signatures": {}}
    for name in ("serving_default", "serve_examples", "serve_waveform"):
        model = models["audio" if name == "serve_waveform" else "plain"]
        if model is None or name not in model.signatures:
            results["signatures"][name] = None
            continue
        fn = model.signatures[name]
        one = _inputs(name, 1)
        batch_size = args.batch_size if name != "serve_waveform" else min(args.batch_size, 8)
        many = _inputs(name, batch_size)
        for _ in range(20):
            fn(**one)["scores"].numpy()
        times = []
        for _ in range(args.requests if name != "serve_waveform" else max(args.requests // 20, 10)):
            start = time.perf_counter()
            fn(**one)["scores"].numpy()
            times.append(time.perf_counter() - start)
        fn(**many)["scores"].numpy()
        start = time.perf_counter()
        for _ in range(args.batches):
            fn(**many)["scores"].numpy()
        clips_per_s = args.batches * batch_size / (time.perf_counter() - start)
        results["signatures"][name] = {
            "p50_ms": 1e3 * _percentile(times, 50), "p99_ms": 1e3 * _percentile(times, 99),
            "batch_size": batch_size, "clips_per_s": clips_per_s,
            "fraction_of_peak": clips_per_s * flops_per_clip / peak if name != "serve_waveform" else None}
    return results


def run(args: argparse.Namespace) -> dict:
    """Exports the model here, measures it in a fresh process, returns the figures."""
    import tf_keras as keras

    from models import exporting, zoo
    from tfdata import synthetic

    config = {"name": args.model, "hidden_units": args.hidden_units}
    with tempfile.TemporaryDirectory() as tmp:
        labels = os.path.join(tmp, exporting.CLASS_LABELS_ASSET)
        with open(labels, "w") as f:
            f.write(synthetic.class_labels().to_csv())
        keras.utils.set_random_seed(0)
        model = zoo.build(zoo.ModelConfig(**config))
        start = time.perf_counter()
        export_dir = exporting.export(model, os.path.join(tmp, "saved_model"), labels)
        export_s = time.perf_counter() - start  # the first export in this process
        audio = []
        if args.vggish_checkpoint:
            audio = ["--measure_audio", exporting.export_audio(export_dir, args.vggish_checkpoint, args.pca_params,
                                                               os.path.join(tmp, "audio_model"))]
        out = os.path.join(tmp, "figures.json")
        cmd = [sys.executable, "-m", "benchmarks.serving", "--measure", export_dir, "--json", out,
               "--model", args.model, "--hidden_units", str(args.hidden_units), "--requests", str(args.requests),
               "--batch_size", str(args.batch_size), "--batches", str(args.batches),
               "--peak_seconds", str(args.peak_seconds)] + audio
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))] + [os.environ.get("PYTHONPATH", "")]))
        subprocess.run(cmd, check=True, env=env)
        with open(out) as f:
            return json.load(f) | {"model": config, "export_s": export_s}


def report(results: dict) -> str:
    lines = [f"model {results['model']['name']} ({results['model']['hidden_units']} units): "
             f"{results['forward_flops_per_clip'] / 1e6:.1f} MFLOP per 10-frame clip (matmuls); "
             f"matmul peak on its shapes {results['peak_flops'] / 1e9:.1f} GFLOP/s",
             f"export (SavedModel written) {results['export_s']:.2f} s; load in a fresh process {results['load_s']:.2f} s",
             f"{'signature':16s} {'p50 ms':>8s} {'p99 ms':>8s} {'batch':>6s} {'clips/s':>10s} {'of peak':>8s}"]
    for name, r in results["signatures"].items():
        if r is None:
            lines.append(f"{name:16s} skipped: no --vggish_checkpoint" if name == "serve_waveform"
                         else f"{name:16s} skipped: not in this export")
            continue
        share = f"{100 * r['fraction_of_peak']:.0f}%" if r["fraction_of_peak"] is not None else "-"
        lines.append(f"{name:16s} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['batch_size']:6d} "
                     f"{r['clips_per_s']:10,.0f} {share:>8s}")
    p50 = results["signatures"]["serving_default"]["p50_ms"]
    lines.append(f"serving_default batch-1 p50 {p50:.2f} ms (goal < {GOAL_P50_MS} ms: "
                 f"{'met' if p50 < GOAL_P50_MS else 'NOT met'})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.measure:  # the fresh process: its figures go to --json as they are, for run() to read
        results = measure(args.measure, {"name": args.model, "hidden_units": args.hidden_units}, args,
                          args.measure_audio)
        with open(args.json, "w") as f:
            json.dump(results, f)
        return 0
    results = run(args)
    print(report(results))
    common.write_json(args.json, "serving", args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of the VGGish front end + network (+ postprocessing) on this machine, in seconds of audio per second.

    python -m benchmarks vggish [--seconds 60] [--batch 1] [--repeats 3] [--threads 0]
        [--vggish_checkpoint CKPT --pca_params NPZ] [--json OUT.json]

Times tfdata.vggish.Embedder (what embed_audio and serve_waveform run, resampling excluded) on
noise at 16 kHz, after one warm-up call; the weights are random unless the released files are given
(the speed does not depend on them). Prints one JSON line (the benchmarks.common envelope).
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks import common

# TensorFlow and VGGish are imported where they are used: --help does not wait for them.


def build(checkpoint: str | None, pca_params: str | None):
    """tfdata.vggish.Embedder from Google's files, or with random weights and an identity PCA."""
    import numpy as np

    from tfdata import vggish

    if checkpoint:
        return vggish.Embedder.from_files(checkpoint, pca_params)
    net = vggish.VGGish(name="vggish")
    net.build_weights()
    return vggish.Embedder(net, vggish.Postprocess(np.eye(128), np.zeros(128), name="postprocess"))


def measure(embedder, seconds: float, batch: int, repeats: int) -> dict:
    import numpy as np
    import tensorflow as tf

    from tfdata import audio

    rng = np.random.default_rng(0)
    waveform = tf.constant(rng.uniform(-0.5, 0.5, [batch, int(seconds * audio.PARAMS.sample_rate)]), tf.float32)
    front_end = tf.function(lambda w: audio.log_mel_examples(w))
    embedder(waveform), front_end(waveform)  # trace and warm up
    timings, cpu = {}, {}
    for name, fn in (("front_end", front_end), ("front_end_vggish", embedder)):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            out = fn(waveform)
        _ = (out["embedding"] if isinstance(out, dict) else out).numpy()
        timings[name] = (time.perf_counter() - start) / repeats
        cpu[name] = (time.process_time() - start_cpu) / repeats  # all threads of this process
    audio_seconds = batch * seconds
    return {
        "audio_seconds_per_call": audio_seconds, "batch": batch, "repeats": repeats,
        "examples_per_call": batch * audio.PARAMS.num_examples(int(seconds * audio.PARAMS.sample_rate)),
        "front_end_x_realtime": round(audio_seconds / timings["front_end"], 1),
        "x_realtime": round(audio_seconds / timings["front_end_vggish"], 1),
        "seconds_per_call": round(timings["front_end_vggish"], 3),
        # Audio seconds per CPU second of this process: what a busy machine cannot hide.
        "audio_seconds_per_cpu_second": round(audio_seconds / cpu["front_end_vggish"], 1),
    }


def build_parser():
    parser = common.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each waveform")
    parser.add_argument("--batch", type=int, default=1, help="waveforms per call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: all cores)")
    parser.add_argument("--vggish_checkpoint")
    parser.add_argument("--pca_params")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.vggish_checkpoint) != bool(args.pca_params):
        parser.error("give both --vggish_checkpoint and --pca_params, or neither")
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    result = measure(build(args.vggish_checkpoint, args.pca_params), args.seconds, args.batch, args.repeats)
    out = common.write_json(args.json, "vggish", args, result)
    print(json.dumps(out))
    print(f"front end + VGGish: {result['x_realtime']}x real time ({result['audio_seconds_per_call']:.0f} s of audio "
          f"in {result['seconds_per_call']} s; front end alone {result['front_end_x_realtime']}x) on "
          f"{out['machine']['cpus']} CPUs; {result['audio_seconds_per_cpu_second']} s of audio per CPU second",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One command for every benchmark: python -m benchmarks NAME [flags] (python -m benchmarks NAME --help).

Each NAME is also a module (python -m benchmarks.NAME); every one writes the same JSON envelope with --json
(benchmarks.common).
"""

from __future__ import annotations

import argparse
import importlib
import sys

NAMES = {
    "input": "tf.data from Beam shards against the research code's in-RAM generator; batched parse",
    "beam": "build_shards against a single-process Python loop doing the same conversion",
    "training": "training step time per model, real input against a cached batch; --throughput per model",
    "serving": "latency and throughput of an exported SavedModel's signatures, in a fresh process",
    "vggish": "the VGGish front end + network, in seconds of audio per second",
    "all": "everything in one run (benchmarks/gpu.sh): one JSON, one Markdown table",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(f"  {name:9s} {text}" for name, text in NAMES.items()))
    parser.add_argument("name", choices=NAMES, help="the benchmark")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its flags")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return importlib.import_module(f"benchmarks.{args.name}").main(args.args)


if __name__ == "__main__":
    sys.exit(main())

"""What every benchmark shares: its argument parser and its JSON file.

Every benchmark's --json OUT writes one envelope:
    {"benchmark": NAME, "date": "YYYY-MM-DD HH:MM UTC", "machine": {...}, "config": {flags}, "results": ...}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

# Flags that are not part of a benchmark's configuration: --json, and those of the processes that serving
# and beam start themselves (hidden from --help).
INTERNAL_FLAGS = ("json", "measure", "measure_audio", "naive", "input", "output_dir")


def parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's parser: its module docstring's first paragraph, defaults in --help, no prefix matching,
    and --json."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--json", help="also write the figures here, as a benchmarks.common envelope")
    return p


def machine() -> dict:
    """Where the figures were measured (TensorFlow's version and GPUs only when the benchmark loaded it)."""
    tf = sys.modules.get("tensorflow")
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "tensorflow": tf.__version__ if tf else None,
            "gpus": len(tf.config.list_physical_devices("GPU")) if tf else None,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def envelope(name: str, config: dict, results) -> dict:
    return {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
            "config": config, "results": results}


def config_of(args: argparse.Namespace) -> dict:
    """The flags of a run (None: not given), without INTERNAL_FLAGS."""
    return {k: v for k, v in vars(args).items() if k not in INTERNAL_FLAGS}


def write_json(path: str | None, name: str, args: argparse.Namespace, results) -> dict:
    """The envelope of a run; written to `path` when one is given."""
    out = envelope(name, config_of(args), results)
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
    return out

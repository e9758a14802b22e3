#!/usr/bin/env bash
# Everything in one run on a lent GPU machine (BUILD.md, "Benchmarks on a GPU machine"):
#   pip install -e '.[gpu]' && benchmarks/gpu.sh [OUT_DIR] [--tiny]
# Writes OUT_DIR/results.json and OUT_DIR/results.md (default bench_results/). Without a GPU it runs
# the CPU parts and lists what it skipped. Downloads nothing: the data is synthetic.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench_results}
shift || true
PY=${PY:-python}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
"$PY" -c "import tensorflow as tf; print('TensorFlow', tf.__version__, 'GPUs:', tf.config.list_physical_devices('GPU'))"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "nvidia-smi: none"
WORK=${WORK:-$(mktemp -d)}
exec "$PY" -m benchmarks all --work_dir "$WORK" --out "$OUT" "$@"

"""benchmarks/gpu.sh (benchmarks.all) end to end in its CPU mode with tiny sizes."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import all as all_benchmarks
from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_gpu_script_runs_everything_on_cpu_and_says_what_it_skipped(tmp_path, benchmark_work):
    env = dict(os.environ, PY=sys.executable, WORK=str(benchmark_work), PYTHONPATH=str(REPO_ROOT),
               CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu.sh"), str(tmp_path / "out"), "--tiny"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    envelope = json.loads((tmp_path / "out" / "results.json").read_text())
    assert envelope["benchmark"] == "all" and envelope["config"]["tiny"] is True and envelope["machine"]["gpus"] == 0
    results = envelope["results"]
    assert [r["read_threads"] for r in results["input"]] == [1, 2, 8]
    assert [t["options"]["precision"] for t in results["training"]] == ["float32"]
    assert {r["model"] for r in results["training"][0]["rows"]} == {"average_pooling", "feature_attention"}
    assert results["mirrored"] == [] and "MirroredStrategy scaling over GPUs: no GPU" in results["skipped"]
    assert len(results["skipped"]) == 3 * 2 * 2 - 1 + 1  # every other training setting, and the scaling
    assert results["serving"]["signatures"]["serving_default"]["p50_ms"] > 0
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| reader threads |" in table and "input ratio" in table and "Skipped:" in table


def test_every_training_setting_runs_on_a_gpu_and_only_the_plain_one_without():
    on_gpu, skipped = all_benchmarks.training_settings(gpus=1)
    assert len(on_gpu) == 12 and not skipped
    on_cpu, skipped = all_benchmarks.training_settings(gpus=0)
    assert on_cpu == [{"precision": "float32", "jit_compile": False, "steps_per_execution": 1}] and len(skipped) == 11

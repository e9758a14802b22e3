"""Every command-line tool: --help answers fast, without TensorFlow, with defaults; no prefix matching."""

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

# Each tool as the README runs it: a script or a module.
TOOLS = [["train.py"], ["evaluate.py"], ["predict.py"], ["-m", "beam_pipelines.build_shards"],
         ["-m", "tfdata.summarize"], ["-m", "tfdata.synthetic"], ["-m", "experiments.quality"], ["-m", "models.exporting"]]
# Runs a tool's main with the given argv, then reports whether TensorFlow (or Beam) was imported.
WRAPPER = """
import runpy, sys
tool, argv = sys.argv[1:2] if sys.argv[1] != "-m" else sys.argv[1:3], sys.argv[3 if sys.argv[1] == "-m" else 2:]
sys.argv = [tool[-1], *argv]
try:
    if tool[0] == "-m":
        runpy.run_module(tool[1], run_name="__main__", alter_sys=True)
    else:
        sys.path.insert(0, "."); runpy.run_path(tool[0], run_name="__main__")
except SystemExit as e:
    code = e.code
print("IMPORTED:", "tensorflow" in sys.modules, "apache_beam" in sys.modules, file=sys.stderr)
sys.exit(code)
"""


def _run(tool, *argv):
    return subprocess.run([sys.executable, "-c", WRAPPER, *tool, *argv], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t[-1])
def test_help_shows_defaults_without_importing_tensorflow_or_beam(tool):
    # What made --help slow was importing TensorFlow (seconds); a wall-clock bound would flake under load.
    result = _run(tool, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "IMPORTED: False False" in result.stderr, result.stderr[-2000:]
    assert "usage:" in result.stdout
    if tool not in (["-m", "models.exporting"],):  # its options have no defaults
        assert "(default: " in result.stdout


@pytest.mark.parametrize("name", ["input", "beam", "training", "serving", "vggish", "all"])
def test_every_benchmark_answers_help_through_the_one_cli_without_tensorflow(name):
    result = _run(["-m", "benchmarks"], name, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "IMPORTED: False False" in result.stderr, result.stderr[-2000:]
    assert "usage:" in result.stdout and "--json" in result.stdout and "(default: " in result.stdout


def test_train_help_lists_the_defaults_of_train_config():
    result = _run(["train.py"], "--help")
    assert "(default: 0.003)" in result.stdout and "(default: cosine)" in result.stdout
    assert "feature_attention" in result.stdout and "multi_head_attention" in result.stdout


@pytest.mark.parametrize("tool, argv, unknown", [
    (["train.py"], ["--train_data", "s", "--model_dir", "m", "--lr", "0.001"], "--lr"),
    (["evaluate.py"], ["--saved", "m", "--data", "d", "--output_dir", "o"], "--saved"),
    (["predict.py"], ["--saved_model", "m", "--input", "i", "--top", "3"], "--top"),
    (["-m", "tfdata.summarize"], ["x", "--class", "c"], "--class"),
    (["-m", "models.exporting"], ["--average", "a", "--output", "x", "--out", "o"], "--out"),
], ids=["train", "evaluate", "predict", "summarize", "exporting"])
def test_abbreviations_are_not_taken_for_other_flags(tool, argv, unknown):
    """`train.py --lr 0.001` was taken as `--lr_schedule 0.001`; now it is an unknown argument."""
    result = _run(tool, *argv)
    assert result.returncode == 2
    assert "unrecognized arguments" in result.stderr and unknown in result.stderr, result.stderr[-2000:]
    assert "IMPORTED: False False" in result.stderr


def test_build_shards_does_not_take_a_prefix_of_its_own_flags():
    """Unknown flags go to Beam's pipeline options; --holdout must not become --holdout_fraction."""
    from beam_pipelines import build_shards

    config, rest = build_shards.parse_args(["--input", "x", "--output_dir", "o", "--holdout", "0.5"])
    assert config.holdout_fraction == 0.0 and rest == ["--holdout", "0.5"]


def test_train_flags_are_the_fields_of_train_config_with_their_defaults():
    """One default, one place: every TrainConfig and ModelConfig field is a flag (ModelConfig.name is --model)."""
    import dataclasses

    from models.config import ModelConfig, TrainConfig, build_parser, parse_args

    assert parse_args(["--train_data", "s", "--model_dir", "m"]) == TrainConfig("s", "m")
    assert TrainConfig("s", "m").model == ModelConfig()  # the recipe's trunk is ModelConfig's default
    dests = {a.dest for a in build_parser()._actions} - {"help", "mixed_precision"}
    fields = {f.name for f in dataclasses.fields(TrainConfig)} | {f.name for f in dataclasses.fields(ModelConfig)}
    assert dests == fields - {"name"}

"""The README's quick start on real data, run as written (on a slice of bal_train, with a short training)."""

import os
import re
import shlex
import subprocess

import pytest

from tests import in_process
from tests.conftest import REPO_ROOT, SHARED_AUDIOSET

HEADING = "## Quick start on real data"


def quickstart_commands() -> list[str]:
    """The commands of the README's quick start block: `D=...` and the `.venv/bin/python` lines."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text[text.index(HEADING):].split("```")[1]
    commands = [line.split("#")[0].strip() for line in block.replace("\\\n", " ").splitlines()]
    return [c for c in commands if c]


def test_the_quick_start_is_six_commands_whose_outputs_git_ignores():
    commands = quickstart_commands()
    assert commands[0].startswith("D=") and commands[1].startswith("E=") and len(commands) == 8, commands
    tools = [shlex.split(c)[1:3] for c in commands[2:]]
    assert tools == [["-m", "tfdata.summarize"], ["-m", "beam_pipelines.build_shards"],
                     ["-m", "beam_pipelines.build_shards"], ["train.py", "--train_data"],
                     ["evaluate.py", "--saved_model"], ["predict.py", "--saved_model"]]
    train = shlex.split(commands[5])
    assert "--steps" not in train and "--eval_data" in train  # the defaults are the recipe
    ignored = subprocess.run(["git", "check-ignore", "quickstart/shards", "quickstart/model"], cwd=REPO_ROOT,
                             capture_output=True, text=True)
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.stdout.split() == ["quickstart/shards", "quickstart/model"]


def test_makefile_demo_real_runs_the_quick_start_commands():
    recipe = (REPO_ROOT / "Makefile").read_text().split("\ndemo-real:")[1].split("\n\n")[0]
    for command in quickstart_commands()[2:]:
        tool = shlex.split(command)[1:3]
        assert " ".join(tool) in recipe, tool


def _expanded_commands(script: str, cwd) -> list[list[str]]:
    """Each python command of `script` as bash expands it (variables, quoting), with `.venv/bin/python` recorded
    instead of run: [[tool, arg, ...], ...]."""
    recorder = "py() { printf '%s\\0' \"$@\"; printf '\\1\\0'; }\n"
    result = subprocess.run(["bash", "-c", recorder + script.replace(".venv/bin/python", "py")], cwd=cwd,
                            capture_output=True, check=True)
    words = result.stdout.decode().split("\0")[:-1]
    commands, command = [], []
    for word in words:
        if word == "\1":
            commands.append(command)
            command = []
        else:
            command.append(word)
    return commands


@pytest.mark.slow
def test_quick_start_as_written_on_a_slice_of_bal_train(tmp_path, monkeypatch):
    """bash expands the block as written; each tool then runs in this process (TensorFlow loads once; that the
    tools run as scripts and modules is test_entry_points'), in order, each needing the one before."""
    import evaluate
    import predict
    import train
    from beam_pipelines import build_shards
    from tfdata import summarize

    if not (SHARED_AUDIOSET / "eval_a").is_dir():
        pytest.skip(f"real AudioSet data not found at {SHARED_AUDIOSET}")
    data = tmp_path / "audioset"
    for split, files in (("bal_train", 50), ("eval_a", 30)):  # about 270 and 80 clips
        (data / split).mkdir(parents=True)
        for path in sorted((SHARED_AUDIOSET / split).glob("*.tfrecord"))[:files]:
            os.symlink(path, data / split / path.name)
    os.symlink(SHARED_AUDIOSET / "class_labels_indices.csv", data / "class_labels_indices.csv")
    script = "\n".join(["set -e"] + [re.sub(r"--eval_every \d+", "--eval_every 2 --steps 2", c)
                                      for c in [f"D={shlex.quote(str(data))}"] + quickstart_commands()[1:]])
    mains = {("-m", "tfdata.summarize"): summarize.main, ("-m", "beam_pipelines.build_shards"): build_shards.main,
             ("train.py",): train.main, ("evaluate.py",): evaluate.main, ("predict.py",): predict.main}
    monkeypatch.chdir(tmp_path)
    commands = _expanded_commands(script, tmp_path)
    assert len(commands) == len(quickstart_commands()) - 2  # all but D= and E=
    out = ""
    for command in commands:
        head = tuple(command[:2]) if command[0] == "-m" else tuple(command[:1])
        run = in_process.run(mains[head], command[len(head):])
        out += run.stdout
        assert run.returncode == 0, command + [run.stdout[-3000:], run.stderr[-3000:]]
    assert re.search(r"^clips: \d+", out, re.M) and "clips written" in out, out
    assert "epoch 1/1  step 2/2" in out and re.search(r"^mAP 0\.\d+", out, re.M), out
    assert (tmp_path / "quickstart" / "predictions.csv").read_text().startswith("video_id,start_time_seconds,")
    assert len([l for l in out.splitlines() if "[true: " in l]) == 5

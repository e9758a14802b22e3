"""The quality runs on real AudioSet: research models and our recipe, trained and evaluated the same way.

    python -m experiments.quality --input '../shared/data/audioset/bal_train/*.tfrecord' \
        --eval_input '../shared/data/audioset/eval_a/*.tfrecord' --work_dir quality \
        [--runs average_pooling,max_pooling,single_attention,multi_attention,feature_attention,best,ensemble] \
        [--steps N] [--eval_every 100] [--snapshots 5]

1. `beam_pipelines.build_shards` into WORK/shards, all of --input for training, and --eval_input as
   plain shards into WORK/eval_shards (once each: a work dir whose shards are of other input is refused);
   without --eval_input, a holdout of --input
   (--holdout_fraction, a stable split by a hash of video_id) instead, 2. for every run `train.py` with
   `--eval_data` the validation clips (validation mAP every --eval_every steps), 3. `evaluate.py` on
   them, with a bootstrap 95% interval of mAP, for the final export and for the average of the last
   --snapshots checkpoints (the research code's snapshot averaging). Each run is a subprocess running
   exactly the documented commands, printed before it starts. Writes WORK/results/RUN.json (the small
   summary committed under experiments/results/) and WORK/results.md (a table).
A run named after a research model uses the research recipe (class-balanced batches, no mixup, no weight
averaging, no input or frame dropout, no weight decay); `best` uses train.py's defaults (our recipe),
`best_balanced` them with class-balanced batches, `previous_best` the recipe before the regularisers were
chosen on eval_a, and the other VARIANTS change one thing of one of them. A
finished run is reused only while train.py would still train exactly its config.json (defaults change);
a run trained with other arguments is kept as RUN.replaced-TIME (runs/ and results/), never deleted.
`ensemble` trains the runs of ENSEMBLE_MEMBERS that this work dir does not hold yet and averages
their exports into one SavedModel (`python -m models.exporting --average`), evaluated like the others
(reused, or kept aside, like a run: by its members).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time

# No TensorFlow: --help is fast.
from models.config import EXPORT_METADATA_FILE, MODEL_NAMES, RESEARCH_DROPOUT, parse_args, upgrade
from tfdata.schema import CLASS_LABELS_FILE, MANIFEST_FILE, Manifest

RESEARCH_MODELS = ("average_pooling", "max_pooling", "single_attention", "multi_attention", "feature_attention")
BALANCED = ("--sampling", "balanced")  # the research code's class-balanced batches
RESEARCH_RECIPE = (*BALANCED, "--learning_rate", "0.001", "--lr_schedule", "constant", "--dropout",
                   str(RESEARCH_DROPOUT), "--mixup", "0", "--ema", "0", "--weight_decay", "0", "--input_dropout", "0",
                   "--frame_dropout", "0")
# The recipe before the regularisers and then uniform sampling were chosen on eval_a (README, "Results"),
# and one-change variants of it; `best_balanced` is the recipe before uniform sampling.
PREVIOUS = (*BALANCED, "--frame_dropout", "0", "--input_dropout", "0", "--weight_decay", "0")
VARIANTS = {"best": (), "best_balanced": BALANCED, "best_single_attention": ("--model", "single_attention"),
            "previous_best": PREVIOUS,
            "previous_best_no_mixup": (*PREVIOUS, "--mixup", "0"),
            "previous_best_dropout_0.5": (*PREVIOUS, "--dropout", str(RESEARCH_DROPOUT)),
            "previous_best_frame_dropout_0.3": (*BALANCED, "--input_dropout", "0", "--weight_decay", "0"),
            "previous_best_input_dropout_0.2": (*BALANCED, "--frame_dropout", "0", "--weight_decay", "0"),
            "previous_best_weight_decay_0.1": (*BALANCED, "--frame_dropout", "0", "--input_dropout", "0")}
# Members differ in recipe, sampling, model and seed: the more their errors differ, the more the average gains.
ENSEMBLE_MEMBERS = ("best", "best_balanced", "previous_best", "previous_best_frame_dropout_0.3",
                    "previous_best_dropout_0.5", "previous_best_no_mixup")
SEEDS = {"previous_best_no_mixup": 1, "previous_best_dropout_0.5": 2, "multi_head_attention": 3,
         "best_single_attention": 4}
BASELINE = "previous_best"  # every run's mAP is also given as a paired difference from this run's
# The runs measured at 1,000 steps (README, "Results") keep them; the others train train.py's default steps.
RUN_STEPS = {run: 1000 for run in VARIANTS if run.startswith("previous_best")}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class QualityConfig:
    input: str
    work_dir: str
    runs: tuple[str, ...] = RESEARCH_MODELS + ("best", "ensemble")
    steps: int | None = None  # every run's training steps (None: RUN_STEPS, else train.py's default)
    eval_every: int = 100
    snapshots: int = 5
    holdout_fraction: float = 0.1  # only without eval_input
    class_labels: str | None = None
    eval_input: str | None = None  # glob of the validation TFRecords (e.g. eval_a); else a holdout of input
    train_args: tuple[str, ...] = ()  # extra train.py arguments for every run (e.g. a smaller model in tests)


def train_args(run: str) -> list[str]:
    """train.py arguments that make a run: a research model with the research recipe, `best` (train.py's
    defaults) or one of its VARIANTS, or another registered model with train.py's defaults."""
    if run in VARIANTS:
        return list(VARIANTS[run])
    if run in MODEL_NAMES:
        return ["--model", run, *(RESEARCH_RECIPE if run in RESEARCH_MODELS else ())]
    raise ValueError(f"unknown run {run!r}: use ensemble, {', '.join(VARIANTS)} or one of {', '.join(MODEL_NAMES)}")


def _class_labels(config: QualityConfig) -> str:
    if config.class_labels:
        return config.class_labels
    base = os.path.dirname(config.input.split(",")[0])
    for candidate in (base, os.path.dirname(base)):
        path = os.path.join(candidate, CLASS_LABELS_FILE)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no class_labels_indices.csv beside {base}; pass --class_labels")


def _run(command: list[str], log: str) -> float:
    """Runs a command (its output to log), returns its wall time; a failure names the log."""
    print("$ " + " ".join(shlex.quote(c) for c in command), flush=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.run(command, cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        raise RuntimeError(f"exit status {code}; see {log}")
    return time.perf_counter() - start


def run_quality(config: QualityConfig) -> list[dict]:
    work = os.path.abspath(config.work_dir)
    shards = os.path.join(work, "shards")
    os.makedirs(os.path.join(work, "results"), exist_ok=True)
    holdout = 0 if config.eval_input else config.holdout_fraction
    if not _built(shards, config.input, holdout):
        _run([sys.executable, "-m", "beam_pipelines.build_shards", "--input", config.input, "--output_dir", shards,
              "--holdout_fraction", str(holdout), "--overwrite"], os.path.join(work, "shards.log"))
    eval_shards = os.path.join(work, "eval_shards")
    if config.eval_input and not _built(eval_shards, config.eval_input, 0):
        _run([sys.executable, "-m", "beam_pipelines.build_shards", "--input", config.eval_input, "--output_dir",
              eval_shards, "--layout", "plain", "--overwrite"], os.path.join(work, "eval_shards.log"))
    summaries = []
    for run in config.runs:
        if run == "ensemble":
            members = [_trained(config, work, member) for member in ENSEMBLE_MEMBERS]
            summaries.append(_ensemble(config, work, members))
        else:
            summaries.append(_trained(config, work, run))
    for summary in summaries:
        _compare(work, summary, BASELINE)
    with open(os.path.join(work, "results.md"), "w") as f:
        f.write(table(summaries))
    return summaries


def _built(shards: str, input: str, holdout_fraction: float) -> bool:
    """Whether `shards` holds finished shards of `input` (False: none yet); shards of other input or another
    holdout fraction are an error: the runs of this work dir were trained on them, so they are neither reused
    for other data nor rebuilt under those runs."""
    if not os.path.exists(os.path.join(shards, MANIFEST_FILE)):
        return False
    args = Manifest.read(shards).args  # ShardsError (a ValueError) for an unfinished or other-version one

    def resolved(patterns: str) -> list[str]:  # build_shards runs in REPO_ROOT: relative globs start there
        return [os.path.realpath(os.path.join(REPO_ROOT, p)) for p in patterns.split(",")]

    built, fraction = args.get("input", ""), args.get("holdout_fraction", 0.0)
    if resolved(built) != resolved(input) or fraction != holdout_fraction:
        raise ValueError(f"{shards} holds shards of {built} (holdout fraction {fraction}), not of {input} (holdout "
                         f"fraction {holdout_fraction}), and the runs in this work dir were trained on them; use "
                         "another --work_dir")
    return True


def train_command(config: QualityConfig, work: str, run: str) -> list[str]:
    """train.py's arguments for `run` in the work dir: its recipe, the data, its steps and seed."""
    steps = config.steps or RUN_STEPS.get(run)
    return [*train_args(run), "--train_data", os.path.join(work, "shards"),
            "--model_dir", os.path.join(work, "runs", run), "--eval_data", validation_data(config, work),
            *(["--steps", str(steps)] if steps else []), "--eval_every", str(config.eval_every),
            "--snapshots", str(config.snapshots), "--seed", str(SEEDS.get(run, 0)),
            "--class_labels", _class_labels(config), *config.train_args]


def _trained(config: QualityConfig, work: str, run: str) -> dict:
    """The summary of `run`: trained and evaluated now, or read back when this work dir already holds a
    finished run with the same arguments (so an interrupted quality command can be run again)."""
    model_dir = os.path.join(work, "runs", run)
    args = train_command(config, work, run)
    summary = {"run": run, "train_args": args[:args.index("--train_data")] + list(config.train_args),
               "steps": parse_args(args).steps, "seed": SEEDS.get(run, 0), **_data(config)}
    path = os.path.join(work, "results", f"{run}.json")
    same_training = _same_training(model_dir, args)
    done = _finished(path, summary, os.path.join(model_dir, "saved_model")) if same_training else None
    if done:
        print(f"{run}: finished before, reusing {path}", flush=True)
        return done
    if os.path.exists(model_dir) and not same_training:
        _set_aside(work, run)
    summary["train_seconds"] = round(_run([sys.executable, "train.py", *args],
                                          os.path.join(work, "results", f"{run}.train.log")))
    summary["final"] = _evaluate(config, work, run, [os.path.join(model_dir, "saved_model")])
    with open(os.path.join(model_dir, "saved_model", EXPORT_METADATA_FILE)) as f:
        summary["exported_weights"] = json.load(f)["weights"]
    snapshots = sorted(p for p in glob.glob(os.path.join(glob.escape(model_dir), "snapshots", "weights-*"))
                       if ".tmp-" not in os.path.basename(p))  # the model dir is a literal path
    if len(snapshots) > 1:
        summary["snapshots"] = _evaluate(config, work, f"{run}-snapshots", snapshots)
    with open(os.path.join(model_dir, "history.csv")) as f:
        history = list(csv.DictReader(f))
    for column in ("val_mAP", "val_mAP_ema"):
        if history and column in history[0]:
            summary["validation_" + column[4:]] = [round(float(row[column]), 4) for row in history]
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def _finished(path: str, summary: dict, export: str) -> dict | None:
    """The summary at `path` of a finished run (its export exists) made as `summary` says, else None."""
    if not (os.path.exists(path) and os.path.exists(export)):
        return None
    with open(path) as f:
        done = json.load(f)
    return done if all(done.get(k) == v for k, v in summary.items()) else None


def _set_aside(work: str, run: str) -> None:
    """Moves a run trained with other arguments (its model dir, evaluation, summary and logs) to RUN.replaced-TIME
    beside where it was, so that a new run never destroys an earlier one."""
    results = os.path.join(work, "results")
    tails = ("", ".json", ".log", ".train.log", ".export.log", "-snapshots", "-snapshots.log")
    paths = [os.path.join(work, "runs", run), *(os.path.join(results, run + tail) for tail in tails)]
    stamp = suffix = ".replaced-" + time.strftime("%Y%m%d-%H%M%S")
    n = 0
    while any(os.path.exists(path + suffix) for path in paths):  # set aside twice in one second
        n += 1
        suffix = f"{stamp}~{n}"
    for path in paths:
        if os.path.exists(path):
            os.rename(path, path + suffix)
    print(f"{run}: made before from other arguments or members; kept as runs/{run}{suffix} (and "
          f"results/{run}{suffix}*)", flush=True)


def _compare(work: str, summary: dict, baseline: str) -> None:
    """Adds to `summary` (and its RUN.json) its mAP minus the baseline run's on the same validation clips, with
    the paired 95% bootstrap interval (evaluation.report.paired_difference), when both were evaluated here."""
    from evaluation import report

    if summary["run"] == baseline:
        return
    results = os.path.join(work, "results")
    difference = report.paired_difference(os.path.join(results, summary["run"]), os.path.join(results, baseline))
    if difference is None:
        return  # not both evaluated, or on other clips: no paired comparison
    summary[f"vs_{baseline}"] = [round(v, 4) for v in difference]
    with open(os.path.join(work, "results", f"{summary['run']}.json"), "w") as f:
        json.dump(summary, f, indent=1)


def _same_training(model_dir: str, args: list[str]) -> bool:
    """Whether model_dir/config.json is the configuration that train.py would train from `args` today (its
    defaults may have changed since); paths that name the run's own directory do not count."""
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            saved = upgrade(json.load(f))
    except (OSError, ValueError, TypeError):  # missing, not JSON, not a config
        return False
    ignore = ("model_dir", "export_dir", "snapshots")
    wanted = parse_args(args).to_json()
    return {k: v for k, v in saved.items() if k not in ignore} == {k: v for k, v in wanted.items() if k not in ignore}


def _weights_digest(export: str) -> str:
    """sha256 of a SavedModel's variables files: tells one training's weights from another's."""
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(glob.escape(export), "variables", "*"))):
        digest.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _ensemble(config: QualityConfig, work: str, members: list[dict]) -> dict:
    """One SavedModel averaging the members' exports, evaluated like a single model; reused while its members
    are the same runs with the same weights (runs/ensemble/members.json holds their digests), else the earlier
    one is kept as ensemble.replaced-TIME."""
    export = os.path.join(work, "runs", "ensemble", "saved_model")
    path = os.path.join(work, "results", "ensemble.json")
    weights_path = os.path.join(work, "runs", "ensemble", "members.json")
    weights = {m["run"]: _weights_digest(os.path.join(work, "runs", m["run"], "saved_model")) for m in members}
    summary = {"run": "ensemble", "members": [m["run"] for m in members],
               "train_args": ["(" + " + ".join(m["run"] for m in members) + ")"],
               "steps": [m["steps"] for m in members],
               "train_seconds": sum(m["train_seconds"] for m in members), **_data(config)}
    same_weights = False
    if os.path.exists(weights_path):
        with open(weights_path) as f:
            same_weights = json.load(f) == weights
    done = _finished(path, summary, export) if same_weights else None
    if done:
        print(f"ensemble: its members are the runs it averaged before, reusing {path}", flush=True)
        return done
    if os.path.exists(os.path.join(work, "runs", "ensemble")) or os.path.exists(path):
        _set_aside(work, "ensemble")
    _run([sys.executable, "-m", "models.exporting", "--average",
          *[os.path.join(work, "runs", m["run"], "saved_model") for m in members], "--output", export],
         os.path.join(work, "results", "ensemble.export.log"))
    with open(weights_path, "w") as f:
        json.dump(weights, f, indent=1)
    summary["final"] = _evaluate(config, work, "ensemble", [export])
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def validation_data(config: QualityConfig, work: str) -> str:
    """The validation clips: the plain shards of --eval_input, else the holdout of --input."""
    return os.path.join(work, "eval_shards") if config.eval_input else os.path.join(work, "shards", "holdout")


def _data(config: QualityConfig) -> dict:
    if config.eval_input:
        return {"data": config.input, "eval_data": config.eval_input}
    return {"data": config.input, "holdout_fraction": config.holdout_fraction}


def _evaluate(config: QualityConfig, work: str, name: str, models: list[str]) -> dict:
    """evaluate.py on the validation clips (several models: their mean scores); the headline metrics."""
    out = os.path.join(work, "results", name)
    _run([sys.executable, "evaluate.py", "--saved_model", *models, "--data", validation_data(config, work),
          "--output_dir", out, "--train_manifest", os.path.join(work, "shards", MANIFEST_FILE)], out + ".log")
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    keys = ("mAP", "mAP_95_interval", "AUC", "d_prime", "num_clips", "num_classes_scored")
    return {**{k: m[k] for k in keys}, "num_models": len(models)}


def table(summaries: list[dict]) -> str:
    rows = [f"| run | mAP (95% interval) | minus {BASELINE}'s (paired 95% interval) | AUC | d-prime | "
            "mAP, snapshots averaged | training time | train.py arguments |", "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        final, snap = s["final"], s.get("snapshots")
        snap_text = f"{snap['mAP']:.3f} ({snap['num_models']} snapshots)" if snap else "n/a"
        low, high = final.get("mAP_95_interval") or (float("nan"), float("nan"))
        versus = s.get(f"vs_{BASELINE}")
        versus_text = f"{versus[0]:+.4f} ({versus[1]:+.4f} to {versus[2]:+.4f})" if versus else "n/a"
        rows.append(f"| {s['run']} | {final['mAP']:.3f} ({low:.3f}-{high:.3f}) | {versus_text} | {final['AUC']:.3f} "
                    f"| {final['d_prime']:.3f} | {snap_text} "
                    f"| {s['train_seconds'] / 60:.0f} min "
                    f"| `{' '.join(s['train_args'])} --steps {_steps(s['steps'])}` |")
    return "\n".join(rows) + "\n"


def _steps(steps: int | list[int]) -> str:
    """A run's steps, or an ensemble's members' (1200/1000/...)."""
    return "/".join(map(str, steps)) if isinstance(steps, list) else str(steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", required=True, help="glob of AudioSet TFRecords (e.g. bal_train/*.tfrecord)")
    parser.add_argument("--eval_input", help="glob of the validation TFRecords (e.g. eval_a/*.tfrecord); "
                                             "without it, a 10%% holdout of --input")
    parser.add_argument("--work_dir", required=True, help="shards, runs, results and logs go here")
    parser.add_argument("--runs", default=",".join(QualityConfig.runs), help="comma-separated runs")
    parser.add_argument("--steps", type=int, default=QualityConfig.steps,
                        help="training steps of every run (default: train.py's, and 1,000 for the previous_best runs)")
    parser.add_argument("--eval_every", type=int, default=QualityConfig.eval_every, help="steps between validations")
    parser.add_argument("--snapshots", type=int, default=QualityConfig.snapshots,
                        help="last checkpoints whose predictions are averaged")
    parser.add_argument("--class_labels", help="class_labels_indices.csv (default: beside the input)")
    parser.add_argument("--train_args", default="", help="extra train.py arguments for every run, quoted")
    a = parser.parse_args(argv)
    config = QualityConfig(a.input, a.work_dir, tuple(a.runs.split(",")), a.steps, a.eval_every, a.snapshots,
                           class_labels=a.class_labels, train_args=tuple(shlex.split(a.train_args)),
                           eval_input=a.eval_input)
    try:
        for run in config.runs:
            if run != "ensemble":
                train_args(run)
        summaries = run_quality(config)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())

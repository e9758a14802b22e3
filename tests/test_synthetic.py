import hashlib
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tfdata import readers, schema, synthetic


@pytest.fixture(scope="module")
def clips(synthetic_tfrecords):
    batches = list(readers.read_tfrecords(str(synthetic_tfrecords / "*.tfrecord")).as_numpy_iterator())
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def test_files_parse_with_the_real_data_reader(clips, synthetic_tfrecords):
    assert len(clips["video_id"]) == 2000
    assert (clips["reason"] == 0).all()
    files = sorted(p.name for p in synthetic_tfrecords.glob("*.tfrecord"))
    assert all(len(name) == len("ab.tfrecord") for name in files)  # named by video id prefix
    assert all(len(v) == 11 for v in clips["video_id"])
    assert len(set(clips["video_id"])) == 2000


def test_label_counts_follow_the_documented_distribution(clips):
    per_clip = clips["labels"].sum(axis=1)
    assert per_clip.min() >= 1 and per_clip.max() <= synthetic.MAX_LABELS
    assert 2.2 < per_clip.mean() < 2.6  # AudioSet averages about 2.4


def test_class_frequencies_are_long_tailed():
    # 40,000 clips drawn in memory (no files) so the tail is visible.
    labels = np.concatenate([c["labels"] for c in synthetic.generate(synthetic.SyntheticConfig(num_clips=40_000, seed=1))])
    share = np.sort(labels.mean(axis=0))[::-1]  # fraction of clips holding each class
    assert share[0] > 0.25  # the most frequent class is in a quarter of the clips or more
    assert share[:10].sum() / share.sum() > 0.3  # ten classes hold a third of all labels
    assert np.median(share) < share[0] / 50  # the typical class is rare
    assert share[-1] > 0  # yet every class occurs


def test_about_two_percent_of_clips_are_short(clips):
    short = clips["num_frames"] < schema.NUM_FRAMES
    assert 0.01 < short.mean() < 0.035
    assert clips["num_frames"].min() >= 1


def test_weak_labels_short_sounds_are_only_in_some_frames():
    """In the generated frames (not only in the class model), a clip's one labelled sound lights up
    about as many frames as its class lasts: short sounds leave most of the clip without them."""
    config = synthetic.SyntheticConfig(num_clips=3000, seed=2)
    model = synthetic.class_model(config.seed, config)
    assert (model.durations < 5).mean() > 0.4 and (model.durations >= 8).mean() > 0.25
    data = next(synthetic.generate(config))
    single = (data["labels"].sum(axis=1) == 1) & (data["num_frames"] == schema.NUM_FRAMES)  # one sound, 10 frames
    cls = data["labels"][single].argmax(axis=1)  # [N]
    x = schema.dequantize(data["embedding"][single]).numpy()  # [N, T, D]
    prototype = model.prototypes[cls]  # [N, D]
    gain = np.einsum("ntd,nd->nt", x, prototype) / (prototype ** 2).sum(axis=1)[:, None]  # [N, T]: the sound's gain
    active = (gain > 0.15).sum(axis=1)  # frames holding the sound (gains are 0.3-1.2; noise gives ~1 false frame)
    short = model.durations[cls] <= 4
    assert short.sum() > 200 and (~short).sum() > 100, (short.sum(), (~short).sum())
    assert active[short].mean() < 5 and (active[short] < schema.NUM_FRAMES).mean() > 0.95, active[short]
    assert active[~short].mean() > 8, active[~short]
    assert np.corrcoef(active, model.durations[cls])[0, 1] > 0.8  # longer classes, longer sounds


@pytest.mark.slow
def test_same_seed_same_bytes_in_separate_processes(tmp_path):
    """Also that protobuf map order (the context features) does not leak into the bytes: upb orders maps by a
    per-process hash unless serialization is deterministic, so three processes would differ."""
    outs = [tmp_path / name for name in ("a", "b", "c")]
    command = [sys.executable, "-m", "tfdata.synthetic", "--num_clips", "300", "--seed", "5", "--output_dir"]
    procs = [subprocess.Popen(command + [str(out)], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for out in outs]  # the three processes side by side
    logs = [p.communicate()[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    runs = [{p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())} for out in outs]
    assert "class_labels_indices.csv" in runs[0] and len(runs[0]) > 10
    for run in runs[1:]:
        assert run.keys() == runs[0].keys()
        differ = sorted(name for name in run if run[name] != runs[0][name])
        assert not differ, f"same seed, other bytes in {differ}"
    other = synthetic.SyntheticConfig(num_clips=300, seed=6)
    synthetic.write_tfrecords(other, str(tmp_path / "other"))
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "other").iterdir()} != runs[0]


def test_class_labels_file_is_valid(synthetic_tfrecords):
    labels = schema.read_class_labels(str(synthetic_tfrecords / "class_labels_indices.csv"))
    assert len(set(labels.mids)) == schema.NUM_CLASSES


def test_a_simple_model_learns_well_above_chance():
    """Logistic regression on max-pooled frames, a few seconds of training: well above chance."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import average_precision_score

    config = synthetic.SyntheticConfig(num_clips=6000, seed=11)
    data = _stack(synthetic.generate(config))
    x = schema.dequantize(data["embedding"]).numpy().max(axis=1)  # [N, 128]
    y = data["labels"].astype(np.int64)
    top = np.argsort(-y.sum(axis=0))[:20]  # the 20 most frequent classes, each with enough positives
    train, test = slice(0, 5000), slice(5000, None)
    aps, chance = [], []
    for c in top:
        clf = SGDClassifier(loss="log_loss", alpha=1e-4, max_iter=20, tol=None, random_state=0)
        clf.fit(x[train], y[train, c])
        aps.append(average_precision_score(y[test, c], clf.decision_function(x[test])))
        chance.append(y[test, c].mean())
    assert np.mean(aps) > 3 * np.mean(chance) and np.mean(aps) > 0.3, (np.mean(aps), np.mean(chance))


def _stack(chunks):
    chunks = list(chunks)
    return {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}

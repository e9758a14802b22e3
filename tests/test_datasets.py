"""tfdata.train_dataset / eval_dataset: uniform and balanced sampling, reproducibility, every clip once, errors,
distribution."""

import collections
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests import shard_fixtures
from tests.conftest import REPO_ROOT
from tfdata import datasets, schema, synthetic

BATCH = 500


def research_batches(class_lists, num_batches, batch_size, rng):
    """The research code's balanced generator (Kong et al. 2018): a queue of shuffled class ids,
    the next clip of each drawn class from its shuffled list, reshuffled when exhausted."""
    lists = [rng.permutation(l) for l in class_lists]
    pointers, queue = [0] * len(lists), []
    for _ in range(num_batches):
        drawn, clips = [], []
        for _ in range(batch_size):
            if not queue:
                queue = list(rng.permutation(len(lists)))
            c = queue.pop(0)
            if pointers[c] == len(lists[c]):
                pointers[c], lists[c] = 0, rng.permutation(lists[c])
            drawn.append(c)
            clips.append(lists[c][pointers[c]])
            pointers[c] += 1
        yield np.array(drawn), np.array(clips)


@pytest.fixture(scope="module")
def single_label_shards(tmp_path_factory):
    """Clips with exactly one label each, so that a batch's labels are the classes it drew."""
    clips = next(synthetic.generate(synthetic.SyntheticConfig(num_clips=4000, seed=3)))
    rng = np.random.default_rng(0)
    cls = np.concatenate([np.arange(schema.NUM_CLASSES), rng.integers(0, 40, 4000 - schema.NUM_CLASSES)])
    clips["labels"] = np.eye(schema.NUM_CLASSES, dtype=np.uint8)[cls]  # 527 classes, 40 of them frequent
    out = tmp_path_factory.mktemp("single")
    shard_fixtures.write_balanced(str(out), clips, block_size=16, min_blocks=2, blocks_per_file=4)
    return out, cls


@pytest.mark.parametrize("sampling", datasets.SAMPLINGS)
def test_element_spec(single_label_shards, sampling):
    features, labels = next(iter(datasets.train_dataset(str(single_label_shards[0]), BATCH, seed=1, sampling=sampling)))
    assert features["embedding"].dtype.name == "uint8" and features["embedding"].shape == (BATCH, 10, 128)
    assert features["num_frames"].dtype.name == "int32" and features["num_frames"].shape == (BATCH,)
    assert labels.dtype.name == "uint8" and labels.shape == (BATCH, schema.NUM_CLASSES)


def test_draws_are_balanced_like_the_research_generator(single_label_shards):
    shards, cls = single_label_shards
    batches = 300
    draws = np.zeros(schema.NUM_CLASSES, np.int64)  # labels are uint8: sum as int64
    distinct = []
    for _, labels in datasets.train_dataset(str(shards), BATCH, seed=2, sampling="balanced").take(
            batches).as_numpy_iterator():
        per_class = labels.sum(axis=0, dtype=np.int64)
        draws += per_class
        distinct.append((per_class > 0).sum())
    # Every 527 consecutive draws hold each class once (as in the research code's queue), so
    # over 150,000 draws the counts differ by at most one round: exact, no statistical slack needed.
    assert draws.sum() == batches * BATCH
    assert draws.max() - draws.min() <= 1
    lists = [np.flatnonzero(cls == c) for c in range(schema.NUM_CLASSES)]
    research = [len(set(drawn)) for drawn, _ in research_batches(lists, batches, BATCH, np.random.default_rng(0))]
    assert abs(np.mean(distinct) - np.mean(research)) < 0.01 * np.mean(research), (np.mean(distinct), np.mean(research))


def test_rare_classes_are_repeated_and_frequent_ones_subsampled(single_label_shards):
    shards, cls = single_label_shards
    seen = {}
    for features, labels in datasets.train_dataset(str(shards), BATCH, seed=3, sampling="balanced").take(
            60).as_numpy_iterator():
        for e, c in zip(features["embedding"], labels.argmax(axis=1)):
            seen.setdefault(int(c), []).append(e.tobytes())
    rare = [c for c in range(40, schema.NUM_CLASSES)]  # one clip each
    assert all(len(seen[c]) >= 50 and len(set(seen[c])) == 1 for c in rare)
    frequent = [c for c in range(40) if np.sum(cls == c) > 80]
    assert all(len(set(seen[c])) > 40 for c in frequent)  # cycles through many of its clips


@pytest.fixture(scope="module")
def multi_label_shards(tmp_path_factory):
    """Synthetic multi-label clips in small blocks and files: a clip is in several classes' files, and
    the rare classes' last files hold their clips again."""
    clips = next(synthetic.generate(synthetic.SyntheticConfig(num_clips=1500, seed=5)))
    out = tmp_path_factory.mktemp("multi")
    shard_fixtures.write_balanced(str(out), clips, block_size=8, min_blocks=3, blocks_per_file=2)
    return out, clips


def _clip_keys(clips) -> list[bytes]:
    return [e.tobytes() + bytes([n]) + l.tobytes()
            for e, n, l in zip(clips["embedding"], clips["num_frames"], clips["labels"])]


def _one_pass(shards, seed, pipeline=0, pipelines=1) -> list[bytes]:
    manifest = datasets.read_manifest(str(shards))
    dataset = datasets._uniform_clips(str(shards), manifest, seed, pipeline, pipelines, 2, passes=1)
    return [key for batch in dataset.batch(1000).as_numpy_iterator() for key in _clip_keys(batch)]


def test_uniform_sampling_reads_every_clip_once_per_pass(multi_label_shards):
    shards, clips = multi_label_shards
    assert (clips["labels"].sum(axis=1) > 1).mean() > 0.3  # clips in several classes' files
    expected = collections.Counter(_clip_keys(clips))
    assert collections.Counter(_one_pass(shards, seed=0)) == expected
    first, second = _one_pass(shards, seed=1, pipeline=0, pipelines=2), _one_pass(shards, seed=1, pipeline=1, pipelines=2)
    assert collections.Counter(first + second) == expected  # two workers: each clip in one of them
    assert 0.3 < len(first) / len(expected) < 0.7


@pytest.mark.slow
def test_uniform_sampling_reads_each_clip_of_the_beam_job_once_per_pass(beam_shards):
    keys = _one_pass(beam_shards, seed=0)
    manifest = json.loads((beam_shards / "manifest.json").read_text())
    assert len(keys) == len(set(keys)) == manifest["splits"]["train"]["clips"]


def test_uniform_sampling_draws_clips_as_often_as_each_other(single_label_shards):
    shards, cls = single_label_shards
    draws = np.zeros(schema.NUM_CLASSES, np.int64)
    for _, labels in datasets.train_dataset(str(shards), BATCH, seed=4).take(40).as_numpy_iterator():
        draws += labels.sum(axis=0, dtype=np.int64)
    per_clip = draws / np.bincount(cls, minlength=schema.NUM_CLASSES)  # 20,000 draws of 4,000 clips: 5 passes
    assert 4.5 < per_clip[40:].mean() < 5.5 and per_clip[40:].max() <= 12  # one clip each: not repeated as balanced
    assert np.allclose(per_clip[:40], 5, atol=1.0)  # a frequent class: drawn as often as its clips


def test_an_unknown_sampling_or_a_manifest_that_does_not_match_its_files_is_refused(tmp_path, single_label_shards):
    import shutil

    with pytest.raises(ValueError, match="sampling must be one of uniform, balanced, got 'random'"):
        datasets.train_dataset(str(single_label_shards[0]), 8, sampling="random")
    shards = tmp_path / "s"
    shutil.copytree(single_label_shards[0], shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    (shards / "manifest.json").write_text(json.dumps(manifest | {"args": {}}))
    with pytest.raises(datasets.ShardsError, match="does not say --blocks_per_file; rebuild the shards"):
        datasets.train_dataset(str(shards), 8)
    (shards / "manifest.json").write_text(json.dumps(manifest | {"args": {"blocks_per_file": 1}}))
    with pytest.raises(datasets.ShardsError, match="class 0 has 2 files where .* make [0-9]+; rebuild the shards"):
        datasets.train_dataset(str(shards), 8)  # files of another --blocks_per_file: would misread positions
    datasets.train_dataset(str(shards), 8, sampling="balanced")  # balanced batches need no more


@pytest.mark.parametrize("sampling", datasets.SAMPLINGS)
def test_same_seed_same_batches(single_label_shards, sampling):
    def first(seed):
        return [l for _, l in datasets.train_dataset(str(single_label_shards[0]), 128, seed=seed,
                                                     sampling=sampling).take(5).as_numpy_iterator()]

    a, b, c = first(7), first(7), first(8)
    assert all((x == y).all() for x, y in zip(a, b))
    assert not all((x == y).all() for x, y in zip(a, c))


def test_mixup_mixes_embeddings_and_labels_with_the_mirrored_clip():
    import tensorflow as tf

    b = 64
    rng = np.random.default_rng(0)
    values = rng.integers(0, 256, b)  # clip i: every frame and dimension holds values[i]
    num_frames = rng.integers(1, schema.NUM_FRAMES + 1, b)
    frames = np.arange(schema.NUM_FRAMES)[None, :] < num_frames[:, None]  # [B, 10]
    embedding = np.where(frames[:, :, None], values[:, None, None], 0).astype(np.uint8) * np.ones(
        [1, 1, schema.EMBEDDING_DIM], np.uint8)  # [B, 10, 128]
    labels = np.eye(schema.NUM_CLASSES, dtype=np.uint8)[np.arange(b)]  # clip i has class i only
    batch = {"embedding": tf.constant(embedding), "num_frames": tf.constant(num_frames, tf.int32),
             "labels": tf.constant(labels)}
    mixed = {k: v.numpy() for k, v in datasets._mixup(batch, tf.constant([1, 2], tf.int64), 0.5).items()}
    other = np.arange(b)[::-1]
    lam = mixed["labels"][np.arange(b), np.arange(b)]  # the weight of the clip's own label
    assert np.allclose(mixed["labels"][np.arange(b), other], 1 - lam) and np.allclose(mixed["labels"].sum(1), 1)
    assert 0.2 < lam.mean() < 0.8 and lam.std() > 0.1  # Beta(0.5, 0.5): spread towards 0 and 1
    assert np.array_equal(mixed["num_frames"], np.maximum(num_frames, num_frames[other]))
    both = frames & frames[other]  # frames both clips have are mixed; a frame only one has is its own
    expected = np.where(both, lam[:, None] * values[:, None] + (1 - lam[:, None]) * values[other][:, None],
                        np.where(frames, values[:, None], values[other][:, None]))
    expected = np.where(frames | frames[other], expected, 0)  # [B, 10]
    assert np.abs(mixed["embedding"][:, :, 0].astype(float) - expected).max() <= 0.5 + 1e-3
    assert (mixed["embedding"] == mixed["embedding"][:, :, :1]).all()


@pytest.mark.slow
def test_train_dataset_reads_the_beam_job_output(beam_shards):
    manifest = json.loads((beam_shards / "manifest.json").read_text())
    present = np.array(manifest["splits"]["train"]["class_counts"]) > 0
    drawn = np.zeros(schema.NUM_CLASSES, np.int64)
    for features, labels in datasets.train_dataset(str(beam_shards), 256, seed=0).take(40).as_numpy_iterator():
        drawn += labels.sum(axis=0, dtype=np.int64)
        assert ((features["num_frames"] >= 1) & (features["num_frames"] <= 10)).all()
    assert (drawn[present] > 0).all() and (drawn[~present] == 0).all()


def _ids(dataset):
    return [v for features, _ in dataset.as_numpy_iterator() for v in features["video_id"]]


@pytest.mark.slow
def test_eval_dataset_gives_every_clip_once(beam_shards, synthetic_tfrecords):
    from_glob = _ids(datasets.eval_dataset(str(synthetic_tfrecords / "*.tfrecord"), 300))
    assert len(from_glob) == len(set(from_glob)) == 2000
    holdout = _ids(datasets.eval_dataset(str(beam_shards), 300))
    also = _ids(datasets.eval_dataset(str(beam_shards / "holdout"), 300))
    manifest = json.loads((beam_shards / "manifest.json").read_text())
    assert sorted(holdout) == sorted(also) and len(set(holdout)) == manifest["splits"]["holdout"]["clips"]
    features, labels = next(iter(datasets.eval_dataset(str(beam_shards), 300)))
    assert set(features) == {"embedding", "num_frames", "video_id", "start_time_seconds"}
    assert labels.dtype.name == "uint8"


def test_eval_dataset_skips_and_counts_invalid_records(tmp_path):
    from tests.test_build_shards import _write
    from tests.test_readers import _sequence_example

    _write(tmp_path / "a.tfrecord", [_sequence_example(video_id=b"goodgoodgoo"), _sequence_example(frames=[]),
                                     _sequence_example(video_id=b"badlabelsss", labels=(600,))])
    skipped = datasets.SkippedRecords()
    assert _ids(datasets.eval_dataset(str(tmp_path / "*.tfrecord"), 8, skipped=skipped)) == [b"goodgoodgoo"]
    assert skipped.as_dict() == {"no_frames": 1, "label_out_of_range": 1}


@pytest.mark.parametrize("problem, message", [
    ("missing", "no such directory"),
    ("no_manifest", "no manifest.json"),
    ("old_version", "schema version 0"),
    ("unfinished", "did not finish"),
])
def test_unusable_shards_are_refused_with_a_clear_message(tmp_path, single_label_shards, problem, message):
    import shutil

    shards = tmp_path / "s"
    if problem != "missing":  # a copy of usable shards (the layout of the Beam job) with its manifest spoiled
        shutil.copytree(single_label_shards[0], shards)
        datasets.train_dataset(str(shards), 8)  # usable before
        manifest = json.loads((shards / "manifest.json").read_text())
        if problem == "no_manifest":
            (shards / "manifest.json").unlink()
        else:
            manifest |= {"schema_version": 0} if problem == "old_version" else {"complete": False}
            (shards / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(datasets.ShardsError, match=message):
        datasets.train_dataset(str(shards), 8)


@pytest.mark.slow
def test_mirrored_strategy_consumes_per_replica_batches(beam_shards):
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfdata import datasets
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        dist = datasets.distributed_train_dataset(strategy, {str(beam_shards)!r}, 64, seed=1)
        features, labels = next(iter(dist))
        shapes = [t.shape[0] for t in strategy.experimental_local_results(labels)]
        print("REPLICAS", strategy.num_replicas_in_sync, shapes)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert "REPLICAS 2 [32, 32]" in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize("content", ['{"schema_version": 2, "complete": tr', "", "[1, 2]", "\xff\xfe"])
def test_an_unparsable_manifest_names_the_file_and_says_rebuild(tmp_path, content):
    (tmp_path / "manifest.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(datasets.ShardsError, match=f"{tmp_path / 'manifest.json'}: not a valid manifest .*rebuild"):
        datasets.read_manifest(str(tmp_path))

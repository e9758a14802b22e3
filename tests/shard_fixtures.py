"""Writes a small balanced shards directory directly (the layout of beam_pipelines.build_shards)."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tfdata import schema


def write_balanced(shards_dir: str, clips: dict, block_size: int = 8, min_blocks: int = 2,
                   files_per_class: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(shards_dir, "train"), exist_ok=True)
    class_files, blocks = [], 0
    for c in range(schema.NUM_CLASSES):
        members = np.flatnonzero(clips["labels"][:, c])
        if len(members) == 0:
            class_files.append([])
            continue
        n_blocks = max(min_blocks, -(-len(members) // block_size))
        order = np.concatenate([rng.permutation(members) for _ in range(-(-n_blocks * block_size // len(members)))])
        order = order[:n_blocks * block_size].reshape(n_blocks, block_size)
        names = [f"train/class-{c:03d}-{s:05d}-of-{files_per_class:05d}.tfrecord" for s in range(files_per_class)]
        writers = [tf.io.TFRecordWriter(os.path.join(shards_dir, n)) for n in names]
        for b, rows in enumerate(order):
            writers[b % files_per_class].write(schema.encode_block(
                c, clips["embedding"][rows], clips["num_frames"][rows], clips["labels"][rows]))
        for w in writers:
            w.close()
        class_files.append(names)
        blocks += n_blocks
    counts = clips["labels"].sum(axis=0).astype(int).tolist()
    manifest = schema.Manifest(
        args={"fixture": True}, input_records=len(clips["labels"]), written_clips=len(clips["labels"]), rejected=0,
        rejected_reasons={}, class_counts=counts,
        splits={"train": {"layout": "balanced", "clips": len(clips["labels"]), "class_counts": counts,
                          "block_size": block_size, "blocks": blocks, "class_files": class_files,
                          "files": [f for files in class_files for f in files]}})
    manifest.write(shards_dir)
    return manifest.to_dict()

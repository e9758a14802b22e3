"""Writes a small balanced shards directory directly (the layout of beam_pipelines.build_shards)."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from beam_pipelines import layout
from tfdata import schema


def write_balanced(shards_dir: str, clips: dict, block_size: int = 8, min_blocks: int = 2,
                   blocks_per_file: int = 64, seed: int = 0) -> dict:
    """The Beam job's balanced layout (schema.class_plan: a class's clips in a random order,
    cycled, in files of blocks_per_file blocks), written directly."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(shards_dir, "train"), exist_ok=True)
    class_files, blocks = [], 0
    for c in range(schema.NUM_CLASSES):
        members = np.flatnonzero(clips["labels"][:, c])
        if len(members) == 0:
            class_files.append([])
            continue
        plan = schema.class_plan(len(members), block_size, min_blocks, blocks_per_file)
        n_blocks = plan[-1][1]
        order = np.concatenate([rng.permutation(members) for _ in range(-(-n_blocks * block_size // len(members)))])
        order = order[:n_blocks * block_size].reshape(n_blocks, block_size)
        names = [layout.class_file_name(c, s, len(plan)) for s in range(len(plan))]
        for name, (first, end) in zip(names, plan):
            with tf.io.TFRecordWriter(os.path.join(shards_dir, name)) as writer:
                for rows in order[first:end]:
                    writer.write(schema.encode_block(
                        c, clips["embedding"][rows], clips["num_frames"][rows], clips["labels"][rows]))
        class_files.append(names)
        blocks += n_blocks
    counts = clips["labels"].sum(axis=0).astype(int).tolist()
    manifest = schema.Manifest(
        args={"fixture": True, "blocks_per_file": blocks_per_file}, input_records=len(clips["labels"]),
        written_clips=len(clips["labels"]), rejected=0, rejected_reasons={}, class_counts=counts,
        splits={"train": {"layout": "balanced", "clips": len(clips["labels"]), "class_counts": counts,
                          "block_size": block_size, "blocks": blocks, "class_files": class_files,
                          "files": [f for files in class_files for f in files]}})
    manifest.write(shards_dir)
    return manifest.to_dict()

"""The manifest: the stats of every batch summed into one total, then OUT/manifest.json (a
tfdata.schema.Manifest), written last: it marks a finished run.
"""

from __future__ import annotations

import apache_beam as beam

from beam_pipelines import clips, write
from tfdata import schema


def build_manifest(stats: dict, main_files: list, holdout_files: list, rejected_file: str, args: dict,
                   main_split: str, layout: str, block_size: int, holdout: bool) -> schema.Manifest:
    """The summary of a finished run (see build_shards' docstring); RuntimeError unless every input
    record is either written or rejected."""
    reasons = {r: int(stats["rejected_reasons"].get(r, 0)) for r in schema.REJECT_REASONS}
    unknown = set(stats["rejected_reasons"]) - set(reasons)
    if unknown:
        raise ValueError(f"unknown reject reasons {sorted(unknown)}")
    splits = {}
    if layout == "balanced":
        class_files = [[] for _ in range(schema.NUM_CLASSES)]
        for entry in sorted(main_files, key=lambda e: e["file"]):
            class_files[entry["class"]].append(entry["file"])
        splits[main_split] = {"layout": "balanced", "clips": stats["main_clips"],
                              "class_counts": stats["main"].tolist(), "files": sorted(e["file"] for e in main_files),
                              "block_size": block_size, "blocks": sum(e["blocks"] for e in main_files),
                              "class_files": class_files}
    else:
        splits[main_split] = {"layout": "plain", "clips": stats["main_clips"],
                              "class_counts": stats["main"].tolist(), "files": sorted(main_files)}
    if holdout:
        splits["holdout"] = {"layout": "plain", "clips": stats["holdout_clips"],
                             "class_counts": stats["holdout"].tolist(), "files": sorted(holdout_files)}
    written = stats["main_clips"] + stats["holdout_clips"]
    rejected = sum(reasons.values())
    if stats["input_records"] != written + rejected:
        raise RuntimeError(f"accounting does not add up: {stats['input_records']} input records, "
                           f"{written} written, {rejected} rejected")
    return schema.Manifest(
        args=args, input_records=stats["input_records"], written_clips=written, rejected=rejected,
        rejected_reasons=reasons, rejected_file=rejected_file,
        class_counts=(stats["main"] + stats["holdout"]).tolist(), splits=splits)


class _SumStats(beam.CombineFn):
    def create_accumulator(self):
        return clips.empty_stats()

    def add_input(self, accumulator, element):
        return clips.add_stats(accumulator, element)

    def merge_accumulators(self, accumulators):
        total = clips.empty_stats()
        for accumulator in accumulators:
            total = clips.add_stats(total, accumulator)
        return total

    def extract_output(self, accumulator):
        return accumulator


class Summarize(beam.PTransform):
    """Stats of batches (input records, rejections by reason, distinct clips per split and class) -> one total."""

    def expand(self, stats):
        return stats | "Sum" >> beam.CombineGlobally(_SumStats())


class WriteManifest(beam.PTransform):
    """(total stats, main files, holdout files, rejected file) -> OUT/manifest.json, last: it marks a
    finished run. Takes everything as side inputs, so it runs after every write."""

    def __init__(self, output_dir: str, args: dict, main_split: str, layout: str, block_size: int, holdout: bool,
                 spill_dir: str | None = None):
        super().__init__()
        self._output_dir, self._args, self._spill_dir = output_dir, args, spill_dir
        self._split = (main_split, layout, block_size, holdout)

    def expand(self, inputs):
        stats, main_files, holdout_files, rejected_file = inputs
        return (stats.pipeline
                | "Once" >> beam.Create([None])
                | "Write" >> beam.Map(self._write, stats=beam.pvalue.AsSingleton(stats),
                                      main_files=beam.pvalue.AsList(main_files),
                                      holdout_files=beam.pvalue.AsList(holdout_files),
                                      rejected_file=beam.pvalue.AsSingleton(rejected_file)))

    def _write(self, _, stats, main_files, holdout_files, rejected_file):
        manifest = build_manifest(stats, main_files, holdout_files, rejected_file, self._args, *self._split)
        if self._spill_dir:
            write.delete_tree(self._spill_dir)  # every writer has read its parts
        manifest.write(self._output_dir)
        return manifest

"""The ``compress`` cell: the Deep Compression pipeline (Han et al. 2015, arXiv 1510.00149;
``workflows/deep_compression.py``'s ``compress``) on the model ``source`` names: prune in
rounds with retraining, k-means weight sharing with centroid fine-tuning, a Huffman-coded
``.sqz`` that is loaded back and scored.

Recipe values: ``source`` (a checkpoint, or ``{cell: ...}``: a train cell's best checkpoint),
``compress`` (CompressConfig fields: ``prune`` / ``sharing`` mappings, null to skip the step,
``prune_rounds``, ``retrain_epochs`` ...; its ``train`` section goes over the source's own
training settings, as ``squeezelab compress`` does), ``test_time_flip``.

The record: the .sqz's bytes on disk, its ratio to the source's fp32 safetensors file and to 4
bytes per parameter, bits per parameter (everything in the file counted), the top-1/top-5 of
the file as loaded back, the source's (dense) top-1 under the same protocol, the sparsity and
every step's top-1 (``compression``, ``metrics``, ``steps``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from squeezelab.checkpoint import checkpoint_paths
from squeezelab.config import ConfigBase, ConfigError
from squeezelab.metrics import count_parameters
from squeezelab.train.loop import TrainingDiverged
from squeezelab.workflows.deep_compression import compress, compress_config_for
from squeezelab.workflows.studies.model_cells import (
    PLACED_TRAIN_FIELDS,
    check_finished,
    check_source,
    continue_section,
    data_for,
    load_source,
    place_seed,
    protocol_for,
    source_checkpoint,
)
from squeezelab.workflows.studies.registry import CellContext, register_cell_kind

#: the compressed file a cell writes into its run folder
OUTPUT = "model.sqz"


@dataclass
class CompressCellSettings(ConfigBase):
    """A ``compress`` cell (see the module docstring); ``seed`` is placed by the study."""

    source: str
    compress: dict[str, Any] = field(default_factory=dict)
    test_time_flip: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_source(self.source)
        if not isinstance(self.compress, dict):
            raise ConfigError(f"compress must be a mapping of CompressConfig fields, got "
                              f"{type(self.compress).__name__}")
        train = self.compress.get("train") or {}
        placed = sorted(set(train) & set(PLACED_TRAIN_FIELDS))
        if placed:
            raise ConfigError(f"compress: train: {', '.join(placed)} is set by the study (the "
                              "seed from seeds:, the folders from --out); remove it")
        self.config_for({})  # a bad CompressConfig value fails when the study is planned
        if self.test_time_flip is not None and not isinstance(self.test_time_flip, bool):
            raise ConfigError(f"test_time_flip must be true, false or null, got "
                              f"{self.test_time_flip!r}")

    def config_for(self, meta: dict[str, Any], progress: bool = True):
        """The CompressConfig for a source whose checkpoint meta is ``meta``: the cell's
        settings over the defaults, its fine-tuning runs trained as the source was (its data
        and subset; this cell's seed) with the cell's ``train`` over that."""
        changes = dict(self.compress)
        changes["train"] = {**continue_section(meta, changes.get("train") or {}, self.seed),
                            "progress": progress}
        return compress_config_for(meta, overrides=changes)


@register_cell_kind("compress", settings=CompressCellSettings, prepare=place_seed,
                    failures=(TrainingDiverged,))
def run_compress_cell(settings: CompressCellSettings, ctx: CellContext) -> dict[str, Any]:
    """Compress the source into ``<run folder>/model.sqz`` and return the cell's record."""
    checkpoint = source_checkpoint(settings.source)
    source = load_source(settings.source)
    config = settings.config_for(source.meta, ctx.progress)
    data = data_for(config.train_config("data"), ctx)
    protocol = protocol_for(source.meta, settings.test_time_flip)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    result = compress(checkpoint, config, ctx.run_dir / OUTPUT, data=tuple(data),
                      work_dir=ctx.run_dir, protocol=protocol,
                      log=print if ctx.progress else (lambda *_: None))
    check_finished(*(Path(s["run_dir"]) for s in result.steps if s.get("run_dir")),
                   cell=ctx.name)
    dense, loaded = result.steps[0], result.steps[-1]
    # the source's parameters: BatchNorm folding changes the compressed model's count
    parameters = count_parameters(source.model)
    file_bytes = result.size["file_bytes"]
    source_bytes = checkpoint_paths(checkpoint)[1].stat().st_size
    steps_top1 = {s["step"]: s.get("top1") for s in result.steps[1:-1]}
    return {
        "metrics": {
            "test_top1": loaded.get("top1"),  # the .sqz as loaded back
            "test_top5": loaded.get("top5"),
            "source_top1": dense.get("top1"),
            "source_top5": dense.get("top5"),
            "top1_change": loaded["top1"] - dense["top1"],
            "sparsity": loaded["sparsity"],
            "steps_top1": steps_top1,
            "test_protocol": protocol.to_dict(),
        },
        "compression": {
            "file_bytes": file_bytes,
            "file_mb": file_bytes / 1e6,  # the papers' MB
            "source_file_bytes": source_bytes,  # the source's fp32 safetensors file
            "ratio_source_file": source_bytes / file_bytes,
            "fp32_bytes": 4 * parameters,
            "ratio_fp32": 4 * parameters / file_bytes,
            "bits_per_parameter": 8 * file_bytes / parameters,
            "sparsity": loaded["sparsity"],
            "header_bytes": result.size.get("header_bytes"),
        },
        "parameters": parameters,
        "fp32_bytes": 4 * parameters,
        "file_bytes": file_bytes,
        "file": str(result.path),
        "summary": str(result.summary_path),
        "source": {"path": str(checkpoint), "top1": dense.get("top1"),
                   "protocol": protocol.to_dict()},
        "compress_config": config.to_dict(),
        "steps": result.steps,
        "test_images": len(data.test),
        "train_images": len(data.train),
        "run_dir": str(ctx.run_dir),
    }


__all__ = ["CompressCellSettings", "run_compress_cell"]

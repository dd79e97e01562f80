"""Weight pruning as a workflow: magnitude (or Han's threshold) pruning of a checkpoint in
rounds, optionally retrained under the masks, scored before and after under one
:class:`~squeezelab.train.evaluate.EvalProtocol`, saved as a checkpoint with its masks.

    result = prune_weights("runs/base", "pruned", CompressConfig(prune=PruneConfig(0.6),
                           sharing=None), test=test, protocol=EvalProtocol())
    result.before, result.after, result.path

The rounds and retraining are the Deep Compression pipeline's first phase
(``deep_compression.prune_and_retrain``); ``squeezelab prune`` calls this and prints.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squeezelab.checkpoint import source_meta
from squeezelab.compress.format.checkpoints import (
    Compressible,
    load_compressible,
    save_compressible,
)
from squeezelab.compress.pruning.masks import Masks
from squeezelab.data.preprocess import Preprocess
from squeezelab.train.console import print_line
from squeezelab.train.evaluate import EvalProtocol
from squeezelab.workflows.deep_compression import (
    CompressConfig,
    clear_phase_runs,
    evaluate_top1,
    prune_and_retrain,
)
from squeezelab.workflows.fine_tuning import default_work_dir, distillation_hooks


@dataclass
class WeightPruneResult:
    """What ``prune_weights`` returns: the checkpoint written, its ``masks``, top-1 ``before``
    and ``after`` (None where no test images were given), the per-round ``steps`` and the
    record saved in the checkpoint's meta (``prune``)."""

    path: Path
    masks: Masks
    before: float | None
    after: float | None
    steps: list[dict[str, Any]]
    record: dict[str, Any]


def prune_weights(
    source: str | os.PathLike | Compressible,
    output: str | os.PathLike,
    config: CompressConfig,
    *,
    train=None,
    test=None,
    protocol: EvalProtocol | None = None,
    work_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = print_line,
) -> WeightPruneResult:
    """Prune the checkpoint ``source`` as ``config.prune`` says, in ``config.prune_rounds``
    rounds, retraining ``config.retrain_epochs`` after each on ``train`` (needed when there are
    retraining epochs), scoring on ``test`` (None: top-1 is not measured), and save it to
    ``output`` with its masks (pruning a pruned checkpoint keeps its zeros).

    ``work_dir``: where the retraining runs go (default ``runs/<output stem>-prune``; an earlier
    pruning to the same output is replaced). ``protocol``: how top-1 is scored (default: as the
    source was trained, fp32)."""
    if not isinstance(config, CompressConfig) or config.prune is None:
        raise ValueError("prune_weights needs a CompressConfig with a prune section")
    if config.retrain_epochs and (train is None or test is None):
        raise ValueError(f"retraining {config.retrain_epochs} epoch(s) needs train and test "
                         "images")
    src = source if isinstance(source, Compressible) else load_compressible(source)
    protocol = protocol or EvalProtocol.for_model(src.meta)
    out = Path(output)
    work = Path(work_dir) if work_dir else default_work_dir(out, "prune")
    if config.retrain_epochs:
        clear_phase_runs(work, log)
        log(f"retraining runs go to {work}")
    before = None
    if test is not None:
        before = evaluate_top1(src.model, test, protocol)["top1"]
        log(f"before: top-1 {before:.4f} ({protocol.describe()}, {len(test)} test images)")
    data = (train, test) if test is not None else None
    # distilled from the model as it is before pruning, where config.distill asks
    hooks = distillation_hooks(config.distill, src.model, log) if config.retrain_epochs else []
    masks, steps = prune_and_retrain(src.model, config, data, work, masks=src.masks, log=log,
                                     protocol=protocol, hooks=hooks)
    after = steps[-1].get("top1")
    meta = source_meta(src.meta)
    if train is not None and config.retrain_epochs:
        # retrained: the record of the images it was retrained on
        meta.update(Preprocess.from_data(train).to_meta())
    record = {"config": config.to_dict(), "steps": steps, "top1_before": before,
              "top1_after": after, "protocol": protocol.to_dict(),
              "work_dir": str(work) if config.retrain_epochs else None}
    meta["prune"] = record
    path = save_compressible(out, src.model, masks=masks, meta=meta)
    return WeightPruneResult(path=path, masks=masks, before=before, after=after, steps=steps,
                             record=record)


__all__ = ["WeightPruneResult", "prune_weights"]

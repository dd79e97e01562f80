"""Architecture learning on a trained SqueezeNet (Srinivas & Babu, arXiv 1511.05497): learn the
widths with tri-state ReLU gates, cut, fine-tune (``workflows/architecture_learning.py``), and
check the target: at least 30% of the parameters removed at no more than 1 point of top-1 lost
(both figures against the checkpoint it starts from, scored on the same test images).

    squeezelab train --model squeezenet_cifar --epochs 15 --run-name base   # the start
    python benchmarks/architecture_learning.py --checkpoint runs/base \
        --learn-epochs 5 --finetune-epochs 3
    python benchmarks/architecture_learning.py --checkpoint CKPT --learn-epochs 1 \
        --finetune-epochs 1 --limit-train 200 --limit-test 100      # a smoke run

The base run gets no extra epochs here, so the learned model has had learn + fine-tune epochs
more than it: the JSON records both budgets.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from squeezelab.checkpoint import resolve_checkpoint  # noqa: E402
from squeezelab.compress.format.checkpoints import load_compressible  # noqa: E402
from squeezelab.compress.pruning.architecture import widths_table  # noqa: E402
from squeezelab.train.data import load_run_data  # noqa: E402
from squeezelab.train.evaluate import EvalProtocol  # noqa: E402
from squeezelab.workflows.architecture_learning import (  # noqa: E402
    ArchitectureLearningConfig,
    learn_architecture,
)
from squeezelab.workflows.fine_tuning import fine_tune_train_section  # noqa: E402

TARGET_REMOVED = 0.30  # fraction of the parameters
TARGET_LOST = 0.01  # top-1, as a fraction


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="the trained model to start from")
    p.add_argument("--learn-epochs", type=int, default=5)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--learn-lr", type=float, default=None)
    p.add_argument("--finetune-lr", type=float, default=None)
    p.add_argument("--width-count", type=float, default=5e-3)
    p.add_argument("--width-binarize", type=float, default=5e-2)
    p.add_argument("--depth-binarize", type=float, default=5e-2)
    p.add_argument("--binarize-ramp", choices=("true", "false"), default="true")
    p.add_argument("--cost", default="parameters", choices=("parameters", "neurons"))
    p.add_argument("--gate-lr", type=float, default=None)
    p.add_argument("--freeze-scales", choices=("true", "false"), default="true")
    p.add_argument("--min-width", type=float, default=0.25,
                   help="the fraction of each gated layer always kept (0: no floor)")
    p.add_argument("--limit-train", type=int, default=None,
                   help="default: the subset the checkpoint was trained on")
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--work-dir", default=None, help="the runs (default: a temp dir)")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args(argv)

    src = load_compressible(resolve_checkpoint(args.checkpoint))  # a run directory: its best
    train_section = fine_tune_train_section(src.meta, {
        "limit_train": args.limit_train, "limit_test": args.limit_test, "progress": False})
    data = load_run_data(train_section)
    config = ArchitectureLearningConfig(
        learn_epochs=args.learn_epochs, finetune_epochs=args.finetune_epochs,
        learn_lr=args.learn_lr, finetune_lr=args.finetune_lr, width_count=args.width_count,
        width_binarize=args.width_binarize, depth_binarize=args.depth_binarize,
        cost=args.cost, gate_lr=args.gate_lr, freeze_scales=args.freeze_scales == "true",
        binarize_ramp=args.binarize_ramp == "true", min_width=args.min_width,
        train=train_section)
    protocol = EvalProtocol.for_model(src.meta)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        result = learn_architecture(src, work / "learned", config, data, protocol=protocol,
                                    work_dir=work / "runs")
    removed = 1 - result.after["parameters"] / result.before["parameters"]
    lost = result.before["top1"] - result.after["top1"]
    print(widths_table(result.report))
    print(f"parameters {result.before['parameters']:,} -> {result.after['parameters']:,} "
          f"({100 * removed:.1f}% removed); top-1 {result.before['top1']:.4f} -> "
          f"{result.after['top1']:.4f} ({protocol.describe()})")
    base_config = src.meta.get("config") or {}
    write_result("architecture_learning", {
        "checkpoint": args.checkpoint,
        "checkpoint_config": src.meta.get("config"),  # how the start was trained
        "model": src.meta.get("model"),
        "base_epochs": base_config.get("epochs"),
        "extra_epochs": args.learn_epochs + args.finetune_epochs,
        "train_images": len(data[0]), "test_images": len(data[1]),
        "config": config.to_dict(), "protocol": protocol.to_dict(),
        "widths": [{k: r[k] for k in ("layer", "original_width", "learned_width", "linear")}
                   for r in result.report.layers],
        "report": result.report.to_dict(),
        "before": result.before, "gated": result.gated, "cut": result.cut,
        "after": result.after, "parameters_removed": removed, "top1_lost": lost,
        "target": {"parameters_removed_at_least": TARGET_REMOVED,
                   "top1_lost_at_most": TARGET_LOST,
                   "met": bool(removed >= TARGET_REMOVED and lost <= TARGET_LOST)},
        "wall_seconds": time.perf_counter() - started}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

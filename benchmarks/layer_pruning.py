"""Layer pruning of a trained SqueezeNet: the Fires with equal input and output widths scored
without each one on training images, the least harmful dropped (greedily), optionally
fine-tuned (``workflows/layer_pruning.py``), and the result scored on the test images.

    python benchmarks/layer_pruning.py --checkpoint runs/base --num-fires 2 --retrain-epochs 2
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
from squeezelab.train.data import load_run_data  # noqa: E402
from squeezelab.train.evaluate import EvalProtocol  # noqa: E402
from squeezelab.workflows.fine_tuning import fine_tune_train_section  # noqa: E402
from squeezelab.workflows.layer_pruning import LayerPruneConfig, prune_fires  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="the trained model")
    p.add_argument("--num-fires", type=int, default=2)
    p.add_argument("--selection-images", type=int, default=1000)
    p.add_argument("--retrain-epochs", type=int, default=1)
    p.add_argument("--retrain-lr", type=float, default=1e-3)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--work-dir", default=None, help="the runs (default: a temp dir)")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args(argv)

    src = load_compressible(resolve_checkpoint(args.checkpoint))  # a run directory: its best
    train_section = fine_tune_train_section(src.meta, {
        "limit_train": args.limit_train, "limit_test": args.limit_test, "progress": False})
    data = load_run_data(train_section)
    config = LayerPruneConfig(num_fires=args.num_fires, selection_images=args.selection_images,
                              retrain_epochs=args.retrain_epochs, retrain_lr=args.retrain_lr,
                              train=train_section)
    protocol = EvalProtocol.for_model(src.meta)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        result = prune_fires(src, work / "shallow", config, data, protocol=protocol,
                             work_dir=work / "runs")
    record = result.meta["layer_prune"]
    print(f"removed {record['removed']} (Fire indices {record['skip_fires']}): parameters "
          f"{result.before['parameters']:,} -> {result.after['parameters']:,}, top-1 "
          f"{result.before['top1']:.4f} -> {result.after['top1']:.4f} ({protocol.describe()})")
    write_result("layer_pruning", {
        "checkpoint": args.checkpoint,
        "checkpoint_config": src.meta.get("config"),  # how the start was trained
        "model": src.meta.get("model"),
        "train_images": len(data[0]), "test_images": len(data[1]),
        "protocol": protocol.to_dict(), **record,
        "top1_lost": result.before["top1"] - result.after["top1"],
        "parameters_removed": 1 - result.after["parameters"] / result.before["parameters"],
        "macs_removed": 1 - result.after["macs"] / result.before["macs"],
        "wall_seconds": time.perf_counter() - started}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

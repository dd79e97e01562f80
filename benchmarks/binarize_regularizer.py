"""Does the binarisation regulariser sum u^2 (1 - u^2) make a float model binarize with less
loss? The same short training with and without it (``binarize_weight``, train/regularizers.py),
then each model binarized after training, with no retraining (XNOR-Net's alpha * sign(w) and
BinaryConnect's sign(w), Rastegari et al. arXiv 1603.05279, Courbariaux et al. arXiv
1511.00363; first and last layers kept real, as binarize_ does by default) and scored on the
same test images, before and after re-estimating the BatchNorm statistics on training images
(sign(w) has another scale than w, which BatchNorm's running statistics cannot know).

    python benchmarks/binarize_regularizer.py --epochs 3 --limit-train 5000 --limit-test 1000
    python benchmarks/binarize_regularizer.py --epochs 1 --limit-train 200 --limit-test 100 \
        --model-args '{stem_channels: 16}' --seeds 0     # a smoke run
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import spread, write_result  # noqa: E402

from squeezelab.compress.quantization.binary import BinaryConfig, binarize_  # noqa: E402
from squeezelab.data import BatchLoader  # noqa: E402
from squeezelab.train import TrainConfig, train  # noqa: E402
from squeezelab.train.data import load_run_data  # noqa: E402
from squeezelab.train.evaluate import EvalProtocol, evaluate_data  # noqa: E402
from squeezelab.train.regularizers import BinarizeRegularizer  # noqa: E402

METHODS = ("xnor", "binaryconnect")


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, data, images: int = 1024,
                         batch_size: int = 128) -> None:
    """BatchNorm running statistics recomputed as the plain average over ``images`` training
    images (no augmentation) with the model's current weights; other layers unchanged."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    loader = BatchLoader(data, batch_size, train=False, augment=None)
    loader.set_epoch(0)
    was_training = model.training
    model.train()
    seen = 0
    for x, _ in loader:
        model(x)
        seen += len(x)
        if seen >= images:
            break
    model.train(was_training)


def score_binarized(model: nn.Module, train_data, test_data, protocol) -> dict[str, Any]:
    """Per method: top-1 of the binarized copy as it is, and after BatchNorm re-estimation."""
    out = {}
    for method in METHODS:
        b = copy.deepcopy(model).eval()
        binarize_(b, BinaryConfig(method=method))
        plain = evaluate_data(b, test_data, protocol)["top1"]
        reestimate_batchnorm(b, train_data)
        out[method] = {"top1": plain, "top1_bn_reestimated":
                       evaluate_data(b.eval(), test_data, protocol)["top1"]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="squeezenet_cifar")
    p.add_argument("--model-args", default="{}", help="YAML mapping of model arguments")
    p.add_argument("--data", default=None, help="default: the shared CIFAR-10 copy")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit-train", type=int, default=5000)
    p.add_argument("--limit-test", type=int, default=1000)
    p.add_argument("--weights", nargs="+", type=float, default=[1e-4, 1e-3],
                   help="binarize_weight of the regularised runs (one run per value)")
    p.add_argument("--scale", default="filter", choices=("filter", "none"))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--precision", default="fp32")
    p.add_argument("--out-dir", default=None, help="run directories (default: a temp dir)")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args(argv)
    if not all(w > 0 for w in args.weights):
        raise ValueError(f"--weights must be > 0 (the regularised runs), got {args.weights}")
    model_args = yaml.safe_load(args.model_args) or {}

    base = TrainConfig(model=args.model, model_args=model_args, data=args.data,
                       epochs=args.epochs, batch_size=args.batch_size,
                       limit_train=args.limit_train, limit_test=args.limit_test, subset_seed=0,
                       precision=args.precision, channels_last=False, progress=False)
    data = load_run_data(base)
    protocol = EvalProtocol()
    kinds = {"plain": 0.0, **{f"binarize_weight={w:g}": w for w in args.weights}}
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out_dir or tmp
        for seed in args.seeds:
            for kind, weight in kinds.items():
                cfg = base.replace(seed=seed, out_dir=out_dir,
                                   run_name=f"{kind.replace('=', '')}-seed{seed}",
                                   binarize_weight=weight, binarize_scale=args.scale)
                result = train(cfg, data=data)
                model = result.model.eval()
                hook = BinarizeRegularizer(1.0, args.scale)
                row = {"seed": seed, "binarize_weight": weight,
                       "float_top1": evaluate_data(model, data[1], protocol)["top1"],
                       "penalty": float(hook.penalty(model)),
                       "binarized": score_binarized(model, data[0], data[1], protocol)}
                runs[kind].append(row)
                print(f"{kind:<22} seed {seed}: float {row['float_top1']:.4f}  " + "  ".join(
                    f"{m} {row['binarized'][m]['top1']:.4f} (BN re-estimated "
                    f"{row['binarized'][m]['top1_bn_reestimated']:.4f})" for m in METHODS),
                    flush=True)
    summary: dict[str, Any] = {}
    for kind, rows in runs.items():
        summary[kind] = {"float_top1": spread([r["float_top1"] for r in rows])}
        for m in METHODS:
            for key in ("top1", "top1_bn_reestimated"):
                summary[kind][f"{m}_{key}"] = spread([r["binarized"][m][key] for r in rows])
    write_result("binarize_regularizer", {
        "question": "does training with the binarisation regulariser make post-training "
                    "binarization (no retraining) lose less top-1?",
        "model": args.model, "model_args": model_args, "config": base.to_dict(),
        "binarize_weights": args.weights, "binarize_scale": args.scale, "seeds": args.seeds,
        "train_images": len(data[0]), "test_images": len(data[1]),
        "protocol": protocol.to_dict(), "binarized_layers": "all Conv2d but the first and "
        "last (binarize_'s default); BN re-estimation: 1,024 training images, no augmentation",
        "runs": runs, "summary": summary,
        "wall_seconds": time.perf_counter() - started}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

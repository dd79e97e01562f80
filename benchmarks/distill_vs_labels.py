"""A distilled CIFAR SqueezeNet against the same network trained on labels alone, with the same
epochs, schedule and seeds (Hinton, Vinyals & Dean, arXiv 1503.02531). The teacher checkpoint is
given (train one with recipes/teacher_resnet18_cifar.yaml); the teacher's own accuracy is
measured on the same test set.

    python benchmarks/distill_vs_labels.py --teacher runs/teacher_resnet18_cifar --epochs 30
    python benchmarks/distill_vs_labels.py --teacher T --epochs 1 --limit-train 500 \
        --limit-test 200 --seeds 0        # a smoke run
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from squeezelab.data import BatchLoader  # noqa: E402
from squeezelab.train import TrainConfig, evaluate, train  # noqa: E402
from squeezelab.train.data import load_run_data  # noqa: E402
from squeezelab.train.distill import DistillConfig, DistillHook, load_teacher  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="teacher checkpoint or run directory")
    p.add_argument("--model", default="squeezenet_cifar")
    p.add_argument("--data", default=None, help="default: the shared CIFAR-10 copy")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="adamw")
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=0.3)
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="on the label loss (0: as measured; the model's default is 0.1)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--temperature", "-T", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--mode", default="kd", choices=("kd", "logits"))
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--precision", default="auto")
    p.add_argument("--out-dir", default=None, help="run directories (default: a temp dir)")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args(argv)

    # Every seed trains on one subset (subset_seed 0), and every run's config says so: the
    # images are loaded once, by the function train() itself loads a config's images with.
    base = TrainConfig(model=args.model, data=args.data, epochs=args.epochs,
                       batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                       weight_decay=args.weight_decay,
                       warmup_epochs=min(args.warmup_epochs, args.epochs),
                       label_smoothing=args.label_smoothing, limit_train=args.limit_train,
                       limit_test=args.limit_test, subset_seed=0, precision=args.precision,
                       progress=False)
    data = load_run_data(base)
    distill = DistillConfig(teacher=args.teacher, temperature=args.temperature,
                            alpha=args.alpha, mode=args.mode)
    teacher = load_teacher(args.teacher)
    test_loader = BatchLoader(data[1], 256, train=False)
    teacher_top1 = evaluate(teacher, test_loader, data[1].num_classes)["top1"]

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out_dir or tmp
        runs = {"labels": [], "distilled": []}
        for seed in args.seeds:
            for kind in runs:
                cfg = base.replace(seed=seed, out_dir=out_dir, run_name=f"{kind}-seed{seed}")
                hooks = [DistillHook(distill, teacher=teacher)] if kind == "distilled" else []
                result = train(cfg, hooks=hooks, data=data)
                runs[kind].append({"seed": seed, "test_top1": result.final["test_top1"],
                                   "seconds": sum(r["seconds"] for r in result.history)})
                print(f"{kind:<9} seed {seed}: test top-1 {result.final['test_top1']:.4f}")
    summary = {}
    for kind, rows in runs.items():
        accs = [r["test_top1"] for r in rows]
        summary[kind] = {"mean_top1": statistics.fmean(accs),
                         "std_top1": statistics.stdev(accs) if len(accs) > 1 else 0.0}
    print(f"teacher {teacher_top1:.4f}; labels {summary['labels']['mean_top1']:.4f}, "
          f"distilled {summary['distilled']['mean_top1']:.4f} (mean over {len(args.seeds)} "
          "seed(s))")
    write_result("distill_vs_labels", {"settings": vars(args), "teacher_top1": teacher_top1,
                                       "summary": summary, "runs": runs,
                                       "torch_threads": torch.get_num_threads()}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

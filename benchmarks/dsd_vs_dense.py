"""Dense-sparse-dense (Han et al. 2017, arXiv 1607.04381) against the dense model trained for
the same total number of epochs, with the same seeds, config and data: test top-1 per seed,
mean and spread, and the per-seed difference.

Two dense baselines, both the same total epochs: one learning-rate schedule over the whole run
(what a user trains by default), and DSD's own phase schedule with nothing pruned (sparsity 0:
the same restarts and the re-dense phase at the lower rate), which isolates the sparse phase -
the paper's check that DSD's gain is not just the longer, lower-rate training.

    python benchmarks/dsd_vs_dense.py --epochs 5-3-5 --seeds 0 1 2          # the study
    python benchmarks/dsd_vs_dense.py --epochs 1-1-1 --limit-train 500      # a quick check
    python benchmarks/dsd_vs_dense.py --from runs/cifar10_fast --epochs 3-5  # the paper's way

--from starts every run from one trained dense model (a checkpoint or run directory), as the
paper applies DSD to converged models: DSD's sparse + re-dense phases against the same model
trained on densely for the same epochs.

Training settings come from --recipe (default recipes/dsd_squeezenet_cifar.yaml, whose dsd:
section is replaced by --sparsity / --epochs / --layers / --exclude).

Every protocol measured so far, with its command and result: benchmarks/results/dsd_vs_dense.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import spread, write_result  # noqa: E402

from squeezelab.checkpoint import model_from_checkpoint, resolve_checkpoint  # noqa: E402
from squeezelab.models import create_model  # noqa: E402
from squeezelab.train.config import TrainConfig  # noqa: E402
from squeezelab.workflows.dsd import LR_SCHEDULES, DSDConfig, parse_phase_epochs  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "dsd_squeezenet_cifar.yaml"
#: every seed trains on the same --limit-train subset, chosen under this seed, so the runs of
#: one protocol differ only in initialisation and batch order (dsd_vs_dense_unseen.py relies
#: on it to find the images no run saw)
SUBSET_SEED = 0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default=str(RECIPE))
    p.add_argument("--sparsity", type=float, default=0.4)
    p.add_argument("--epochs", default="5-3-5",
                   help="DENSE-SPARSE-REDENSE epochs (SPARSE-REDENSE with --from)")
    p.add_argument("--from", dest="from_checkpoint", default=None,
                   help="start every run from this trained dense checkpoint or run directory")
    p.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate")
    p.add_argument("--cycles", type=int, default=1)
    p.add_argument("--layers", action="append", default=[], metavar="LAYER",
                   help="layer type (squeeze, expand1x1, expand3x3, classifier, conv3x3, ...) "
                        "or glob ('features.0.*') to prune, repeatable; default: every layer")
    p.add_argument("--exclude", action="append", default=[], metavar="LAYER",
                   help="layer type or glob never pruned, repeatable")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="phase",
                   help="DSD's learning-rate schedule across the phases (see DSDConfig)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--model", default=None, help="override the recipe's model")
    p.add_argument("--data", default=None)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--out-dir", default="runs/dsd_vs_dense")
    p.add_argument("-o", "--output", default=None,
                   help="JSON path (default: benchmarks/results/dsd_vs_dense.json)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # Both parsed before any data is loaded: bad input fails at once.
    dsd_cfg = DSDConfig(sparsity=args.sparsity, cycles=args.cycles,
                        lr_schedule=args.lr_schedule, layers=args.layers, exclude=args.exclude,
                        **parse_phase_epochs(args.epochs))
    overrides = {k: v for k, v in dict(model=args.model, data=args.data,
                                       limit_train=args.limit_train,
                                       limit_test=args.limit_test,
                                       batch_size=args.batch_size,
                                       lr=args.lr).items() if v is not None}
    # Every seed trains on the one SUBSET_SEED subset; the runs' configs record it, so a run
    # resumed or re-run from its config.yaml trains on the same images.
    overrides.update(out_dir=args.out_dir, progress=False, epochs=dsd_cfg.total_epochs,
                     subset_seed=SUBSET_SEED)
    base = TrainConfig.from_yaml(args.recipe, overrides)
    start = None
    if args.from_checkpoint is not None:
        start = resolve_checkpoint(args.from_checkpoint)
        if dsd_cfg.dense_epochs:
            raise SystemExit(f"--from starts from a trained dense model: give --epochs as "
                             f"SPARSE-REDENSE (such as 3-5), not {args.epochs}")
        model, ckpt = model_from_checkpoint(start)  # a bad checkpoint fails before any training
        base = base.replace(model=ckpt.meta["model"]["name"])
    else:
        model_args = {k: v for k, v in base.model_args.items() if k != "num_classes"}
        model = create_model(base.model, **model_args)
    # --layers / --exclude naming no layer of the model that is trained fails here, not after
    # the dense run (with --from that is the checkpoint's model, whatever the recipe says).
    pruned_layers = list(dsd_cfg.prune_config().layer_targets(model))

    from squeezelab.train import train
    from squeezelab.train.data import load_run_data
    from squeezelab.workflows.dsd import run_dsd

    data = load_run_data(base)  # the images every run's config.yaml names, loaded once
    per_seed = []
    for seed in args.seeds:
        # Run names carry the phases, cycles and sparsity; a protocol that differs in anything
        # else needs its own --out-dir (a finished run of the same name is kept, and the new
        # one goes beside it as NAME-2; an unfinished one stops the benchmark at once).
        cycles = f"-x{args.cycles}" if args.cycles > 1 else ""
        which = "".join(f"-{word}-{'+'.join(names)}".replace("*", "")
                        for word, names in (("only", args.layers), ("not", args.exclude))
                        if names)
        tag = f"{'from-' if start else ''}s{seed}-{args.epochs}{cycles}-{args.sparsity}{which}"
        print(f"seed {seed}: dense for {dsd_cfg.total_epochs} epochs", flush=True)
        dense = train(base.replace(seed=seed, run_name=f"dense-{tag}"), data=data,
                      model=model_from_checkpoint(start)[0].train() if start else None)
        print(f"seed {seed}: DSD {args.epochs} at sparsity {args.sparsity}", flush=True)
        dsd = run_dsd(base.replace(seed=seed, run_name=f"dsd-{tag}-{args.lr_schedule}"),
                      dsd_cfg, data=data, from_checkpoint=start)
        print(f"seed {seed}: dense on DSD's schedule (nothing pruned)", flush=True)
        phased = run_dsd(base.replace(seed=seed,
                                      run_name=f"dense-phased-{tag}-{args.lr_schedule}"),
                         dataclasses.replace(dsd_cfg, sparsity=0.0), data=data,
                         from_checkpoint=start)
        per_seed.append({
            "seed": seed,
            "dense_test_top1": dense.final["test_top1"],
            "dsd_test_top1": dsd.final["test_top1"],
            "dsd_minus_dense": dsd.final["test_top1"] - dense.final["test_top1"],
            "dense_phased_test_top1": phased.final["test_top1"],
            "dsd_minus_dense_phased": dsd.final["test_top1"] - phased.final["test_top1"],
            "dense_seconds": sum(r["seconds"] for r in dense.history),
            "dsd_seconds": sum(r["seconds"] for r in dsd.history),
            "dsd_phases": [{k: r.get(k) for k in ("epoch", "phase", "sparsity", "test_top1",
                                                  "lr")} for r in dsd.history],
            "dense_run": str(dense.run_dir), "dsd_run": str(dsd.run_dir),
            "dense_phased_run": str(phased.run_dir),
        })
    write_result("dsd_vs_dense", {
        "recipe": args.recipe, "model": base.model, "data": data[0].source,
        "config": base.to_dict(),  # the recipe as resolved, so the result names its settings
        "from_checkpoint": str(start) if start else None,
        "start_test_top1": ckpt.meta.get("metrics", {}).get("test_top1") if start else None,
        "train_images": len(data[0]), "test_images": len(data[1]),
        "dsd": dsd_cfg.to_dict(), "pruned_layers": pruned_layers,
        "total_epochs": dsd_cfg.total_epochs, "seeds": args.seeds,
        "dense_test_top1": spread([s["dense_test_top1"] for s in per_seed]),
        "dsd_test_top1": spread([s["dsd_test_top1"] for s in per_seed]),
        "dsd_minus_dense": spread([s["dsd_minus_dense"] for s in per_seed]),
        "dense_phased_test_top1": spread([s["dense_phased_test_top1"] for s in per_seed]),
        "dsd_minus_dense_phased": spread([s["dsd_minus_dense_phased"] for s in per_seed]),
        "per_seed": per_seed,
    }, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

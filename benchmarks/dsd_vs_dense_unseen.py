"""Re-score dense-vs-DSD results on the training images their runs never saw.

A ``benchmarks/dsd_vs_dense.py`` run with ``--limit-train N`` trains every model on the same
balanced N-image subset of the training split (chosen under its config's ``subset_seed``, 0),
so the rest of the split (40,000 images for N = 10,000 on CIFAR-10) is a second held-out set,
four times the size of the test split and never looked at while protocols were chosen. This
script evaluates each run's final weights (the ones the result's test top-1 came from) on those
images, in fp32, and reports the same per-seed differences as the result itself:

    python benchmarks/dsd_vs_dense_unseen.py benchmarks/results/dsd_vs_dense_converged60_10k.json \\
        benchmarks/results/dsd_vs_dense_converged60_10k_seeds12.json -o unseen.json

Results given together are one protocol over several seeds; they must agree in data, subset and
DSD settings. A run started ``--from`` a dense checkpoint is accepted only when that checkpoint
was trained on the same subset (else the "unseen" images were seen).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import spread, write_result  # noqa: E402
from dsd_vs_dense import SUBSET_SEED  # noqa: E402

from squeezelab.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402

ARMS = ("dense", "dsd", "dense_phased")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", help="dsd_vs_dense.py result JSON files")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("-o", "--output", default=None,
                   help="JSON path (default: benchmarks/results/dsd_vs_dense_unseen.json)")
    return p.parse_args(argv)


def unseen_indices(labels, num_classes: int, limit: int, seed: int):
    """Indices of the training images outside the balanced ``limit``-image subset, ascending."""
    import torch

    from squeezelab.data.sources import balanced_indices

    seen = torch.zeros(labels.numel(), dtype=torch.bool)
    seen[balanced_indices(labels, num_classes, limit, seed)] = True
    return torch.nonzero(~seen).flatten()


def read_protocol(paths: list[str]) -> tuple[dict, list[dict]]:
    """The shared settings of ``paths`` (one protocol) and all their per-seed records."""
    results = []
    for path in paths:
        try:
            result = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"{path}: not a readable dsd_vs_dense result ({exc})") from None
        if result.get("benchmark") != "dsd_vs_dense":
            raise SystemExit(f"{path}: not a dsd_vs_dense result (benchmark="
                             f"{result.get('benchmark')!r})")
        results.append((path, result))
    first_path, first = results[0]
    keys = ("data", "model", "dsd", "from_checkpoint", "total_epochs", "train_images")
    for path, result in results[1:]:
        differ = [k for k in keys if result.get(k) != first.get(k)]
        if differ:
            raise SystemExit(f"{path} differs from {first_path} in {differ}: give the results "
                             f"of one protocol at a time")
    if "config" not in first:  # results written before the JSON carried the config
        import yaml

        first["config"] = yaml.safe_load(
            (Path(first["per_seed"][0]["dense_run"]) / "config.yaml").read_text())
    limit = first["config"].get("limit_train")
    if limit is None:
        raise SystemExit(f"{first_path} trained on the whole training split (no "
                         f"limit_train): no training image is unseen")
    # Results written before configs carried subset_seed all trained on the SUBSET_SEED subset.
    subset_seed = first["config"].get("subset_seed")
    subset_seed = SUBSET_SEED if subset_seed is None else subset_seed
    start = first.get("from_checkpoint")
    if start:
        start_cfg = load_checkpoint(start).meta.get("config") or {}
        start_subset = start_cfg.get("subset_seed")
        start_subset = start_cfg.get("seed", 0) if start_subset is None else start_subset
        if (start_cfg.get("limit_train"), start_subset) != (limit, subset_seed):
            raise SystemExit(f"{first_path} starts from {start}, trained with limit_train="
                             f"{start_cfg.get('limit_train')} on the seed-{start_subset} "
                             f"subset, not on the {limit}-image seed-{subset_seed} subset: its "
                             f"unseen images would not be unseen")
    seeds = [s for _, result in results for s in result["per_seed"]]
    return {**first, "limit_train": limit, "subset_seed": subset_seed,
            "paths": [p for p, _ in results]}, seeds


def main(argv=None) -> int:
    args = parse_args(argv)
    protocol, seeds = read_protocol(args.results)

    import torch

    from squeezelab.data import BatchLoader, load_split
    from squeezelab.train.evaluate import evaluate

    cfg = protocol["config"]
    train = load_split(protocol["data"], "train", root=cfg.get("data_root"),
                       image_size=cfg.get("image_size"), progress=False)
    unseen = train.subset(unseen_indices(train.labels, train.num_classes,
                                         protocol["limit_train"], protocol["subset_seed"]))
    loader = BatchLoader(unseen, args.batch_size, train=False, augment=None)
    per_seed = []
    for record in seeds:
        scores = {}
        for arm in ARMS:
            run = Path(record[f"{arm}_run"])
            model, _ = model_from_checkpoint(run / "checkpoints" / "last.json")
            loader.set_epoch(0)
            scores[arm] = evaluate(model, loader, unseen.num_classes, torch.device("cpu"),
                                   "fp32", test_time_flip=bool(cfg.get("test_time_flip")))["top1"]
            print(f"seed {record['seed']} {arm}: {scores[arm]:.4f} on {len(unseen)} unseen "
                  f"training images", flush=True)
        per_seed.append({
            "seed": record["seed"],
            **{f"{arm}_unseen_top1": scores[arm] for arm in ARMS},
            "dsd_minus_dense": scores["dsd"] - scores["dense"],
            "dsd_minus_dense_phased": scores["dsd"] - scores["dense_phased"],
            "test_dsd_minus_dense": record["dsd_minus_dense"],
        })
    write_result("dsd_vs_dense_unseen", {
        "results": protocol["paths"], "data": protocol["data"], "model": protocol["model"],
        "dsd": protocol["dsd"], "from_checkpoint": protocol.get("from_checkpoint"),
        "train_images": protocol["train_images"], "unseen_images": len(unseen),
        "subset_seed": protocol["subset_seed"], "precision": "fp32",
        **{f"{arm}_unseen_top1": spread([s[f"{arm}_unseen_top1"] for s in per_seed])
           for arm in ARMS},
        "dsd_minus_dense": spread([s["dsd_minus_dense"] for s in per_seed]),
        "dsd_minus_dense_phased": spread([s["dsd_minus_dense_phased"] for s in per_seed]),
        "per_seed": per_seed,
    }, args.output or str(Path(__file__).resolve().parent / "results" /
                          "dsd_vs_dense_unseen.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

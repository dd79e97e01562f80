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

Every model is scored image by image, so each difference also gets its paired standard error
(``squeezelab.train.paired_difference``): how far it could move with another draw of images.
``--split test`` scores the test split the result itself was measured on (any result, the
full-training-set ones too), to give its differences that error bar.
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
from squeezelab.train.config import data_seed_of  # noqa: E402

ARMS = ("dense", "dsd", "dense_phased")
SPLITS = ("unseen", "test")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", help="dsd_vs_dense.py result JSON files")
    p.add_argument("--split", choices=SPLITS, default="unseen",
                   help="unseen: the training images outside the runs' subset; test: the test "
                        "split the results were measured on")
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


def read_protocol(paths: list[str], split: str = "unseen") -> tuple[dict, list[dict]]:
    """The shared settings of ``paths`` (one protocol) and all their per-seed records; for the
    unseen split, refuses results whose runs saw every training image."""
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
    # Results written before configs carried subset_seed all trained on the SUBSET_SEED subset.
    subset_seed = first["config"].get("subset_seed")
    subset_seed = SUBSET_SEED if subset_seed is None else subset_seed
    seeds = [s for _, result in results for s in result["per_seed"]]
    protocol = {**first, "limit_train": limit, "subset_seed": subset_seed,
                "paths": [p for p, _ in results]}
    if split == "test":
        return protocol, seeds
    if limit is None:
        raise SystemExit(f"{first_path} trained on the whole training split (no "
                         f"limit_train): no training image is unseen")
    start = first.get("from_checkpoint")
    if start:
        start_cfg = load_checkpoint(start).meta.get("config") or {}
        start_subset = data_seed_of(start_cfg)
        if (start_cfg.get("limit_train"), start_subset) != (limit, subset_seed):
            raise SystemExit(f"{first_path} starts from {start}, trained with limit_train="
                             f"{start_cfg.get('limit_train')} on the seed-{start_subset} "
                             f"subset, not on the {limit}-image seed-{subset_seed} subset: its "
                             f"unseen images would not be unseen")
    return protocol, seeds


def score_images(protocol: dict, split: str):
    """The images to score on: the training images outside the subset, or the test split the
    runs were measured on (its own --limit-test subset, if any)."""
    from squeezelab.data import load_split

    cfg = protocol["config"]
    common = dict(root=cfg.get("data_root"), image_size=cfg.get("image_size"), progress=False)
    if split == "test":
        return load_split(protocol["data"], "test", limit=cfg.get("limit_test"),
                          seed=protocol["subset_seed"], **common)
    train = load_split(protocol["data"], "train", **common)
    return train.subset(unseen_indices(train.labels, train.num_classes,
                                       protocol["limit_train"], protocol["subset_seed"]))


def main(argv=None) -> int:
    args = parse_args(argv)
    protocol, seeds = read_protocol(args.results, args.split)

    import torch

    from squeezelab.data import BatchLoader
    from squeezelab.train.evaluate import paired_difference, top1_correct

    cfg = protocol["config"]
    images = score_images(protocol, args.split)
    loader = BatchLoader(images, args.batch_size, train=False, augment=None)
    where = "unseen training images" if args.split == "unseen" else "test images"
    hits = {arm: [] for arm in ARMS}  # per arm: one bool row per seed
    for record in seeds:
        for arm in ARMS:
            run = Path(record[f"{arm}_run"])
            model, _ = model_from_checkpoint(run / "checkpoints" / "last.json")
            loader.set_epoch(0)
            hits[arm].append(top1_correct(model, loader, torch.device("cpu"), "fp32",
                                          test_time_flip=bool(cfg.get("test_time_flip"))))
            print(f"seed {record['seed']} {arm}: {hits[arm][-1].double().mean().item():.4f} on "
                  f"{len(images)} {where}", flush=True)
    hits = {arm: torch.stack(rows) for arm, rows in hits.items()}
    top1 = {arm: rows.double().mean(dim=1).tolist() for arm, rows in hits.items()}
    paired = {name: paired_difference(hits["dsd"], hits[baseline])
              for name, baseline in (("dsd_minus_dense", "dense"),
                                     ("dsd_minus_dense_phased", "dense_phased"))}
    per_seed = []
    for i, record in enumerate(seeds):
        per_seed.append({
            "seed": record["seed"],
            **{f"{arm}_{args.split}_top1": top1[arm][i] for arm in ARMS},
            "dsd_minus_dense": top1["dsd"][i] - top1["dense"][i],
            "dsd_minus_dense_phased": top1["dsd"][i] - top1["dense_phased"][i],
            # the images only DSD / only dense gets right: all of the difference comes from them
            "dsd_only_correct": paired["dsd_minus_dense"]["gained"][i],
            "dense_only_correct": paired["dsd_minus_dense"]["lost"][i],
            "test_dsd_minus_dense": record["dsd_minus_dense"],  # as the result recorded it
        })
    default_output = Path(__file__).resolve().parent / "results" / (
        "dsd_vs_dense_unseen.json" if args.split == "unseen" else "dsd_vs_dense_test_paired.json")
    write_result("dsd_vs_dense_unseen", {
        "results": protocol["paths"], "data": protocol["data"], "model": protocol["model"],
        "dsd": protocol["dsd"], "from_checkpoint": protocol.get("from_checkpoint"),
        "split": args.split, "train_images": protocol["train_images"],
        f"{args.split}_images": len(images), "subset_seed": protocol["subset_seed"],
        "precision": "fp32",
        **{f"{arm}_{args.split}_top1": spread(top1[arm]) for arm in ARMS},
        # spread over seeds, and the paired standard error of the seed mean from sampling images
        **{name: {**spread([s[name] for s in per_seed]), "image_se": paired[name]["image_se"]}
           for name in paired},
        "per_seed": per_seed,
    }, args.output or str(default_output))
    return 0


if __name__ == "__main__":
    sys.exit(main())

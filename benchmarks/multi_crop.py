"""Multi-crop testing on a trained CIFAR model: top-1 of one checkpoint on the same test images
under one image, flip-averaging, 10 crops (4 corners + centre, and their mirrors) and
GoogLeNet's 144 crops (arXiv 1409.4842), each crop at the model's 32-pixel input size from the
image padded by 4 black pixels (the translations CIFAR training crops make). A small-scale
stand-in for the 224-pixel protocols (224-pixel crops of 256-pixel images), which a 2-core CPU
cannot score in reasonable time; paired differences against the single image.

    python benchmarks/multi_crop.py --checkpoint runs/base --limit-test 1000
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from squeezelab.data import BatchLoader  # noqa: E402
from squeezelab.inference import load_model  # noqa: E402
from squeezelab.train.data import load_run_data  # noqa: E402
from squeezelab.train.evaluate import (  # noqa: E402
    EvalProtocol,
    black_pixel,
    paired_difference,
    top1_correct,
)
from squeezelab.workflows.fine_tuning import fine_tune_train_section  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--limit-test", type=int, default=1000)
    p.add_argument("--pad", type=int, default=4)
    p.add_argument("--crops", nargs="+", type=int, default=[10, 144])
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args(argv)

    model, meta = load_model(args.checkpoint)
    section = fine_tune_train_section(meta, {"limit_test": args.limit_test, "progress": False})
    _, test = load_run_data(section, train=False)
    size = int(test.image_size[0])
    protocols = {"single": EvalProtocol(), "flip": EvalProtocol(flip=True)}
    for n in args.crops:
        protocols[f"{n}-crop"] = EvalProtocol(crops=n, crop_size=size, crop_pad=args.pad)
    loader = BatchLoader(test, 250, train=False, augment=None)
    fill = black_pixel(test.mean, test.std)
    hits, rows = {}, {}
    for name, protocol in protocols.items():
        started = time.perf_counter()
        loader.set_epoch(0)
        hits[name] = top1_correct(model, loader, torch.device("cpu"), protocol=protocol,
                                  pad_value=fill)
        rows[name] = {"protocol": protocol.to_dict(), "label": protocol.describe(),
                      "top1": hits[name].double().mean().item(),
                      "seconds": time.perf_counter() - started}
        print(f"{protocol.describe():<45} top-1 {rows[name]['top1']:.4f}", flush=True)
    for name in rows:
        if name != "single":
            rows[name]["minus_single"] = paired_difference(hits[name], hits["single"])
    write_result("multi_crop", {
        "checkpoint": args.checkpoint,
        "checkpoint_config": meta.get("config"),  # how the start was trained
        "model": meta.get("model"),
        "test_images": len(test), "image_size": size, "pad": args.pad,
        "stand_in": "crops at the model input size from black-padded CIFAR images, not "
                    "224-pixel crops of 256-pixel images",
        "results": rows}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

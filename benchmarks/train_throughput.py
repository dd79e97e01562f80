"""Training throughput: ``squeezelab train``'s data path and step against a plain PyTorch loop.

The plain loop is what a tutorial writes: per-image PIL decoding and transforms (random crop
with 4-pixel padding, horizontal flip, to-tensor, normalise) in a DataLoader with 2 workers,
fp32, NCHW, SGD with momentum. squeezelab's path decodes once into a uint8 tensor cache,
augments whole batches as tensors, and uses the precision and memory layout its autotune picks.
Both are timed end to end (data included) over the same number of steps at the same batch size,
after warm-up steps, and the achieved FLOP/s are printed beside the CPU's estimated peak.

    python benchmarks/train_throughput.py                     # default model and E4
    python benchmarks/train_throughput.py --models squeezenet_cifar --steps 10
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_peak_flops, write_result  # noqa: E402

from squeezelab import create_model  # noqa: E402
from squeezelab.data import BatchLoader, resolve_default_cifar10  # noqa: E402
from squeezelab.metrics import count_macs  # noqa: E402
from squeezelab.train.autotune import choose_speed_settings  # noqa: E402
from squeezelab.train.config import TrainConfig  # noqa: E402
from squeezelab.train.data import load_run_data  # noqa: E402
from squeezelab.train.evaluate import autocast_context  # noqa: E402

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


class JpegFolder(torch.utils.data.Dataset):
    """The tutorial dataset: open each JPEG with PIL and transform it one image at a time."""

    def __init__(self, root: Path):
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        self.items = [(str(f), i) for i, c in enumerate(classes)
                      for f in sorted((root / "train" / c).iterdir())]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        img = np.pad(img, ((4, 4), (4, 4), (0, 0)))  # RandomCrop(32, padding=4)
        y, x = np.random.randint(0, 9, size=2)
        img = img[y:y + 32, x:x + 32]
        if np.random.rand() < 0.5:  # RandomHorizontalFlip
            img = img[:, ::-1]
        img = (img - MEAN) / STD  # ToTensor + Normalize
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), label


def time_plain(model_name: str, root: Path, batch_size: int, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(JpegFolder(root), batch_size=batch_size, shuffle=True,
                                         num_workers=2, drop_last=True,
                                         persistent_workers=False)
    it = iter(loader)
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        images, labels = next(it)
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - t0)


def time_squeezelab(model_name: str, data, batch_size: int, steps: int, warmup: int
                    ) -> tuple[float, dict]:
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10)
    probe = BatchLoader(data, batch_size, train=True, augment="cifar")
    probe.set_epoch(0)
    images, labels = next(iter(probe))
    speed = choose_speed_settings(model, images, labels)
    if speed["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loader = BatchLoader(data, batch_size, train=True, augment="cifar",
                         channels_last=speed["channels_last"])
    loader.set_epoch(1)
    it = iter(loader)
    device = torch.device("cpu")
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        images, labels = next(it)
        with autocast_context(device, speed["precision"]):
            loss = F.cross_entropy(model(images).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - t0), speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["squeezenet_cifar", "squeezenet_cifar_e4"])
    parser.add_argument("--data", default=None, help="class-folder root (default: CIFAR-10 copy)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    root = Path(args.data or resolve_default_cifar10())
    if not root.is_dir():
        raise SystemExit(f"the benchmark needs a class-folder copy of CIFAR-10, not {root}")
    # the images `squeezelab train --data ROOT` trains on, loaded as train() loads them
    data = load_run_data(TrainConfig(data=str(root), progress=False), test=False).train
    peak = cpu_peak_flops()
    results = []
    for name in args.models:
        macs = count_macs(create_model(name, num_classes=10), 32)
        flops_per_image = 6 * macs  # forward 2*MACs, backward about twice the forward
        plain = time_plain(name, root, args.batch_size, args.steps, args.warmup)
        ours, speed = time_squeezelab(name, data, args.batch_size, args.steps, args.warmup)
        row = {
            "model": name, "batch_size": args.batch_size, "steps": args.steps,
            "macs_per_image": macs,
            "plain_images_per_s": plain, "squeezelab_images_per_s": ours,
            "speedup": ours / plain, "squeezelab_settings": speed,
            "squeezelab_flops": ours * flops_per_image,
            "plain_flops": plain * flops_per_image,
        }
        # Compared with the peak of the precision the step ran in: bf16 has its own where the
        # CPU has bf16 instructions (AVX-512 BF16, AMX).
        row["peak_flops"] = peak["bf16_flops" if speed["precision"] == "bf16" else "flops"]
        row["fraction_of_peak"] = row["squeezelab_flops"] / row["peak_flops"]
        results.append(row)
        print(f"{name}: plain {plain:.0f} img/s, squeezelab {ours:.0f} img/s "
              f"({ours / plain:.2f}x; {speed['precision']}, "
              f"{'channels_last' if speed['channels_last'] else 'NCHW'}); "
              f"{row['squeezelab_flops'] / 1e9:.1f} GFLOP/s of an estimated "
              f"{row['peak_flops'] / 1e9:.0f} GFLOP/s {speed['precision']} peak "
              f"({100 * row['fraction_of_peak']:.0f}%)",
              flush=True)
    write_result("train_throughput", {"results": results, "cpu_peak": peak}, args.output)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    main()

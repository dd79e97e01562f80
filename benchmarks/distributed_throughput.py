"""Data-parallel training throughput on one machine: images/s with 1 and N processes (DDP,
gloo on CPU / NCCL on GPU), the time of one all-reduce of a gradient-sized buffer, and the bytes
each rank sends per step against the model's size.

The SqueezeNet paper (Iandola et al., arXiv 1602.07360, section 1) argues that small models
train faster in distributed settings because the communication per step is proportional to the
parameter count; this script puts numbers on that for a few registered models. A ring
all-reduce sends 2 (N - 1) / N times the gradient's bytes from every rank per step.

    python benchmarks/distributed_throughput.py
    python benchmarks/distributed_throughput.py --models squeezenet_cifar resnet18_cifar \
        --nprocs 1 2 --steps 20 --batch-size 64
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, args: dict, out: str) -> None:
    import torch.distributed as dist
    import torch.nn as nn
    import torch.nn.functional as F

    from squeezelab.models import create_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, args["threads_per_proc"]))
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world_size
    device = torch.device("cuda", rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    distributed = world_size > 1
    if distributed:
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    model = create_model(args["model"]).to(device)
    numel = sum(p.numel() for p in model.parameters())
    net = nn.parallel.DistributedDataParallel(model) if distributed else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    size = args["image_size"]
    # synthetic batches: this measures the step and the communication, not the data path
    images = torch.randn(args["batch_size"], 3, size, size, device=device)
    labels = torch.randint(0, 10, (args["batch_size"],), device=device)

    def sync():
        if use_cuda:
            torch.cuda.synchronize()

    def step():
        loss = F.cross_entropy(net(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args["warmup"]):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(args["steps"]):
        step()
    sync()
    seconds = time.perf_counter() - t0
    allreduce_s = None
    if distributed:
        buffer = torch.zeros(numel, device=device)  # fp32 gradients: numel * 4 bytes
        for _ in range(2):
            dist.all_reduce(buffer)
        sync()
        t1 = time.perf_counter()
        for _ in range(args["steps"]):
            dist.all_reduce(buffer)
        sync()
        allreduce_s = (time.perf_counter() - t1) / args["steps"]
        dist.barrier()
    if rank == 0:
        grad_bytes = numel * 4
        Path(out).write_text(json.dumps({
            "model": args["model"], "processes": world_size, "device": str(device),
            "parameters": numel, "model_size_bytes": grad_bytes,
            "batch_size_per_process": args["batch_size"], "steps": args["steps"],
            "images_per_s": world_size * args["batch_size"] * args["steps"] / seconds,
            "step_seconds": seconds / args["steps"],
            "allreduce_seconds_per_step": allreduce_s,
            "bytes_sent_per_rank_per_step": (2 * (world_size - 1) / world_size * grad_bytes
                                             if distributed else 0),
        }))
    if distributed:
        dist.destroy_process_group()


def measure(model: str, nproc: int, args: argparse.Namespace) -> dict:
    settings = dict(model=model, batch_size=args.batch_size, image_size=args.image_size,
                    steps=args.steps, warmup=args.warmup,
                    threads_per_proc=args.threads or max(1, (os.cpu_count() or 1) // nproc))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        mp.start_processes(_worker, args=(nproc, _free_port(), settings, out), nprocs=nproc,
                           join=True, start_method="spawn")
        return json.loads(Path(out).read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["squeezenet_cifar", "resnet18_cifar"])
    p.add_argument("--nprocs", nargs="+", type=int, default=[1, 2])
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads per process "
                   "(0: the cores divided by the process count)")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args(argv)
    rows = []
    for model in args.models:
        for nproc in args.nprocs:
            row = measure(model, nproc, args)
            rows.append(row)
            ar = row["allreduce_seconds_per_step"]
            print(f"{model:<20} x{nproc}: {row['images_per_s']:8.1f} img/s  step "
                  f"{row['step_seconds'] * 1e3:7.1f} ms  all-reduce "
                  f"{'-' if ar is None else f'{ar * 1e3:.2f} ms'}  sends "
                  f"{row['bytes_sent_per_rank_per_step'] / 1e6:.2f} MB/step "
                  f"(model {row['model_size_bytes'] / 1e6:.2f} MB)")
    write_result("distributed_throughput", {"settings": vars(args), "results": rows},
                 args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

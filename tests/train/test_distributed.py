"""DistributedDataParallel through the one loop: two CPU processes (gloo) reach the weights of
one process with the same global batch, with masks and distillation hooks on; only rank 0
writes; the DDP checkpoint loads in one process; ranks' shards are disjoint; the torchrun
launcher's command line."""
import json
import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from model_configs import SMALL

from squeezelab.checkpoint import model_from_checkpoint, save_checkpoint
from squeezelab.data import BatchLoader
from squeezelab.models import create_model
from squeezelab.train import TrainConfig, TrainHook, train
from squeezelab.train.distributed import shutdown_distributed
from squeezelab.train.launch import strip_nproc, torchrun_command

# BatchNorm-free and dropout 0: the per-rank math is then exactly the single-process math
DDP_MODEL = {**SMALL, "batch_norm": False, "dropout": 0.0}
PER_RANK_BATCH = 8


def _config(out_dir, batch_size):
    return TrainConfig(model="squeezenet_cifar", model_args=DDP_MODEL, epochs=2,
                       batch_size=batch_size, optimizer="nesterov", lr=0.02, weight_decay=5e-4,
                       precision="fp32", channels_last=False, augment="none", out_dir=out_dir,
                       run_name="run", progress=False)


def _data(tree, cache_dir):
    from squeezelab.data import load_split

    train_data = load_split(tree, "train", cache_dir=cache_dir, progress=False)
    test_data = load_split(tree, "test", cache_dir=cache_dir, progress=False)
    return train_data.subset(torch.arange(0, 1000, 16)), test_data.subset(torch.arange(0, 300, 15))


def _masks():
    g = torch.Generator().manual_seed(0)
    model = create_model("squeezenet_cifar", **DDP_MODEL)
    weight = model.features[0].weight
    return {"features.0.weight": torch.rand(weight.shape, generator=g) > 0.5}


class SeesUnwrapped(TrainHook):
    """Records what hooks are given: the bare model, the DDP wrapper as forward_model."""

    name = "sees"

    def __init__(self):
        self.seen = {}

    def on_train_start(self, state):
        self.seen = {"model": type(state.model).__name__,
                     "forward_model": type(state.forward_model).__name__,
                     "rank": state.rank, "world_size": state.world_size}


def _hooks(teacher_path):
    from squeezelab.compress.pruning.masks import MaskHook
    from squeezelab.train.distill import DistillConfig, DistillHook

    return [DistillHook(DistillConfig(teacher=teacher_path, temperature=4.0, alpha=0.5)),
            MaskHook(_masks()), SeesUnwrapped()]


def _worker(rank, world_size, port, tree, cache_dir, out_dir, teacher_path):
    # the ranks join the test's own store (as torchrun's ranks join its agent's): nothing binds
    # the port after it was chosen, so no other process can take it in between
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      TORCHELASTIC_USE_AGENT_STORE="True")
    torch.set_num_threads(1)

    hooks = _hooks(teacher_path)
    # each rank names its own run directory: only rank 0's may appear
    result = train(_config(out_dir, PER_RANK_BATCH), hooks=hooks, data=_data(tree, cache_dir),
                   run_dir=os.path.join(out_dir, f"ddp_rank{rank}"))
    with open(os.path.join(out_dir, f"seen{rank}.json"), "w") as f:
        json.dump({**hooks[-1].seen, "history": result.history}, f)
    del result, hooks
    shutdown_distributed()  # as the CLI does: gloo torn down before interpreter shutdown


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, cifar_tree,
                                                                     cache_dir):
    torch.manual_seed(5)
    teacher = create_model("resnet18_cifar", width=8)
    teacher_path = str(save_checkpoint(tmp_path / "teacher", teacher))
    out = str(tmp_path)
    # port 0: the OS picks a free port, bound from here until the ranks are done
    store = dist.TCPStore("127.0.0.1", 0, world_size=2, is_master=True, wait_for_workers=False)
    mp.start_processes(_worker, args=(2, store.port, str(cifar_tree), str(cache_dir), out,
                                      teacher_path), nprocs=2, join=True, start_method="spawn")
    del store
    single = train(_config(out, 2 * PER_RANK_BATCH), hooks=_hooks(teacher_path),
                   data=_data(str(cifar_tree), cache_dir), run_dir=tmp_path / "single")

    # only rank 0 wrote files; its checkpoint loads in one process under clean names
    assert (tmp_path / "ddp_rank0" / "checkpoints" / "last.json").exists()
    assert not (tmp_path / "ddp_rank1").exists()
    ddp_model, ckpt = model_from_checkpoint(tmp_path / "ddp_rank0" / "checkpoints" / "last")
    assert not any(k.startswith("module.") for k in ckpt.model_state)
    ref = single.model.state_dict()
    for key, value in ddp_model.state_dict().items():
        torch.testing.assert_close(value, ref[key], rtol=1e-4, atol=1e-5, msg=key)
    mask = _masks()["features.0.weight"]
    assert (ddp_model.features[0].weight[~mask] == 0).all()

    # hooks saw the bare model, the loop the DDP wrapper; metrics are reduced over ranks
    seen = [json.loads((tmp_path / f"seen{r}.json").read_text()) for r in (0, 1)]
    for r, s in enumerate(seen):
        assert (s["model"], s["forward_model"]) == ("SqueezeNet", "DistributedDataParallel")
        assert (s["rank"], s["world_size"]) == (r, 2)
    for key in ("train_loss", "train_top1", "test_top1"):
        assert seen[0]["history"][-1][key] == seen[1]["history"][-1][key]
        assert seen[0]["history"][-1][key] == pytest.approx(single.history[-1][key], abs=1e-4)
    metrics = (tmp_path / "ddp_rank0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in metrics] == [1, 2]


def test_rank_shards_are_disjoint_and_together_make_the_single_process_batch(cifar_small):
    data = cifar_small[0].subset(torch.arange(0, 1000, 10))  # 100 images
    single = BatchLoader(data, 2 * PER_RANK_BATCH, train=True, seed=3)
    ranks = [BatchLoader(data, PER_RANK_BATCH, train=True, seed=3, rank=r, world_size=2)
             for r in (0, 1)]
    for epoch in (0, 1):
        for loader in (single, *ranks):
            loader.set_epoch(epoch)
        assert len(single) == len(ranks[0]) == len(ranks[1]) == 6
        order = single.indices()
        shards = [r.indices() for r in ranks]
        assert not set(shards[0].tolist()) & set(shards[1].tolist())
        for step in range(len(single)):
            want = order[step * 16:(step + 1) * 16]
            got = torch.cat([s[step * 8:(step + 1) * 8] for s in shards])
            assert sorted(got.tolist()) == sorted(want.tolist())


def test_torchrun_command_drops_nproc():
    assert strip_nproc(["train", "r.yaml", "--nproc", "2", "--epochs", "3"]) == \
        ["train", "r.yaml", "--epochs", "3"]
    assert strip_nproc(["train", "--nproc=4"]) == ["train"]
    cmd = torchrun_command(2, ["train", "--nproc", "2", "--epochs", "1"])
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", "2", "-m", "squeezelab", "train", "--epochs", "1"]
    with pytest.raises(ValueError, match="nproc must be a positive integer, got 0"):
        torchrun_command(0, ["train"])
    with pytest.raises(ValueError, match="--nproc expects a process count"):
        strip_nproc(["train", "--nproc"])


def test_shutdown_leaves_the_process_group_and_is_a_no_op_without_one(tmp_path):
    shutdown_distributed()  # nothing joined: nothing to do
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    assert dist.is_initialized()
    shutdown_distributed()
    assert not dist.is_initialized()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_through_torchrun_match_one_process(tmp_path, cifar_tree, cache_dir):
    """The README's multi-node command, on two single-process "nodes" on localhost (c10d
    rendezvous on 127.0.0.1): the CLI run reaches the weights of one process with the same
    global batch."""
    import subprocess

    import yaml

    recipe = {"model": "squeezenet_cifar", "model_args": {**DDP_MODEL}, "data": str(cifar_tree),
              "limit_train": 64, "limit_test": 20, "epochs": 1, "batch_size": PER_RANK_BATCH,
              "optimizer": "nesterov", "lr": 0.02, "weight_decay": 5e-4, "precision": "fp32",
              "channels_last": False, "augment": "none", "progress": False,
              "out_dir": str(tmp_path / "runs"), "run_name": "multinode"}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    port = _free_port()
    env = {**os.environ, "SQUEEZELAB_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "test",
         "-m", "squeezelab", "train", str(path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(outputs)
    run = tmp_path / "runs" / "multinode"
    assert not (tmp_path / "runs" / "multinode-2").exists()  # one run directory, rank 0's
    two_nodes, _ = model_from_checkpoint(run / "checkpoints" / "last")

    single_cfg = TrainConfig.from_dict({**recipe, "batch_size": 2 * PER_RANK_BATCH,
                                        "run_name": "single"})
    single = train(single_cfg)
    ref = single.model.state_dict()
    for key, value in two_nodes.state_dict().items():
        torch.testing.assert_close(value, ref[key], rtol=1e-4, atol=1e-5, msg=key)
    # and not what one node alone would have trained (its own batch of 8)
    alone = train(TrainConfig.from_dict({**recipe, "run_name": "alone"})).model.state_dict()
    assert not torch.allclose(alone["features.0.weight"], ref["features.0.weight"], atol=1e-4)

"""The tiny trained checkpoint that the compression commands' tests share (``trained_ckpt`` in
tests/cli/conftest.py trains it once per session), and the data flags that keep their
fine-tuning runs a few seconds long."""
from pathlib import Path

import torch

#: eight equal Fires: every squeeze layer can lose one of its 4 channels to channel pruning
UNIFORM_TINY = {"fire_config": [[4, 8, 8]] * 8, "stem_channels": 16}

#: data flags of a fine-tuning command: 100 training and 50 test images, batch 50
SMALL_DATA = ["--limit-train", "100", "--limit-test", "50", "--batch-size", "50"]


def train_tiny_checkpoint(out: Path, cifar_tree: Path, cifar_small) -> str:
    """One epoch of a UNIFORM_TINY SqueezeNet on 200 real images of the class-folder tree
    (scored on 100): the path of its last.json."""
    from squeezelab.train import TrainConfig, train

    train_data, test_data = cifar_small
    data = train_data.subset(torch.arange(0, 1000, 5)), test_data.subset(torch.arange(0, 300, 3))
    cfg = TrainConfig(model="squeezenet_cifar", model_args=UNIFORM_TINY, data=str(cifar_tree),
                      epochs=1, batch_size=50, optimizer="adamw", lr=0.005, precision="fp32",
                      channels_last=False, progress=False, out_dir=str(out), run_name="run")
    result = train(cfg, data=data)
    return str(result.run_dir / "checkpoints" / "last.json")

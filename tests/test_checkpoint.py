"""Weights for fine-tuning (``init_from``): read from any file a user may hold, never
unpickled, and copied into a model whose classifier may differ."""
from __future__ import annotations

import pytest
import torch
from model_configs import TINY
from safetensors.torch import save_file

from squeezelab.checkpoint import (
    CheckpointError,
    load_matching_weights_,
    read_weights,
    save_checkpoint,
    source_meta,
)
from squeezelab.models import create_model


def tiny(num_classes=10, seed=0):
    torch.manual_seed(seed)
    return create_model("squeezenet_cifar", num_classes=num_classes, **TINY)


def same(a, b, skip=()):
    return all(torch.equal(v, b[k]) for k, v in a.items() if k not in skip)


def test_every_kind_of_weights_file_reads_the_same_tensors(tmp_path):
    model = tiny()
    expected = model.state_dict()
    save_checkpoint(tmp_path / "ckpt", model, meta={})
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    save_checkpoint(tmp_path / "run" / "checkpoints" / "best", model, meta={})
    save_file({k: v.contiguous() for k, v in expected.items()}, str(tmp_path / "plain.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in expected.items()}},
               tmp_path / "ddp.pth")  # as a DDP training script saves it
    torch.save(expected, tmp_path / "torchvision_style.pth")
    for name in ("ckpt", "ckpt.json", "run", "plain.safetensors", "ddp.pth",
                 "torchvision_style.pth"):
        state, source = read_weights(tmp_path / name)
        assert set(state) == set(expected) and same(expected, state), name
        assert source.startswith(str(tmp_path))


class Payload:  # any object a pickle could construct
    pass


def test_bad_weights_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_weights(tmp_path / "missing.pth")
    torch.save({"weights": Payload()}, tmp_path / "hostile.pth")
    with pytest.raises(CheckpointError, match=r"not a readable PyTorch state dict \(weights "
                                              r"only\)"):
        read_weights(tmp_path / "hostile.pth")
    torch.save({"epoch": 3}, tmp_path / "not_weights.pth")
    with pytest.raises(CheckpointError, match="does not hold a state dict of named tensors"):
        read_weights(tmp_path / "not_weights.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_weights(tmp_path / "junk.safetensors")


def test_a_classifier_of_another_class_count_starts_fresh():
    source = tiny(num_classes=10).state_dict()
    model = tiny(num_classes=5, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = load_matching_weights_(model, source, "pretrained")
    assert fresh == ["classifier.1.weight", "classifier.1.bias"]
    after = model.state_dict()
    assert same(source, after, skip=fresh)  # everything else is the source's
    assert all(torch.equal(after[k], before[k]) for k in fresh)  # the classifier: its init


def test_weights_of_another_architecture_are_refused():
    other = create_model("squeezenet_cifar_e2", num_classes=10, **TINY).state_dict()
    with pytest.raises(CheckpointError, match=r"does not hold the weights of this SqueezeNet:"
                                              r"\n  missing \d+ key"):
        load_matching_weights_(tiny(), other, "e2.pth")
    # the same names, but not one tensor of the right shape
    wide = {k: torch.zeros(v.numel() + 1) for k, v in tiny().state_dict().items()}
    with pytest.raises(CheckpointError, match="no tensor of wide has the shape"):
        load_matching_weights_(tiny(), wide, "wide")


def test_written_files_get_ordinary_permissions(tmp_path):
    """Atomic writes go through mkstemp (owner-only); the file that lands has the mode an
    ordinary new file gets under the umask, so others on a shared machine can read it."""
    import os
    import stat

    from squeezelab.fileio import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.bin", b"x")
        assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_derived_checkpoint_keeps_the_sources_config_classes_and_input_record():
    meta = {"config": {"epochs": 3}, "class_names": ["a", "b"], "image_size": 32,
            "mean": [0.5] * 3, "std": [0.25] * 3, "epoch": 3, "metrics": {"top1": 0.5},
            "prune": {"steps": []}}
    kept = source_meta(meta)
    assert kept == {k: meta[k] for k in ("config", "class_names", "image_size", "mean", "std")}
    kept["class_names"] = ["c"]  # a new dict: the workflow adds its record to it, not the source
    assert "prune" not in kept and meta["class_names"] == ["a", "b"]
    assert source_meta({"epoch": 1}) == {}  # an older file without the record

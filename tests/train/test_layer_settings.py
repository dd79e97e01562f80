"""airbench94's per-layer settings (train/layer_settings.py): BatchNorm momentum, frozen scales
and stem, the BatchNorm shifts' larger learning rate at an unchanged decay per step, identity
filters in airbench_cifar, a run that uses them all and learns on real images, and the errors."""
import pytest
import torch
import torch.nn as nn

from squeezelab.checkpoint import load_checkpoint
from squeezelab.models import create_model
from squeezelab.models.convgroups import dirac_first_filters_
from squeezelab.train import ConfigError, TrainConfig, train
from squeezelab.train.fast_start import stem_conv, whiten_stem_, whitening_sample
from squeezelab.train.layer_settings import (
    apply_layer_settings_,
    batchnorms,
    parameter_groups,
)
from squeezelab.train.optim import build_optimizer

AIRBENCH = dict(model="airbench_cifar", model_args={"widths": [16, 32, 32]})


def test_momentum_and_frozen_scales_reach_every_batchnorm_and_the_stem():
    model = create_model("airbench_cifar", widths=[16, 32, 32])
    cfg = TrainConfig(**AIRBENCH, bn_momentum=0.4, freeze_bn_scale=True, freeze_stem=True)
    apply_layer_settings_(model, cfg)
    norms = batchnorms(model)
    assert len(norms) == 6
    assert all(n.momentum == 0.4 and not n.weight.requires_grad and n.bias.requires_grad
               for n in norms)
    stem = stem_conv(model)
    assert not stem.weight.requires_grad and stem.bias.requires_grad
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert len(frozen) == 7  # six BatchNorm scales and the stem's filters


def test_the_shifts_take_the_scaled_rate_and_every_parameter_decays_alike():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    with torch.no_grad():
        model[1].bias.fill_(1.0)
    cfg = TrainConfig(model="airbench_cifar", optimizer="sgd", lr=0.5,
                      weight_decay=0.01, norm_lr_scale=64)
    groups = parameter_groups(model, cfg)
    assert [len(g["params"]) for g in groups] == [2, 1]
    assert groups[1]["params"][0] is model[1].bias
    optimizer = build_optimizer(groups, cfg)
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 32.0]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    # a zero loss: the step is the weight decay alone, lr x decay = 0.005 for every parameter
    (0 * model(torch.randn(2, 3, 6, 6)).sum()).backward()
    optimizer.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name] * (1 - 0.005))
    # a gradient of one on every parameter: the shifts move 64x as far
    optimizer.zero_grad()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    now = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer.step()
    conv_step = now["0.weight"] * (1 - 0.005) - model[0].weight.detach()
    shift_step = now["1.bias"] * (1 - 0.005) - model[1].bias.detach()
    torch.testing.assert_close(conv_step, torch.full_like(conv_step, 0.5))
    torch.testing.assert_close(shift_step, torch.full_like(shift_step, 32.0))
    assert parameter_groups(model, TrainConfig(model="airbench_cifar")) == list(
        model.parameters())


def test_identity_filters_pass_their_channel_through_and_keep_the_parameter_count():
    plain = create_model("airbench_cifar")
    model = create_model("airbench_cifar", identity_init=True)
    assert sum(p.numel() for p in model.parameters()) == 828_600 == sum(
        p.numel() for p in plain.parameters())
    first = model.features[2][0]  # 24 -> 64: the first 24 filters are identities
    x = torch.randn(1, 24, 5, 5)
    out = first(x)
    torch.testing.assert_close(out[:, :24], x)
    assert out[:, 24:].abs().sum() > 0  # the rest start at random
    conv = nn.Conv2d(8, 4, 3, padding=1, bias=False)
    dirac_first_filters_(conv)  # more inputs than filters: filter i takes channel i
    torch.testing.assert_close(conv(x[:, :8]), x[:, :4])


def test_bad_settings_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match="bn_momentum must be in"):
        TrainConfig(bn_momentum=0.0)
    with pytest.raises(ConfigError, match="bn_momentum must be in"):
        TrainConfig(bn_momentum=1.5)
    with pytest.raises(ConfigError, match="norm_lr_scale must be > 0"):
        TrainConfig(norm_lr_scale=0)
    no_norms = create_model("squeezenet_cifar_baseline")
    for key, value in (("bn_momentum", 0.4), ("freeze_bn_scale", True),
                       ("norm_lr_scale", 64.0)):
        cfg = TrainConfig(model="squeezenet_cifar_baseline", **{key: value})
        with pytest.raises(ConfigError, match=f"{key} set, but model "
                                              "'squeezenet_cifar_baseline' has no BatchNorm"):
            apply_layer_settings_(no_norms, cfg)


def test_a_run_with_every_setting_learns_keeps_the_frozen_weights_and_resumes(
        tmp_path, cifar_small):
    cfg = TrainConfig(**{**AIRBENCH, "model_args": {"widths": [16, 32, 32],
                                                    "identity_init": True}},
                      epochs=2, batch_size=50, optimizer="nesterov", lr=0.2, momentum=0.85,
                      weight_decay=5e-4, label_smoothing=0.2, stem_init="whitening",
                      bn_momentum=0.4, freeze_bn_scale=True, freeze_stem=True,
                      norm_lr_scale=16, precision="fp32", channels_last=False,
                      out_dir=str(tmp_path), run_name="airbench", progress=False)
    result = train(cfg, data=cifar_small)
    # 300 test images: chance is 0.10 with a standard deviation of 0.017
    assert result.final["test_top1"] > 0.18, result.history
    state = load_checkpoint(tmp_path / "airbench" / "checkpoints" / "last").model_state
    scales = [v for k, v in state.items() if k.endswith(".weight") and v.dim() == 1]
    assert len(scales) == 6 and all(torch.equal(v, torch.ones_like(v)) for v in scales)
    # the stem still holds the whitening filters it started with; its bias trained
    whitened = create_model("airbench_cifar", widths=[16, 32, 32])
    whiten_stem_(whitened, whitening_sample(cifar_small[0], seed=cfg.seed), cfg.whitening_eps)
    torch.testing.assert_close(state["features.0.weight"], whitened.features[0].weight.detach())
    assert state["features.0.bias"].abs().sum() > 0
    # resuming with the shifts in the same group as everything else would not fit the saved
    # optimizer state: refused, naming the key
    with pytest.raises(ConfigError, match="cannot resume .* with norm_lr_scale 1.0"):
        train(cfg.replace(epochs=3, norm_lr_scale=1.0), resume=True,
              run_dir=tmp_path / "airbench", data=cifar_small)

"""Learning-rate schedules and optimizers by name: exact values."""
import math

import pytest
import torch

from squeezelab.train.config import OPTIMIZERS, ConfigError, TrainConfig
from squeezelab.train.optim import build_optimizer, build_scheduler, lr_factor


def config(**kw):
    """No warm-up unless asked: these tests pin a schedule's shape (left unset, warmup_epochs
    would be the default model's own 0.3)."""
    return TrainConfig(**{"warmup_epochs": 0.0, **kw})


def factors(cfg, steps_per_epoch=10):
    total = cfg.epochs * steps_per_epoch
    return [lr_factor(s, total, steps_per_epoch, cfg) for s in range(total)]


def test_cosine_and_linear():
    cos = factors(config(epochs=2, schedule="cosine"))
    assert cos[0] == 1.0 and cos[10] == pytest.approx(0.5) and cos[-1] == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 19 / 20)))
    lin = factors(config(epochs=2, schedule="linear"))
    assert lin[0] == 1.0 and lin[10] == pytest.approx(0.5) and lin[-1] == pytest.approx(0.05)


def test_warmup_then_schedule():
    f = factors(TrainConfig(epochs=4, schedule="linear", warmup_epochs=1))
    assert f[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert f[10] == 1.0 and f[25] == pytest.approx(1 - 15 / 30)


def test_airbench_triangle_starts_and_ends_above_zero():
    """warmup_start_factor 0.2 and final_lr_factor 0.07: airbench94's triangle, exactly."""
    cfg = TrainConfig(epochs=4, schedule="linear", warmup_epochs=1, warmup_start_factor=0.2,
                      final_lr_factor=0.07)
    f = factors(cfg)
    assert f[:10] == pytest.approx([0.2 + 0.8 * (i + 1) / 10 for i in range(10)])
    assert f[10] == 1.0 and f[25] == pytest.approx(0.07 + 0.93 * (1 - 15 / 30))
    assert f[-1] == pytest.approx(0.07 + 0.93 / 30) and min(f) > 0.07
    cos = factors(config(epochs=2, schedule="cosine", final_lr_factor=0.1))
    assert cos[0] == 1.0 and cos[10] == pytest.approx(0.1 + 0.9 * 0.5)
    # the defaults keep the old shapes: from (step + 1) / warmup up to 1, down to zero
    assert factors(TrainConfig(epochs=4, schedule="linear", warmup_epochs=1))[0] == 0.1
    for bad in ({"warmup_start_factor": 1.0}, {"final_lr_factor": -0.1}):
        with pytest.raises(ConfigError, match=f"{next(iter(bad))} must be in \\[0, 1\\)"):
            TrainConfig(**bad)


def test_step_decay():
    f = factors(config(epochs=6, schedule="step", step_epochs=2, gamma=0.1))
    assert f[19] == 1.0 and f[20] == pytest.approx(0.1) and f[59] == pytest.approx(0.01)


def test_cosine_restarts_sgdr():
    f = factors(config(epochs=6, schedule="cosine_restarts", restart_epochs=2,
                       restart_mult=2))
    # cycles of 20 then 40 steps: a restart to 1.0 at step 20
    assert f[0] == 1.0 and f[10] == pytest.approx(0.5) and f[20] == 1.0
    assert f[40] == pytest.approx(0.5)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_steps(name):
    p = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([p], TrainConfig(optimizer=name, lr=0.1, weight_decay=0))
    p.sum().backward()
    opt.step()
    assert (p < 1).all()
    expected = {"sgd": torch.optim.SGD, "pgd": torch.optim.SGD, "momentum": torch.optim.SGD,
                "nesterov": torch.optim.SGD, "adam": torch.optim.Adam,
                "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}[name]
    assert type(opt) is expected
    if name == "nesterov":
        assert opt.param_groups[0]["nesterov"] is True


def test_scheduler_applies_per_step():
    p = torch.nn.Parameter(torch.ones(1))
    cfg = config(epochs=2, lr=1.0, schedule="linear", optimizer="sgd")
    opt = build_optimizer([p], cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1 - i / 10 for i in range(10)])

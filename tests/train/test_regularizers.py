"""L1 and group-lasso penalties: exact values on small tensors, and the hooks in a tiny loop."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from squeezelab.hooks import TrainState
from squeezelab.train.regularizers import (
    BatchNormL1Regularizer,
    GroupLassoRegularizer,
    L1Regularizer,
    group_lasso_penalty,
    l1_penalty,
)


def test_l1_exact():
    assert float(l1_penalty([torch.tensor([1.0, -2.0]), torch.tensor([[-3.0]])])) == 6.0
    with pytest.raises(ValueError, match="at least one weight"):
        l1_penalty([])


def test_group_lasso_exact():
    # Linear (out=2, in=2): rows [3, 4] and [0, 0]; columns [3, 0] and [4, 0]
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert float(group_lasso_penalty(w, "out_channels")) == 5.0
    assert float(group_lasso_penalty(w, "in_channels")) == 7.0
    assert float(group_lasso_penalty(w, "both")) == 12.0
    # Conv (out=2, in=1, 2x2): filter norms 2 and 1
    c = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[0.0, 1.0], [0.0, 0.0]]]])
    assert float(group_lasso_penalty(c, "out_channels")) == 3.0
    assert float(group_lasso_penalty(c, "in_channels")) == pytest.approx(math.sqrt(5), abs=1e-6)
    with pytest.raises(ValueError, match="groups must be one of"):
        group_lasso_penalty(w, "filters")
    with pytest.raises(ValueError, match=r"got shape \(3,\)"):
        group_lasso_penalty(torch.ones(3), "out_channels")


def make_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    return TrainState(model=model, optimizer=opt, config=None, device=torch.device("cpu"))


def test_hooks_add_weighted_penalty():
    state = make_state()
    l1 = L1Regularizer(0.01)
    gl = GroupLassoRegularizer(0.1, groups="both", exclude=["3.*"])
    for h in (l1, gl):
        h.on_train_start(state)
    x, y = torch.randn(2, 2, 4, 4), torch.tensor([0, 1])
    logits = state.model(x)
    base = nn.functional.cross_entropy(logits, y)
    w0, w3 = state.model[0].weight.detach(), state.model[3].weight.detach()
    got = l1.loss(state, x, y, logits, base).detach()
    assert float(got) == pytest.approx(float(base.detach() + 0.01 * (w0.abs().sum() + w3.abs().sum())))
    got = gl.loss(state, x, y, logits, base).detach()
    assert float(got) == pytest.approx(float(base.detach() + 0.1 * group_lasso_penalty(w0, "both")))
    metrics = {}
    gl.on_epoch_end(state, metrics)
    assert metrics["group_lasso_penalty"] == pytest.approx(0.1 * float(group_lasso_penalty(w0,
                                                                                         "both")))


def test_group_lasso_training_shrinks_filter_norms():
    state = make_state()
    hook = GroupLassoRegularizer(0.5, include=["0.*"])
    hook.on_train_start(state)
    start = float(hook.penalty())
    x, y = torch.randn(8, 2, 4, 4), torch.randint(0, 3, (8,))
    for _ in range(20):
        logits = state.model(x)
        loss = hook.loss(state, x, y, logits, nn.functional.cross_entropy(logits, y))
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
    assert float(hook.penalty()) < 0.8 * start


def test_bad_arguments():
    with pytest.raises(ValueError, match="regulariser weight must be >= 0, got -1"):
        L1Regularizer(-1)
    with pytest.raises(ValueError, match="groups must be one of"):
        GroupLassoRegularizer(0.1, groups="rows")
    with pytest.raises(ValueError, match="no Conv2d/Linear weight"):
        L1Regularizer(0.1, include=["nothing.*"]).on_train_start(make_state())


def test_config_switches_the_regularizers_on():
    from squeezelab.train import TrainConfig
    from squeezelab.train.config import ConfigError
    from squeezelab.train.methods import default_hooks

    assert default_hooks(TrainConfig()) == []
    hooks = default_hooks(TrainConfig(l1_weight=1e-5, group_lasso_weight=1e-3,
                                      group_lasso_groups="both", bn_l1_weight=1e-4))
    assert [type(h) for h in hooks] == [L1Regularizer, GroupLassoRegularizer,
                                        BatchNormL1Regularizer]
    assert (hooks[0].weight, hooks[1].weight, hooks[1].groups) == (1e-5, 1e-3, "both")
    mine = GroupLassoRegularizer(0.5)
    assert default_hooks(TrainConfig(group_lasso_weight=1e-3), given=[mine]) == []
    with pytest.raises(ConfigError, match="group_lasso_weight must be >= 0, got -1"):
        TrainConfig(group_lasso_weight=-1)
    with pytest.raises(ConfigError, match="group_lasso_groups must be one of"):
        TrainConfig(group_lasso_groups="rows")


def test_a_run_with_group_lasso_logs_its_penalty_and_shrinks_it(tmp_path):
    from noise_data import noise_run_config, noise_split

    from squeezelab.train import train

    data = noise_split(32)
    cfg = noise_run_config(tmp_path, "gl", model="squeezenet_cifar_e2", epochs=3,
                           optimizer="sgd", lr=0.05, weight_decay=0.0,
                           group_lasso_weight=0.05, augment="none")
    result = train(cfg, data=(data, data))
    penalties = [row["group_lasso_penalty"] for row in result.history]
    assert len(penalties) == 3 and penalties[-1] < penalties[0]


def test_bn_l1_is_the_sum_of_batchnorm_scales():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 4, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -1.0, 2.0, 0.25]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = TrainState(model=model, optimizer=opt, config=None, device=torch.device("cpu"))
    hook = BatchNormL1Regularizer(0.2)
    hook.on_train_start(state)
    assert [n for n, _ in hook._params] == ["1.weight"]  # the scale only, never the shift
    assert float(hook.penalty()) == 3.75
    x, y = torch.randn(8, 2, 4, 4), torch.randint(0, 3, (8,))  # 4x4 -> 2x2 after the conv
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    total = hook.loss(state, x, y, logits, loss)
    assert float((total - loss).detach()) == pytest.approx(0.2 * 3.75)
    with pytest.raises(ValueError, match="bn_l1 needs BatchNorm layers"):
        BatchNormL1Regularizer(0.1).parameters_of(nn.Sequential(nn.Conv2d(2, 2, 1)))

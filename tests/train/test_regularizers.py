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
    assert float(got) == pytest.approx(
        float(base.detach() + 0.01 * (w0.abs().sum() + w3.abs().sum())))
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


def test_binarize_penalty_exact():
    from squeezelab.train.regularizers import binarize_penalty

    # the literal penalty: 0 at -1, 0 and 1; 0.25 * 0.75 at 0.5; its largest value 1/4 at
    # |w| = 1/sqrt(2); negative beyond 1 (why it is meant for weights clipped to [-1, 1])
    w = torch.tensor([[0.0, 1.0, -1.0, 0.5]])
    assert float(binarize_penalty([w], "none")) == pytest.approx(0.1875)
    assert float(binarize_penalty([torch.tensor([2 ** -0.5])], "none")) == pytest.approx(0.25)
    assert float(binarize_penalty([torch.tensor([2.0])], "none")) == pytest.approx(-12.0)
    # per filter: u = w / max |w| of the row, so [4, -4, 0, 2] is u = [1, -1, 0, 0.5] and the
    # penalty is that of the literal form, whatever the scale of the filter; an all-zero
    # filter costs 0
    w = torch.tensor([[4.0, -4.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [0.1, 0.1, 0.1, 0.1]])
    assert float(binarize_penalty([w], "filter")) == pytest.approx(0.1875)
    conv = torch.tensor([[[[0.0, 0.3]], [[-0.3, 0.15]]]])  # (1, 2, 1, 2): max 0.3
    assert float(binarize_penalty([conv], "filter")) == pytest.approx(0.1875)
    with pytest.raises(ValueError, match="scale must be one of"):
        binarize_penalty([w], "layer")
    with pytest.raises(ValueError, match=r"needs a weight with \(out, in, ...\) dims"):
        binarize_penalty([torch.ones(3)], "filter")
    with pytest.raises(ValueError, match="at least one weight"):
        binarize_penalty([], "filter")


def test_binarize_gradient_pushes_to_the_nearest_minimum():
    from squeezelab.train.regularizers import binarize_penalty

    # d/du u^2 (1 - u^2) = 2u (1 - 2u^2): below 1/sqrt(2) toward 0, above it toward +-1
    w = torch.tensor([[1.0, 0.5, 0.8, -0.8, -0.3]], requires_grad=True)
    binarize_penalty([w], "filter").backward()
    g = w.grad[0]
    # at u = 1 the slope is -2 (scale held): the penalty keeps falling beyond 1, so the
    # largest weight is pushed outward and carries the scale with it
    assert float(g[0]) == pytest.approx(-2.0)
    assert g[1] > 0 and g[4] < 0  # descent moves 0.5 and -0.3 toward 0
    assert g[2] < 0 and g[3] > 0  # and +-0.8 toward +-1


def test_binarize_hook_leaves_first_and_last_layers_and_is_a_config_field():
    from squeezelab.train import TrainConfig
    from squeezelab.train.config import ConfigError
    from squeezelab.train.methods import default_hooks
    from squeezelab.train.regularizers import BinarizeRegularizer, binarize_penalty

    state = make_state()
    state.model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 2, 1))
    hook = BinarizeRegularizer(0.3)
    hook.on_train_start(state)
    assert [n for n, _ in hook._params] == ["1.weight"]
    x, y = torch.randn(2, 2, 1, 1), torch.tensor([0, 1])
    base = torch.tensor(1.0)
    got = hook.loss(state, x, y, None, base)
    assert got.item() == pytest.approx(1 + 0.3 * binarize_penalty(
        [state.model[1].weight], "filter").item())
    every = BinarizeRegularizer(0.3, scale="none", keep_first_last=False)
    every.on_train_start(state)
    assert len(every._params) == 3
    with pytest.raises(ValueError, match="nothing to binarize"):
        BinarizeRegularizer(0.3).on_train_start(make_state())  # 2 weight layers only

    (h,) = default_hooks(TrainConfig(binarize_weight=1e-3, binarize_scale="none"))
    assert isinstance(h, BinarizeRegularizer) and (h.weight, h.scale) == (1e-3, "none")
    with pytest.raises(ConfigError, match="binarize_weight must be >= 0, got -1"):
        TrainConfig(binarize_weight=-1)
    with pytest.raises(ConfigError, match="binarize_scale must be one of"):
        TrainConfig(binarize_scale="layer")


def test_binarize_training_moves_weights_toward_zero_or_the_filter_max():
    from squeezelab.train.regularizers import BinarizeRegularizer, binarize_penalty

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 2, 1))
    state = TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                       config=None, device=torch.device("cpu"))
    hook = BinarizeRegularizer(1.0)
    hook.on_train_start(state)
    start = binarize_penalty([model[1].weight], "filter").item()
    for _ in range(200):  # the penalty alone: no data loss
        loss = hook.loss(state, None, None, None, torch.zeros(()))
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
    assert binarize_penalty([model[1].weight], "filter").item() < 0.2 * start

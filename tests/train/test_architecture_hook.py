"""The architecture-learning regulariser: exact values, gates kept in [0, 1], the gates' own
optimizer group without weight decay that follows the schedule, and the gates it moves."""
import pytest
import torch
import torch.nn as nn

from squeezelab.hooks import TrainState
from squeezelab.layers.tsrelu import TsReLU
from squeezelab.train.architecture import ArchitectureHook, binarize_gates_penalty


def gated_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 1), TsReLU(3), nn.Conv2d(3, 2, 1), TsReLU(2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def state_of(model, lr=0.1, weight_decay=0.05, schedule=True):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step)) \
        if schedule else None
    return TrainState(model=model, optimizer=opt, config=None, device=torch.device("cpu"),
                      scheduler=sched)


def test_binarize_gates_penalty_exact():
    assert float(binarize_gates_penalty(torch.tensor([0.0, 1.0, 0.5, 0.25]))) == 0.4375


def test_penalty_is_the_sum_of_the_three_terms():
    net = gated_net()
    with torch.no_grad():
        net[1].gate_w.copy_(torch.tensor([0.5, 1.0, 0.2]))
        net[1].gate_d.fill_(0.5)
        net[3].gate_w.copy_(torch.tensor([0.0, 0.9]))
    hook = ArchitectureHook(width_binarize=2.0, depth_binarize=3.0, width_count=0.5)
    hook.on_train_start(state_of(net))
    w_all = torch.tensor([0.5, 1.0, 0.2, 0.0, 0.9])
    expected = (2.0 * float((w_all * (1 - w_all)).sum()) + 3.0 * 0.25
                + 0.5 * float(w_all.sum()))
    assert float(hook.penalty().detach()) == pytest.approx(expected)
    # costs: per channel, scaled to a mean of 1 over all channels
    costs = {"1": torch.tensor([1.0, 1.0, 1.0]), "3": torch.tensor([6.0, 6.0])}
    weighted = ArchitectureHook(0.0, 0.0, 1.0, costs=costs, learn_depth=False)
    weighted.on_train_start(state_of(net))
    mean = 15.0 / 5
    assert float(weighted.penalty().detach()) == pytest.approx(
        (1.7 * 1.0 + 0.9 * 6.0) / mean)


def test_a_floor_frees_each_layers_widest_open_gates_from_the_count_term():
    net = gated_net()
    with torch.no_grad():
        net[1].gate_w.copy_(torch.tensor([0.2, 0.9, 0.4]))
        net[3].gate_w.copy_(torch.tensor([0.7, 0.7]))
    hook = ArchitectureHook(0.0, 0.0, 1.0, learn_depth=False, min_width=0.5)
    hook.on_train_start(state_of(net))
    # ceil(0.5 * 3) = 2 free in the first layer (0.9, 0.4), 1 in the second (the lower index
    # of a tie): only 0.2 and the second 0.7 are pulled
    assert float(hook.penalty().detach()) == pytest.approx(0.2 + 0.7)
    hook.penalty().backward()
    assert net[1].gate_w.grad.tolist() == [1.0, 0.0, 0.0]
    assert net[3].gate_w.grad.tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="min_width"):
        ArchitectureHook(min_width=1.0)


def test_gates_get_their_own_group_without_decay_following_the_schedule():
    net = gated_net()
    state = state_of(net)
    hook = ArchitectureHook()
    hook.on_train_start(state)
    groups = state.optimizer.param_groups
    assert len(groups) == 2
    gate_ids = {id(net[1].gate_w), id(net[1].gate_d), id(net[3].gate_w), id(net[3].gate_d)}
    assert {id(p) for p in groups[1]["params"]} == gate_ids
    assert not gate_ids & {id(p) for p in groups[0]["params"]}
    assert groups[1]["weight_decay"] == 0.0 and groups[0]["weight_decay"] == 0.05
    for _ in range(3):
        state.optimizer.step()
        state.scheduler.step()
    assert groups[1]["lr"] == pytest.approx(groups[0]["lr"]) == pytest.approx(0.1 / 4)
    # set up again (a resumed run): the groups are left alone
    hook.on_train_start(state)
    assert len(state.optimizer.param_groups) == 2


def test_a_few_steps_keep_gates_in_range_and_the_count_term_turns_gates_off():
    net = gated_net()
    state = state_of(net, lr=0.05, schedule=False)
    hook = ArchitectureHook(width_binarize=0.0, depth_binarize=1.0, width_count=1.0)
    hook.on_train_start(state)
    x = torch.randn(8, 2, 4, 4)
    for _ in range(40):  # the regulariser alone, no data loss: every w goes to 0
        loss = hook.loss(state, x, None, None, torch.zeros(()))
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
        hook.after_step(state)
        for g in (net[1], net[3]):
            assert 0 <= float(g.gate_w.detach().min()) and float(g.gate_w.detach().max()) <= 1
            assert 0 <= float(g.gate_d.detach()) <= 1
    assert float(net[1].gate_w.detach().max()) == 0.0 and float(net[3].gate_w.detach().max()) == 0.0
    metrics = {}
    hook.on_epoch_end(state, metrics)
    assert metrics["gates_on"] == 0 and metrics["gates_total"] == 5
    assert metrics["linear_layers"] == 0


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="width_count must be >= 0"):
        ArchitectureHook(width_count=-1)
    with pytest.raises(ValueError, match="has no TsReLU gates"):
        ArchitectureHook().on_train_start(state_of(nn.Sequential(nn.Conv2d(1, 1, 1))))
    with pytest.raises(ValueError, match="costs name no cost for the gates at"):
        ArchitectureHook(costs={"1": torch.ones(3)}).on_train_start(state_of(gated_net()))


def test_the_binarizers_ramp_from_zero_over_the_run():
    import types

    net = gated_net()
    with torch.no_grad():
        net[1].gate_w.copy_(torch.tensor([0.5, 1.0, 0.2]))
        net[1].gate_d.fill_(0.5)
    state = state_of(net, schedule=False)
    state.config = types.SimpleNamespace(epochs=2)
    state.steps_per_epoch = 5  # 10 steps in all
    hook = ArchitectureHook(width_binarize=2.0, depth_binarize=3.0, width_count=0.0)
    hook.on_train_start(state)
    full = 2.0 * float(binarize_gates_penalty(torch.tensor([0.5, 1.0, 0.2, 1.0, 1.0]))) \
        + 3.0 * 0.25 * 1 + 0.0
    assert float(hook.penalty().detach()) == 0.0  # step 0: the count term only (here 0)
    for step, fraction in ((5, 0.5), (10, 1.0), (12, 1.0)):
        state.step = step
        hook.after_step(state)
        got = float(hook.penalty().detach())
        # d of the second layer is 0: no depth term there
        assert got == pytest.approx(fraction * full), step
    constant = ArchitectureHook(width_binarize=2.0, depth_binarize=3.0, width_count=0.0,
                                ramp=False)
    state.step = 0
    constant.on_train_start(state)
    assert float(constant.penalty().detach()) == pytest.approx(full)


def test_default_gate_lr_is_one_over_the_runs_steps():
    """Without gate_lr, a gate may travel its [0, 1] range about once per run (Adam moves a
    parameter ~lr a step): 1 / steps, whatever the run's length; the run's lr where the
    length is unknown."""
    from types import SimpleNamespace

    from squeezelab.train.architecture import default_gate_lr

    assert default_gate_lr(48, 0.005) == pytest.approx(1 / 48)
    assert default_gate_lr(0, 0.005) == 0.005
    net = gated_net()
    state = state_of(net, schedule=False)
    state.config = SimpleNamespace(epochs=5)
    state.steps_per_epoch = 390
    ArchitectureHook().on_train_start(state)
    assert state.optimizer.param_groups[1]["lr"] == pytest.approx(1 / 1950)
    explicit = state_of(gated_net(), schedule=False)
    explicit.config, explicit.steps_per_epoch = SimpleNamespace(epochs=5), 390
    ArchitectureHook(gate_lr=0.02).on_train_start(explicit)
    assert explicit.optimizer.param_groups[1]["lr"] == 0.02

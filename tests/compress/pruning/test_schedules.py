"""Pruning schedules: exact sparsity values, and the hooks raising sparsity at the right time."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from squeezelab.compress.pruning.magnitude import PruneConfig, num_to_keep
from squeezelab.compress.pruning.schedules import (
    EpochGradualPruneHook,
    GradualPruneHook,
    IterativePruneHook,
    cubic_sparsity,
    cubic_stage,
    iterative_sparsities,
)
from squeezelab.hooks import TrainState


def test_iterative_sparsities_exact():
    assert iterative_sparsities(0.75, 3, "linear") == [0.25, 0.5, 0.75]
    assert iterative_sparsities(0.75, 2, "geometric") == [0.5, 0.75]
    geo = iterative_sparsities(0.875, 3)
    assert geo == pytest.approx([0.5, 0.75, 0.875], abs=1e-15)
    assert geo[-1] == 0.875  # ends exactly on the target
    with pytest.raises(ValueError, match="num_rounds must be a positive integer, got 0"):
        iterative_sparsities(0.5, 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        iterative_sparsities(0.5, 2, "cubic")


def test_cubic_sparsity_exact():
    # s_f = 0.8, s_i = 0, t0 = 10, n = 4, dt = 5: stages at t = 10, 15, 20, 25, 30
    kw = dict(final_sparsity=0.8, initial_sparsity=0.0, begin_step=10, num_prunes=4, frequency=5)
    expected = {0: 0.0, 9: 0.0, 10: 0.0, 14: 0.0, 15: 0.8 * (1 - 0.75 ** 3),
                19: 0.8 * (1 - 0.75 ** 3), 20: 0.8 * (1 - 0.5 ** 3), 25: 0.8 * (1 - 0.25 ** 3),
                29: 0.8 * (1 - 0.25 ** 3), 30: 0.8, 1000: 0.8}
    for t, s in expected.items():
        assert cubic_sparsity(t, **kw) == pytest.approx(s, abs=1e-15), t
    assert cubic_sparsity(15, **kw) == pytest.approx(0.4625, abs=1e-15)
    assert cubic_sparsity(20, **kw) == pytest.approx(0.7, abs=1e-15)
    # with an initial sparsity
    assert cubic_sparsity(0, 0.9, 0.5, 0, 2, 1) == 0.5
    assert cubic_sparsity(1, 0.9, 0.5, 0, 2, 1) == pytest.approx(0.9 - 0.4 * 0.125, abs=1e-15)
    assert [cubic_stage(t, 10, 4, 5) for t in (9, 10, 14, 15, 30, 99)] == [-1, 0, 0, 1, 4, 4]
    with pytest.raises(ValueError, match="frequency must be an integer >= 1, got 0"):
        cubic_sparsity(0, 0.5, frequency=0)
    with pytest.raises(ValueError, match="initial_sparsity 0.6 exceeds final_sparsity 0.5"):
        cubic_sparsity(0, 0.5, 0.6)


def make_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    return TrainState(model=model, optimizer=opt, config=None, device=torch.device("cpu"))


def sgd_step(state, hook, g):
    x = torch.randn(4, 10, generator=g)
    y = torch.randint(0, 3, (4,), generator=g)
    loss = nn.functional.cross_entropy(state.model(x), y)
    state.optimizer.zero_grad()
    loss.backward()
    hook.after_backward(state)
    state.optimizer.step()
    state.step += 1
    hook.after_step(state)


def test_iterative_hook_rounds():
    state = make_state()
    hook = IterativePruneHook(PruneConfig(sparsity=0.75, rules={"classifier": 0.5}),
                              prune_epochs=[0, 2], kind="geometric")
    hook.on_train_start(state)
    g = torch.Generator().manual_seed(1)
    seen = []
    for epoch in range(4):
        state.epoch = epoch
        hook.on_epoch_start(state)
        prev = hook.masks.copy()
        for _ in range(3):
            sgd_step(state, hook, g)
        metrics = {}
        hook.on_epoch_end(state, metrics)
        seen.append((metrics["prune_round"], hook.masks.layer_sparsity()))
        w = state.model[0].weight
        assert (w[~hook.masks["0.weight"]] == 0).all()
        assert torch.equal(prev["0.weight"], hook.masks["0.weight"])  # masks fixed in an epoch
    assert [r for r, _ in seen] == [1, 1, 2, 2]
    assert seen[0][1]["0.weight"] == pytest.approx(0.5)  # 1 - 0.25 ** 0.5
    assert seen[0][1]["2.weight"] == pytest.approx(1 - 0.5 ** 0.5, abs=1 / 60)
    assert seen[3][1] == {"0.weight": 0.75, "2.weight": 0.5}
    # resume: a fresh hook restored to round 2 does not prune again at epoch 3
    again = IterativePruneHook(hook.config, prune_epochs=[0, 2])
    again.load_state_dict(hook.state_dict())
    again.load_state_tensors(hook.state_tensors())
    again.on_train_start(state)
    state.epoch = 3
    again.on_epoch_start(state)
    assert again.rounds_done == 2 and torch.equal(again.masks["0.weight"], hook.masks["0.weight"])


def test_gradual_hook_follows_cubic_curve():
    state = make_state()
    hook = GradualPruneHook(PruneConfig(sparsity=0.8), begin_step=2, num_prunes=4, frequency=3)
    hook.on_train_start(state)
    assert len(hook.masks) == 0  # before t0: dense
    g = torch.Generator().manual_seed(2)
    numel = state.model[0].weight.numel()  # 200
    history = []
    for _ in range(16):
        before = hook.masks.copy()
        sgd_step(state, hook, g)
        if "0.weight" in hook.masks:
            kept = int(hook.masks["0.weight"].sum())
            history.append((state.step, kept))
            assert (state.model[0].weight[~hook.masks["0.weight"]] == 0).all()
            if "0.weight" in before:  # never revives a pruned weight
                assert not (hook.masks["0.weight"] & ~before["0.weight"]).any()
    by_step = dict(history)
    for t in (2, 5, 8, 11, 14, 16):
        expected = num_to_keep(numel, cubic_sparsity(t, 0.8, 0.0, 2, 4, 3))
        assert by_step[t] == expected, t
    assert by_step[4] == by_step[2] == numel  # stage 0 at s_i = 0 keeps all
    assert by_step[14] == num_to_keep(numel, 0.8) == 40
    assert hook.state_dict() == {"stage": 4}


def test_epoch_gradual_hook_sizes_its_curve_from_the_run():
    """A ramp of 1.5 epochs of 8 steps, 4 updates an epoch: an update every 2 steps, 6 of
    them, so the final sparsity holds from step 12 on; a resumed hook sizes it the same."""
    state = make_state()
    state.steps_per_epoch = 8
    hook = EpochGradualPruneHook(PruneConfig(sparsity=0.8), ramp_epochs=1.5)
    hook.on_train_start(state)
    assert (hook.begin_step, hook.frequency, hook.num_prunes) == (0, 2, 6)
    g = torch.Generator().manual_seed(3)
    numel = state.model[0].weight.numel()
    kept = {}
    for _ in range(16):
        sgd_step(state, hook, g)
        kept[state.step] = int(hook.masks["0.weight"].sum())
    for t in (2, 5, 8, 11):
        assert kept[t] == num_to_keep(numel, cubic_sparsity(t, 0.8, 0.0, 0, 6, 2)), t
    assert kept[11] > kept[12] == kept[16] == num_to_keep(numel, 0.8)
    again = EpochGradualPruneHook(PruneConfig(sparsity=0.8), ramp_epochs=1.5)
    again.load_state_dict(hook.state_dict())
    again.load_state_tensors(hook.state_tensors())
    again.on_train_start(state)
    assert (again.frequency, again.num_prunes, again.stage) == (2, 6, 6)
    assert torch.equal(again.masks["0.weight"], hook.masks["0.weight"])
    with pytest.raises(ValueError, match="ramp_epochs must be a number > 0, got 0"):
        EpochGradualPruneHook(PruneConfig(sparsity=0.5), ramp_epochs=0)
    with pytest.raises(ValueError, match="updates_per_epoch must be an integer >= 1, got 0"):
        EpochGradualPruneHook(PruneConfig(sparsity=0.5), ramp_epochs=1, updates_per_epoch=0)


def test_hook_arguments_validated():
    with pytest.raises(ValueError, match="prune_epochs must be increasing"):
        IterativePruneHook(PruneConfig(sparsity=0.5), prune_epochs=[3, 1])
    with pytest.raises(ValueError, match="num_prunes must be an integer >= 1"):
        GradualPruneHook(PruneConfig(sparsity=0.5), num_prunes=0)

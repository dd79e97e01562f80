"""Perturbed Gradient Descent (Jin et al. 2017, arXiv 1703.00887): noise exactly when the
gradient norm is below the threshold, inside the ball, at most once per interval; switched on
by ``optimizer: pgd`` through default_hooks."""
import pytest
import torch
import torch.nn as nn

from squeezelab.train import TrainConfig, TrainState
from squeezelab.train.methods import default_hooks
from squeezelab.train.pgd import PerturbedGradientHook


def make_state(grad_value):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    for p in model.parameters():
        p.grad = torch.full_like(p, grad_value)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainState(model=model, optimizer=opt, config=TrainConfig(optimizer="pgd"),
                      device=torch.device("cpu"))


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# 3*2+2 + 2*1+1 = 11 parameters; a gradient of g everywhere has norm g * sqrt(11)
NUM_PARAMS = 11


@pytest.mark.parametrize("grad_value,fires", [(0.01, True), (1.0, False)])
def test_noise_exactly_below_threshold_and_inside_the_ball(grad_value, fires):
    threshold = 0.1  # norms: 0.01 * sqrt(11) = 0.033 (below), 1 * sqrt(11) = 3.3 (above)
    state = make_state(grad_value)
    hook = PerturbedGradientHook(radius=0.5, threshold=threshold, interval=0)
    hook.on_train_start(state)
    hook.on_epoch_start(state)
    before = flat(state.model)
    hook.after_backward(state)
    delta = flat(state.model) - before
    assert torch.isclose(hook.last_grad_norm, torch.tensor(grad_value * NUM_PARAMS ** 0.5))
    if fires:
        assert 0 < delta.norm() <= 0.5 + 1e-6
        assert (delta != 0).all()  # isotropic: every coordinate moves
    else:
        assert torch.equal(delta, torch.zeros(NUM_PARAMS))
    metrics = {}
    hook.on_epoch_end(state, metrics)
    assert metrics["pgd_perturbations"] == int(fires)


def test_interval_blocks_repeated_perturbations():
    state = make_state(0.0)  # zero gradient: always below the threshold
    hook = PerturbedGradientHook(radius=1e-2, threshold=1e-3, interval=3)
    hook.on_train_start(state)
    hook.on_epoch_start(state)
    moved = []
    for step in range(9):
        state.step = step
        before = flat(state.model)
        hook.after_backward(state)
        moved.append(bool((flat(state.model) != before).any()))
    # t - t_noise > 3: steps 0, 4, 8
    assert moved == [True, False, False, False, True, False, False, False, True]
    metrics = {}
    hook.on_epoch_end(state, metrics)
    assert metrics["pgd_perturbations"] == 3 and hook.total_perturbations == 3


def test_resume_draws_the_same_noise():
    a, b = make_state(0.0), make_state(0.0)
    h1 = PerturbedGradientHook(radius=0.1, threshold=1.0, interval=0, seed=3)
    h1.on_train_start(a)
    h1.after_backward(a)
    saved = {k: v.clone() for k, v in h1.state_tensors().items()}
    h2 = PerturbedGradientHook(radius=0.1, threshold=1.0, interval=0, seed=3)
    h2.load_state_tensors(saved)
    h2.on_train_start(b)
    before = flat(b.model)
    h2.after_backward(b)
    x = flat(a.model)
    h1.after_backward(a)
    assert torch.equal(flat(a.model) - x, flat(b.model) - before)


def test_bad_arguments():
    with pytest.raises(ValueError, match="radius must be > 0, got -1"):
        PerturbedGradientHook(radius=-1, threshold=0.1)
    with pytest.raises(ValueError, match="interval must be a non-negative integer"):
        PerturbedGradientHook(radius=1, threshold=0.1, interval=1.5)


def test_optimizer_pgd_switches_the_hook_on():
    hooks = default_hooks(TrainConfig(optimizer="pgd", pgd_radius=0.2, pgd_threshold=0.3,
                                      pgd_interval=7))
    assert len(hooks) == 1 and isinstance(hooks[0], PerturbedGradientHook)
    assert (hooks[0].radius, hooks[0].threshold, hooks[0].interval) == (0.2, 0.3, 7)
    assert default_hooks(TrainConfig(optimizer="sgd")) == []
    mine = PerturbedGradientHook(radius=1, threshold=1)
    assert default_hooks(TrainConfig(optimizer="pgd"), given=[mine]) == []


def test_pgd_run_counts_perturbations(tmp_path):
    from noise_data import noise_run_config, noise_split

    from squeezelab.train import train

    data = noise_split(16)
    cfg = noise_run_config(tmp_path, "pgd", optimizer="pgd", lr=0.01, pgd_threshold=1e6,
                           pgd_interval=0, augment="cifar")
    result = train(cfg, data=(data, data))
    # threshold above any gradient norm and interval 0: every one of the 2 steps perturbs
    assert result.final["pgd_perturbations"] == 2

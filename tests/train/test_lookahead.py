"""Lookahead (TrainConfig.lookahead_steps): the exact slow/fast update, switched on by the config
beside the weight average, a masked run that stays sparse, and an exact resume."""
import pytest
import torch
from hook_checks import InterruptAt, assert_masked_run_stays_sparse, assert_resume_is_exact
from model_configs import TINY, small_run

from squeezelab.hooks import TrainState
from squeezelab.models import create_model
from squeezelab.train import ConfigError, TrainConfig, train
from squeezelab.train.lookahead import LookaheadHook
from squeezelab.train.methods import default_hooks


def config(tmp_path, **kw):
    return small_run(tmp_path, **{"schedule": "constant", "lookahead_steps": 3,
                                  "lookahead_alpha": 0.5, **kw})



def test_every_k_steps_the_slow_weights_move_alpha_of_the_way_and_the_fast_restart_there():
    model = create_model("squeezenet_cifar", **TINY)
    state = TrainState(model=model, optimizer=None, config=None, device=torch.device("cpu"))
    hook = LookaheadHook(steps=2, alpha=0.25)
    hook.on_train_start(state)
    w = model.features[0].weight
    slow = w.detach().clone()
    with torch.no_grad():
        w.add_(1.0)
    hook.after_step(state)  # step 1 of 2: nothing moves
    torch.testing.assert_close(hook.slow["features.0.weight"], slow)
    with torch.no_grad():
        w.add_(3.0)
    hook.after_step(state)  # step 2: slow += 0.25 * (slow + 4 - slow) = slow + 1; fast = slow
    torch.testing.assert_close(hook.slow["features.0.weight"], slow + 1.0)
    assert torch.equal(w.detach(), hook.slow["features.0.weight"])
    assert hook.count == 0 and hook.state_dict()["count"] == 0
    with pytest.raises(ValueError, match="lookahead_steps must be an integer >= 1"):
        LookaheadHook(0)
    with pytest.raises(ValueError, match=r"lookahead_alpha must be in \(0, 1\]"):
        LookaheadHook(5, alpha=0.0)
    with pytest.raises(ConfigError, match="lookahead_steps must be >= 0"):
        TrainConfig(lookahead_steps=-1)
    with pytest.raises(ConfigError, match=r"lookahead_alpha must be in \(0, 1\]"):
        TrainConfig(lookahead_alpha=1.5)


def test_with_a_ramp_the_pull_grows_cubically_from_none_to_alpha():
    """lookahead_ramp: a sync after s of S steps moves 1 - (1 - alpha) (s/S)^3 of the way, S
    read from the config at each sync (a time budget shortens the ramp with the run)."""
    model = create_model("squeezenet_cifar", **TINY)
    state = TrainState(model=model, optimizer=None, config=TrainConfig(epochs=2),
                       device=torch.device("cpu"), steps_per_epoch=10)
    hook = LookaheadHook(steps=1, alpha=0.25, ramp=True)
    hook.on_train_start(state)
    w = model.features[0].weight
    for step, share in ((1, 1 - 0.75 * (1 / 20) ** 3), (10, 1 - 0.75 / 8), (20, 0.25)):
        state.step = step
        assert hook.alpha_at(state) == pytest.approx(share)
        slow = hook.slow["features.0.weight"].clone()
        with torch.no_grad():
            w.add_(2.0)
        hook.after_step(state)
        torch.testing.assert_close(hook.slow["features.0.weight"], slow + 2.0 * share)
        assert torch.equal(w.detach(), hook.slow["features.0.weight"])
    state.config = TrainConfig(epochs=1)  # the run cut to one epoch: step 10 is its end
    state.step = 10
    assert hook.alpha_at(state) == 0.25
    assert LookaheadHook(steps=5, alpha=0.25).alpha_at(state) == 0.25  # no ramp: constant
    assert hook.state_dict()["ramp"] is True and "cubic ramp" in hook.describe()
    assert default_hooks(TrainConfig(lookahead_steps=5, lookahead_ramp=True))[0].ramp


def test_the_config_switches_it_on_before_the_weight_average():
    names = [h.name for h in default_hooks(TrainConfig(lookahead_steps=5, ema_decay=0.9))]
    assert names == ["lookahead", "ema"]
    assert default_hooks(TrainConfig()) == []


def test_a_masked_run_stays_exactly_sparse_and_a_resume_continues_exactly(tmp_path, cifar_tiny):
    assert_masked_run_stays_sparse(config, tmp_path, cifar_tiny)
    # 10 steps an epoch, syncs every 3: the cut falls between two syncs
    assert_resume_is_exact(config, tmp_path, cifar_tiny, "Lookahead")


def test_a_ramped_run_cut_mid_epoch_resumes_exactly(tmp_path, cifar_tiny):
    """The ramp follows the run's step, so a run cut inside its second epoch (10 steps an
    epoch, syncs every 3) and resumed ends where the uncut run does, bit for bit."""
    cfg = config(tmp_path, epochs=2, lookahead_ramp=True)
    straight = train(cfg.replace(run_name="straight"), data=cifar_tiny)
    cut = train(cfg.replace(run_name="cut"), hooks=[InterruptAt(14)], data=cifar_tiny)
    assert cut.interrupted
    resumed = train(cfg.replace(run_name="cut"), resume=True, run_dir=cut.run_dir,
                    data=cifar_tiny)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed ramped Lookahead diverged"

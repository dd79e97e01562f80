"""Lookahead (TrainConfig.lookahead_steps): the exact slow/fast update, switched on by the config
beside the weight average, a masked run that stays sparse, and an exact resume."""
import pytest
import torch
from hook_checks import assert_masked_run_stays_sparse, assert_resume_is_exact
from model_configs import TINY, small_run

from squeezelab.hooks import TrainState
from squeezelab.models import create_model
from squeezelab.train import ConfigError, TrainConfig
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


def test_the_config_switches_it_on_before_the_weight_average():
    names = [h.name for h in default_hooks(TrainConfig(lookahead_steps=5, ema_decay=0.9))]
    assert names == ["lookahead", "ema"]
    assert default_hooks(TrainConfig()) == []


def test_a_masked_run_stays_exactly_sparse_and_a_resume_continues_exactly(tmp_path, cifar_tiny):
    assert_masked_run_stays_sparse(config, tmp_path, cifar_tiny)
    # 10 steps an epoch, syncs every 3: the cut falls between two syncs
    assert_resume_is_exact(config, tmp_path, cifar_tiny, "Lookahead")

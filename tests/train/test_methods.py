"""The methods a config switches on (train/methods.py): one registration each, in order."""
from squeezelab.hooks import TrainHook
from squeezelab.train import TrainConfig, methods
from squeezelab.train.lookahead import LookaheadHook
from squeezelab.train.methods import CONFIG_METHODS, config_method, default_hooks
from squeezelab.train.weight_average import WeightAverageHook


def test_lookahead_and_ema_come_in_registration_order_and_a_given_hook_replaces_its_own():
    cfg = TrainConfig(lookahead_steps=5, lookahead_alpha=0.25, ema_decay=0.9)
    hooks = default_hooks(cfg)
    assert [type(h) for h in hooks] == [LookaheadHook, WeightAverageHook]
    assert [h.name for h in hooks] == ["lookahead", "ema"]
    names = [m.name for m in CONFIG_METHODS]
    assert names.index("lookahead") < names.index("ema")
    assert names == ["pgd", "l1", "group_lasso", "bn_l1", "binarize", "lookahead", "ema"]
    mine = WeightAverageHook(0.5)
    (kept,) = default_hooks(cfg, given=[mine])
    assert isinstance(kept, LookaheadHook)
    assert default_hooks(TrainConfig()) == []


def test_every_registered_method_builds_a_hook_of_its_own_name():
    cfg = TrainConfig(optimizer="pgd", l1_weight=1e-5, group_lasso_weight=1e-3,
                      bn_l1_weight=1e-4, binarize_weight=1e-3, lookahead_steps=5, ema_decay=0.9)
    assert [h.name for h in default_hooks(cfg)] == [m.name for m in CONFIG_METHODS]


def test_a_method_registered_through_config_method_is_returned(monkeypatch):
    monkeypatch.setattr(methods, "CONFIG_METHODS", list(CONFIG_METHODS))

    class Marker(TrainHook):
        name = "marker"

    @config_method("marker", lambda cfg: cfg.seed == 7)
    def _marker(cfg):
        return Marker()

    hooks = default_hooks(TrainConfig(seed=7, ema_decay=0.9))
    assert [type(h) for h in hooks] == [WeightAverageHook, Marker]
    assert default_hooks(TrainConfig(seed=0)) == []
    assert default_hooks(TrainConfig(seed=7), given=[Marker()]) == []

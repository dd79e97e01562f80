"""Magnitude pruning: exact kept counts, ties, layer vs global scope, per-layer rules, config."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from squeezelab.compress.pruning.magnitude import (
    PruneConfig,
    compute_masks,
    global_magnitude_masks,
    kernel_magnitude_mask,
    magnitude_mask,
    num_to_keep,
    prunable_parameters,
    prune_,
)
from squeezelab.compress.pruning.masks import Masks
from squeezelab.config import ConfigError
from squeezelab.models import create_model


def tiny_squeezenet():
    torch.manual_seed(0)
    return create_model("squeezenet_cifar", fire_config=[(2, 4, 4)] * 8, stem_channels=8)


def test_magnitude_mask_exact_on_hand_made_tensor():
    w = torch.tensor([[0.5, -3.0, 0.1], [2.0, -0.2, 1.0]])
    assert magnitude_mask(w, 0.5).tolist() == [[False, True, False], [True, False, True]]
    assert magnitude_mask(w, 0.0).all()
    # 6 * 0.9 = 5.4 -> 5 pruned, the single largest |w| kept
    assert magnitude_mask(w, 0.9).tolist() == [[False, True, False], [False, False, False]]


@pytest.mark.parametrize("numel,sparsity,kept", [(100, 0.29, 71), (10, 0.25, 7), (10, 0.35, 6),
                                                 (7, 0.5, 3), (1000, 0.999, 1), (3, 0.1, 3)])
def test_exactly_k_kept(numel, sparsity, kept):
    assert num_to_keep(numel, sparsity) == kept
    w = torch.randn(numel, generator=torch.Generator().manual_seed(numel))
    mask = magnitude_mask(w, sparsity)
    assert int(mask.sum()) == kept
    # every kept |w| is >= every pruned |w|
    if 0 < kept < numel:
        assert w.abs()[mask].min() >= w.abs()[~mask].max()


def test_ties_broken_by_lower_index():
    w = torch.tensor([1.0, -2.0, 2.0, 1.0, -1.0, 2.0])
    # keep 4: the three 2's, then the first of the 1's
    assert magnitude_mask(w, 2 / 6).tolist() == [True, True, True, False, False, True]
    assert magnitude_mask(torch.zeros(4), 0.5).tolist() == [True, True, False, False]


def test_keep_prunes_among_still_kept():
    w = torch.tensor([4.0, 3.0, 2.0, 1.0])
    keep = torch.tensor([False, True, True, True])  # the largest was pruned earlier
    assert magnitude_mask(w, 0.5, keep).tolist() == [False, True, True, False]


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.2"):
        magnitude_mask(torch.ones(3), 1.2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        magnitude_mask(torch.tensor([1.0, float("nan")]), 0.5)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got -0.1"):
        PruneConfig(sparsity=-0.1)
    with pytest.raises(ValueError, match="scope must be one of"):
        PruneConfig(sparsity=0.5, scope="network")
    with pytest.raises(ValueError, match="sparsity of rule 'conv' must be in"):
        PruneConfig(rules={"conv": 1.0})
    with pytest.raises(ValueError, match="needs a sparsity or at least one rule"):
        PruneConfig()
    with pytest.raises(ValueError,
                       match=r"PruneConfig: unknown key 'sparsty' \(did you mean sparsity\?\)"):
        PruneConfig.from_dict({"sparsty": 0.5})
    with pytest.raises(ValueError, match="'features.99.\\*' matches no prunable parameter"):
        prune_(tiny_squeezenet(), PruneConfig(rules={"features.99.*": 0.5}))


def test_global_vs_layer_scope():
    a = torch.tensor([10.0, 9.0, 8.0, 7.0])
    b = torch.tensor([1.0, 2.0, 3.0, 4.0])
    g = global_magnitude_masks({"a": a, "b": b}, 0.5)
    assert g["a"].all() and not g["b"].any()  # one threshold: all of a survives
    # per layer, each keeps its own top half
    assert magnitude_mask(a, 0.5).tolist() == [True, True, False, False]
    assert magnitude_mask(b, 0.5).tolist() == [False, False, True, True]
    # ties across tensors go to the earlier tensor
    g = global_magnitude_masks({"x": torch.ones(2), "y": torch.ones(2)}, 0.5)
    assert g["x"].tolist() == [True, True] and g["y"].tolist() == [False, False]


def test_prune_model_layer_scope_and_types():
    model = tiny_squeezenet()
    params = prunable_parameters(model)
    assert params["features.4.squeeze.weight"].types == ("squeeze", "conv1x1", "conv")
    assert params["classifier.1.weight"].types[0] == "classifier"
    assert not any(n.endswith("bias") or "bn" in n for n in params)
    masks = prune_(model, 0.5)
    assert set(masks) == set(params)
    weights = dict(model.named_parameters())
    for name, mask in masks.items():
        assert int(mask.sum()) == num_to_keep(mask.numel(), 0.5)
        assert (weights[name][~mask] == 0).all()
    # biases untouched
    assert "features.4.squeeze.bias" not in masks


def test_rules_globs_win_over_types_and_exclusions():
    model = tiny_squeezenet()
    cfg = PruneConfig.from_dict({
        "sparsity": 0.5,
        "rules": {"squeeze": 0.25, "conv3x3": 0.75, "features.5.*": 0.0, "expand3x3": 0.1},
        "exclude": ["classifier"],
    })
    targets = cfg.layer_targets(model)
    assert "classifier.1.weight" not in targets
    assert targets["features.4.squeeze.weight"] == 0.25
    assert targets["features.5.squeeze.weight"] == 0.0  # glob beats the "squeeze" type
    assert targets["features.4.expand3x3.weight"] == 0.1  # role beats kernel size
    assert targets["features.0.weight"] == 0.75  # the 3x3 stem conv
    assert targets["features.4.expand1x1.weight"] is None  # default sparsity
    masks = compute_masks(model, cfg)
    assert masks.layer_sparsity()["features.4.squeeze.weight"] == pytest.approx(0.25)
    assert masks.layer_sparsity()["features.5.expand3x3.weight"] == 0.0
    # only rules, no default: unnamed layers are left alone
    only = compute_masks(model, PruneConfig(rules={"expand1x1": 0.5}))
    assert all(n.endswith("expand1x1.weight") for n in only) and len(only) == 8


def test_global_scope_on_model_with_rule():
    model = tiny_squeezenet()
    cfg = PruneConfig(sparsity=0.6, scope="global", rules={"classifier": 0.0})
    masks = prune_(model, cfg)
    assert masks.layer_sparsity()["classifier.1.weight"] == 0.0
    rest = [n for n in masks if n != "classifier.1.weight"]
    kept = sum(int(masks[n].sum()) for n in rest)
    total = sum(masks[n].numel() for n in rest)
    assert kept == num_to_keep(total, 0.6)
    # per-layer sparsities differ under one threshold
    assert len({round(masks.layer_sparsity()[n], 6) for n in rest}) > 1
    # a second, higher round never revives pruned weights
    masks2 = prune_(model, PruneConfig(sparsity=0.8, scope="global"), keep=Masks(masks))
    for n in masks:
        assert not (masks2[n] & ~masks[n]).any()


def test_map_sparsity_and_round_trip():
    cfg = PruneConfig(sparsity=0.8, rules={"conv": 0.4}, exclude=["classifier"])
    half = cfg.map_sparsity(lambda s: s / 2)
    assert half.sparsity == 0.4 and half.rules == {"conv": 0.2} and half.exclude == ["classifier"]
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg


def test_linear_only_model():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    masks = prune_(model, PruneConfig(rules={"linear": 0.5, "classifier": 0.0}))
    assert masks.layer_sparsity() == {"0.weight": 0.5, "2.weight": 0.0}


def test_threshold_mask_prunes_exactly_below_quality_times_std():
    from squeezelab.compress.pruning.magnitude import threshold_mask

    # mean 0, population std sqrt((4 + 1 + 0 + 1 + 4) / 5) = sqrt(2)
    w = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    assert threshold_mask(w, 1.0).tolist() == [True, False, False, False, True]
    assert threshold_mask(w, 0.7).tolist() == [True, True, False, True, True]  # 0.99 < 1
    assert threshold_mask(w, 0.0).all()  # q = 0 prunes nothing (|w| >= 0)
    # an entry exactly at the threshold is kept: |w| < q * std is what is pruned
    assert threshold_mask(w, 2 ** -0.5).tolist() == [True, True, False, True, True]
    # a random tensor: exactly the entries below q * std, whatever its shape
    r = torch.randn(6, 5, 3, 3, generator=torch.Generator().manual_seed(1)) * 0.3 + 0.05
    for q in (0.25, 1.0, 1.5):
        assert torch.equal(threshold_mask(r, q), r.abs() >= q * r.std(correction=0))


def test_threshold_mask_takes_the_std_of_the_kept_weights_and_never_revives():
    from squeezelab.compress.pruning.magnitude import threshold_mask

    w = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0, 0.1])
    keep = torch.tensor([True, True, True, True, True, False])
    # std of the five kept values is sqrt(2): 0.1 stays pruned, -1, 0, 1 go
    assert threshold_mask(w, 1.0, keep).tolist() == [True, False, False, False, True, False]
    # a second round on the survivors: std of {-2, 2} is 2, so q = 1 keeps both, q = 1.1 none
    second = torch.tensor([True, False, False, False, True, False])
    assert threshold_mask(w, 1.0, second).tolist() == second.tolist()
    assert not threshold_mask(w, 1.1, second).any()
    with pytest.raises(ValueError, match="quality must be a number >= 0"):
        threshold_mask(w, -1.0)
    with pytest.raises(ValueError, match="current mask has shape"):
        threshold_mask(w, 1.0, torch.ones(3, dtype=torch.bool))


def test_threshold_method_on_a_model_per_layer_with_rules():
    model = tiny_squeezenet()
    cfg = PruneConfig(method="threshold", quality=1.0, rules={"classifier": 0.5},
                      exclude=["features.0.*"])
    params = dict(model.named_parameters())
    masks = compute_masks(model, cfg)
    assert "features.0.weight" not in masks
    for name, mask in masks.items():
        q = 0.5 if name == "classifier.1.weight" else 1.0
        w = params[name].detach()
        assert torch.equal(mask, w.abs() >= q * w.std(correction=0)), name
    # rounds: the threshold config is not ramped; each round prunes the survivors further
    assert cfg.map_sparsity(lambda s: s / 2) == cfg
    again = compute_masks(model, cfg, keep=masks)
    assert all(int(again[n].sum()) <= int(masks[n].sum()) for n in masks)
    assert not any((again[n] & ~masks[n]).any() for n in masks)
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg


def test_threshold_config_errors():
    from squeezelab.config import ConfigError

    with pytest.raises(ConfigError, match="give quality, not sparsity"):
        PruneConfig(method="threshold", sparsity=0.5)
    with pytest.raises(ConfigError, match="quality applies to method 'threshold' only"):
        PruneConfig(sparsity=0.5, quality=1.0)
    with pytest.raises(ConfigError, match="scope must be 'layer'"):
        PruneConfig(method="threshold", quality=1.0, scope="global")
    with pytest.raises(ConfigError, match="method must be one of"):
        PruneConfig(method="random", sparsity=0.5)
    with pytest.raises(ConfigError, match="quality of rule 'squeeze' must be a finite"):
        PruneConfig(method="threshold", rules={"squeeze": -0.5})
    with pytest.raises(ValueError, match="needs a quality or at least one rule"):
        PruneConfig(method="threshold")
    # a quality may exceed 1 (it multiplies a standard deviation, it is no fraction)
    assert PruneConfig(method="threshold", rules={"squeeze": 2.5}).rules == {"squeeze": 2.5}


# --- whole kernels (granularity "kernel", Mao et al. 2017) -------------------------------------
def whole_kernels(mask: torch.Tensor) -> bool:
    """Every k x k kernel of a conv mask kept or pruned as one."""
    per_kernel = mask.flatten(2)
    return bool((per_kernel.all(-1) | ~per_kernel.any(-1)).all())


def test_kernel_mask_keeps_the_kernels_of_largest_sum_of_magnitudes():
    w = torch.zeros(2, 2, 3, 3)
    w[0, 0] = 0.1   # sum |w| 0.9
    w[0, 1] = -0.5  # 4.5
    w[1, 0, 1, 1] = 3.0  # one large weight: 3.0
    w[1, 1] = 0.3   # 2.7
    mask = kernel_magnitude_mask(w, 0.5)
    assert mask.flatten(2).all(-1).tolist() == [[False, True], [True, False]]
    assert whole_kernels(mask) and int(mask.sum()) == 18
    # 4 kernels at 0.6: 2.4 pruned, rounded to 2 (num_to_keep over kernels, not weights)
    assert int(kernel_magnitude_mask(w, 0.6).flatten(2).all(-1).sum()) == 2
    # equal sums: the lower index is kept
    assert kernel_magnitude_mask(torch.ones(1, 4, 3, 3), 0.5).flatten(2).all(-1).tolist() == [
        [True, True, False, False]]


def test_kernel_mask_prunes_single_weights_where_kernels_are_single_weights():
    g = torch.Generator().manual_seed(0)
    for shape in ((8, 4, 1, 1), (10, 6)):  # a 1x1 conv, a linear layer
        w = torch.randn(*shape, generator=g)
        assert torch.equal(kernel_magnitude_mask(w, 0.7), magnitude_mask(w, 0.7))


def test_kernel_mask_never_revives_an_emptied_kernel_nor_a_pruned_weight():
    w = torch.arange(1.0, 1 + 4 * 9).view(1, 4, 3, 3)  # kernel 3 has the largest sum
    keep = torch.ones_like(w, dtype=torch.bool)
    keep[0, 3] = False  # pruned earlier: never back
    keep[0, 2, 0, 0] = False  # one weight of kernel 2 pruned earlier (element-wise)
    mask = kernel_magnitude_mask(w, 0.5, keep)
    assert mask.flatten(2).any(-1).tolist() == [[False, True, True, False]]
    assert not mask[0, 2, 0, 0] and int(mask.sum()) == 17


def test_kernel_granularity_prunes_every_conv_to_its_sparsity_in_whole_kernels():
    model = tiny_squeezenet()
    masks = prune_(model, PruneConfig(sparsity=0.75, granularity="kernel",
                                      rules={"classifier": 0.5}))
    weights = dict(model.named_parameters())
    spatial = [n for n, m in masks.items() if m.dim() == 4 and m.shape[2] * m.shape[3] > 1]
    assert spatial and all(whole_kernels(masks[n]) for n in spatial)
    for name, mask in masks.items():
        kernels = mask.flatten(2).any(-1) if mask.dim() == 4 else mask
        want = 0.5 if name.startswith("classifier") else 0.75
        assert int(kernels.sum()) == num_to_keep(kernels.numel(), want), name
        assert not weights[name][~mask].any()  # the pruned weights are zero
    # a later, higher target prunes whole kernels among the kept ones (the schedules' rounds)
    more = compute_masks(model, PruneConfig(sparsity=0.9, granularity="kernel"), keep=masks)
    assert all(whole_kernels(more[n]) and not (more[n] & ~masks[n]).any() for n in spatial)


def test_kernel_granularity_config_errors():
    with pytest.raises(ConfigError, match="granularity must be one of"):
        PruneConfig(sparsity=0.5, granularity="filter")
    for bad in ({"scope": "global"}, {"method": "threshold", "quality": 1.0, "sparsity": None}):
        with pytest.raises(ConfigError, match="granularity 'kernel' .* needs method 'magnitude' "
                           "and scope 'layer'"):
            PruneConfig(**{"sparsity": 0.5, "granularity": "kernel", **bad})

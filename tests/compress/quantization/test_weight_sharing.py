"""Tests for k-means weight sharing with trained centroids (Deep Compression, arXiv 1510.00149)."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.checkpoint import load_checkpoint, save_checkpoint
from squeezelab.compress.quantization.weight_sharing import (
    WeightSharingConfig,
    dense_weight,
    index_dtype,
    is_shared,
    layer_bits_from_state_dict,
    load_shared_state_,
    materialize_,
    prepare_shared_,
    select_layers,
    share_weights_,
    shared_layer_bits,
    shared_modules,
)
from squeezelab.models import create_model

TINY_FIRES = [(4, 8, 8)] * 8  # 5.6k parameters: fast, but every layer type is present


def tiny_squeezenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("squeezenet_cifar", fire_config=TINY_FIRES)


def conv_linear_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5),
    )


def prune_smallest_(model: nn.Module, fraction: float) -> dict[str, torch.Tensor]:
    """Zero the smallest |w| of every Conv/Linear weight; returns the kept masks by name."""
    masks = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight
                k = int(w.numel() * fraction)
                if k:
                    threshold = w.abs().flatten().kthvalue(k).values
                    w[w.abs() <= threshold] = 0
                masks[f"{name}.weight"] = w != 0
    return masks


X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


# --- dense_weight --------------------------------------------------------------------------------
def test_dense_weight_exact_on_a_hand_made_codebook():
    codebook = torch.tensor([-1.0, 0.5, 2.0])
    indices = torch.tensor([[2, 0], [1, 1]], dtype=torch.uint8)
    mask = torch.tensor([[True, False], [True, True]])
    w = dense_weight(codebook, indices, mask)
    assert w.tolist() == [[2.0, 0.0], [0.5, 0.5]]
    assert not torch.signbit(w[0, 1])  # pruned entries are +0.0, whatever codebook[0] is
    with pytest.raises(ValueError, match=r"indices shape \(2, 2\) and mask shape \(4,\) differ"):
        dense_weight(codebook, indices, mask.flatten())
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        dense_weight(codebook, indices, mask.to(torch.uint8))


def test_index_dtypes_fit_the_cluster_count():
    assert index_dtype(1) == torch.uint8 and index_dtype(8) == torch.uint8
    assert index_dtype(9) == torch.int16 and index_dtype(15) == torch.int16
    assert index_dtype(16) == torch.int32  # 65535 does not fit int16
    with pytest.raises(ValueError, match="bits must be an integer in 1..16, got 17"):
        index_dtype(17)


# --- share_weights_ ------------------------------------------------------------------------------
def test_share_replaces_weight_by_codebook_indices_and_mask():
    model = tiny_squeezenet()
    original = {n: m.weight.detach().clone() for n, m in model.named_modules()
                if isinstance(m, (nn.Conv2d, nn.Linear))}
    summary = share_weights_(model, WeightSharingConfig(bits={"conv": 3}))
    shared = shared_modules(model)
    assert set(shared) == {f"{n}.weight" for n in original} == set(summary)
    for name, m in shared.items():
        assert is_shared(m) and m.weight_bits == 3
        assert "weight" not in m._parameters
        assert isinstance(m.codebook, nn.Parameter) and m.codebook.dtype == torch.float32
        assert m.codebook.shape == (8,)
        assert m.weight_indices.dtype == torch.uint8
        assert m.weight_indices.shape == m.weight_mask.shape == original[name[:-7]].shape
        assert summary[name]["num_clusters"] == 8 and summary[name]["bits"] == 3
        assert summary[name]["num_weights"] == original[name[:-7]].numel()
    keys = set(model.state_dict())
    assert "features.4.squeeze.codebook" in keys and "features.4.squeeze.weight" not in keys
    assert {"features.4.squeeze.weight_indices", "features.4.squeeze.weight_mask"} <= keys
    # batch-norm weights are not Conv/Linear weights and stay as they were
    assert "features.1.weight" in keys


def test_share_keeps_zeros_zero_and_uses_at_most_2_pow_bits_values():
    model = tiny_squeezenet()
    masks = prune_smallest_(model, 0.5)
    summary = share_weights_(model, WeightSharingConfig(bits={"conv": 2, "classifier": 3}))
    model.eval()
    model(X)  # the forward pre-hook rebuilds module.weight
    for name, m in shared_modules(model).items():
        assert torch.equal(m.weight_mask, masks[name])
        assert torch.equal(m.weight != 0, masks[name])  # pruned stay 0, kept are non-zero
        assert (m.weight_indices[~masks[name]] == 0).all()
        assert torch.unique(m.weight[masks[name]]).numel() <= 2**m.weight_bits
        assert summary[name]["nonzero"] == int(masks[name].sum())
    assert shared_modules(model)["classifier.1.weight"].weight_bits == 3


def test_sharing_is_lossless_when_clusters_outnumber_distinct_values():
    model = conv_linear_net()
    before = model(X[:, :, :8, :8])
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("weight")}
    share_weights_(model, WeightSharingConfig(bits={"linear": 16, "conv": 9}))
    shared = shared_modules(model)
    assert shared["6.weight"].weight_indices.dtype == torch.int32
    assert shared["0.weight"].weight_indices.dtype == torch.int16
    for name, m in shared.items():
        assert torch.equal(dense_weight(m.codebook, m.weight_indices, m.weight_mask), weights[name])
    assert torch.equal(model(X[:, :, :8, :8]), before)


def test_fully_pruned_layer_is_all_zero():
    model = conv_linear_net()
    with torch.no_grad():
        model[2].weight.zero_()
    summary = share_weights_(model, WeightSharingConfig(bits={"conv": 4}))
    assert summary["2.weight"]["nonzero"] == 0 and summary["2.weight"]["num_used"] == 0
    m = model[2]
    assert not m.weight_mask.any() and torch.equal(m.weight, torch.zeros_like(m.weight))


# --- centroid fine-tuning -------------------------------------------------------------------------
def test_codebook_gradient_is_the_per_cluster_sum_of_dense_gradients():
    model = conv_linear_net()
    prune_smallest_(model, 0.3)
    share_weights_(model, WeightSharingConfig(bits={"conv": 3, "linear": 2}))
    x = X[:, :, :8, :8]
    target = torch.tensor([1, 3])
    F.cross_entropy(model(x), target).backward()

    # the same network with the dense weights as independent leaves
    dense = {name: dense_weight(m.codebook, m.weight_indices, m.weight_mask).detach()
             .requires_grad_() for name, m in shared_modules(model).items()}
    h = F.relu(F.conv2d(x, dense["0.weight"], model[0].bias, padding=1))
    h = F.relu(F.conv2d(h, dense["2.weight"], model[2].bias))
    logits = F.linear(torch.flatten(F.adaptive_avg_pool2d(h, 2), 1), dense["6.weight"],
                      model[6].bias)
    F.cross_entropy(logits, target).backward()

    for name, m in shared_modules(model).items():
        keep = m.weight_mask
        expected = torch.zeros_like(m.codebook).scatter_add_(
            0, m.weight_indices[keep].long(), dense[name].grad[keep]
        )
        torch.testing.assert_close(m.codebook.grad, expected, rtol=1e-5, atol=1e-7)
        assert m.codebook.grad.abs().sum() > 0


def test_sgd_with_momentum_and_weight_decay_fine_tunes_only_the_centroids():
    model = tiny_squeezenet()
    masks = prune_smallest_(model, 0.4)
    share_weights_(model, WeightSharingConfig(bits={"conv": 3}))
    model.eval()
    model(X)
    before = {n: (m.codebook.detach().clone(), m.weight_indices.clone(),
                  torch.unique(m.weight[m.weight_mask]).numel())
              for n, m in shared_modules(model).items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    target = torch.tensor([2, 7])
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(X), target).backward()
        opt.step()
    model(X)
    for name, m in shared_modules(model).items():
        codebook, indices, num_distinct = before[name]
        assert not torch.equal(m.codebook.detach(), codebook)  # centroids moved
        assert torch.equal(m.weight_indices, indices)  # assignments did not
        assert torch.equal(m.weight != 0, masks[name])  # pruned weights still exactly zero
        assert torch.unique(m.weight[m.weight_mask]).numel() == num_distinct


# --- rules -------------------------------------------------------------------------------------
def test_glob_rules_win_over_type_rules_and_classifier_over_conv():
    model = tiny_squeezenet()
    config = WeightSharingConfig(bits={
        "conv": 4, "classifier": 3, "expand3x3": 6,
        "features.4.*": 2, "features.4.squeeze": 5,  # first matching glob wins
        "features.5.squeeze.weight": None,  # None: left unshared
    })
    chosen = select_layers(model, config)
    assert chosen["features.0.weight"] == 4
    assert chosen["features.4.squeeze.weight"] == 2
    assert chosen["features.4.expand3x3.weight"] == 2  # glob beats the type rule
    assert chosen["features.5.expand3x3.weight"] == 6  # expand3x3 is more specific than conv
    assert chosen["features.5.expand1x1.weight"] == 4
    assert "features.5.squeeze.weight" not in chosen
    assert chosen["classifier.1.weight"] == 3
    share_weights_(model, config)
    assert shared_layer_bits(model) == chosen


def test_a_layer_matched_by_nothing_is_left_unshared():
    model = conv_linear_net()
    share_weights_(model, WeightSharingConfig(bits={"linear": 4}))
    assert list(shared_modules(model)) == ["6.weight"]
    assert isinstance(model[0].weight, nn.Parameter) and not is_shared(model[0])
    # the last Linear is also the classifier
    assert select_layers(conv_linear_net(), WeightSharingConfig(bits={"classifier": 2})) == {
        "6.weight": 2}


def test_int_bits_means_every_conv_and_linear():
    assert WeightSharingConfig(bits=6).bits == {"conv": 6, "linear": 6}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": {"conv": 0}}, r"bits\['conv'\] must be an integer in 1..16, got 0"),
        ({"bits": {"conv": 17}}, r"bits\['conv'\] must be an integer in 1..16, got 17"),
        ({"bits": {"conv": True}}, r"must be an integer in 1..16, got True"),
        ({"bits": {"linear": 4.0}}, r"must be an integer in 1..16, got 4.0"),
        ({"bits": {}}, "bits must be an int or a non-empty dict"),
        ({"init": "kmeans++"}, "init must be one of"),
        ({"max_iter": -2}, "max_iter must be an integer >= 0, got -2"),
        ({"tol": -1.0}, "tol must be a number >= 0"),
        ({"seed": "0"}, "seed must be an integer"),
        ({"entropy_weight": -0.1}, "entropy_weight must be a finite number >= 0, got -0.1"),
        ({"entropy_weight": float("inf")}, "entropy_weight must be a finite number >= 0"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WeightSharingConfig(**kwargs)


def test_from_dict_rejects_unknown_keys_and_round_trips():
    data = {"bits": {"conv": 8, "classifier": 5}, "init": "density"}
    config = WeightSharingConfig.from_dict(data)
    assert config.bits == {"conv": 8, "classifier": 5} and config.init == "density"
    assert WeightSharingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"WeightSharingConfig: unknown key 'num_bits'"):
        WeightSharingConfig.from_dict({"num_bits": 8})


def test_glob_matching_nothing_and_double_sharing_are_errors():
    model = tiny_squeezenet()
    with pytest.raises(ValueError, match="rule 'features.99.*' matches no Conv2d/Linear weight"):
        share_weights_(model, WeightSharingConfig(bits={"features.99.*": 4}))
    assert not shared_modules(model)  # nothing was changed
    share_weights_(model, WeightSharingConfig(bits={"conv": 4}))
    with pytest.raises(ValueError, match="'features.0.weight' is already shared"):
        share_weights_(model, WeightSharingConfig(bits={"conv": 4}))


# --- state dict, copies, wrappers, materialize -------------------------------------------------
def _shared_tiny() -> nn.Module:
    model = tiny_squeezenet(seed=1)
    prune_smallest_(model, 0.3)
    share_weights_(model, WeightSharingConfig(bits={"conv": 4, "classifier": 5}))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    F.cross_entropy(model(X), torch.tensor([0, 1])).backward()  # train mode: BN stats move
    opt.step()
    return model.eval()


def test_state_dict_round_trip_into_a_fresh_model_gives_identical_outputs():
    model = _shared_tiny()
    expected = model(X)
    fresh = tiny_squeezenet(seed=2)
    load_shared_state_(fresh, model.state_dict())
    assert torch.equal(fresh.eval()(X), expected)

    # the explicit route: structure from the saved spec, then a strict load_state_dict
    other = tiny_squeezenet(seed=3)
    prepare_shared_(other, shared_layer_bits(model))
    other.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(other.eval()(X), expected)
    assert layer_bits_from_state_dict(model.state_dict()) == shared_layer_bits(model)


def test_checkpoint_round_trip_through_safetensors(tmp_path):
    model = _shared_tiny()
    expected = model(X)
    save_checkpoint(tmp_path / "shared", model, meta={"weight_sharing": shared_layer_bits(model)})
    ckpt = load_checkpoint(tmp_path / "shared")
    assert ckpt.model_state["features.4.squeeze.weight_indices"].dtype == torch.uint8
    assert ckpt.model_state["features.4.squeeze.weight_mask"].dtype == torch.bool
    fresh = tiny_squeezenet(seed=4)
    prepare_shared_(fresh, ckpt.meta["weight_sharing"])
    fresh.load_state_dict(ckpt.model_state, strict=True)
    assert torch.equal(fresh.eval()(X), expected)


def test_bad_state_dicts_and_layer_names_are_refused():
    with pytest.raises(ValueError, match=r"'features.0.codebook' has shape \(12,\); expected"):
        layer_bits_from_state_dict({"features.0.codebook": torch.zeros(12)})
    with pytest.raises(ValueError, match="model has no layer 'features.77'"):
        prepare_shared_(tiny_squeezenet(), {"features.77.weight": 4})
    with pytest.raises(ValueError, match="'features.2.weight' is a ReLU; weight sharing handles"):
        prepare_shared_(tiny_squeezenet(), {"features.2.weight": 4})
    with pytest.raises(ValueError, match="ending in '.weight', got 'features.0.bias'"):
        prepare_shared_(tiny_squeezenet(), {"features.0.bias": 4})
    model = _shared_tiny()
    fresh = tiny_squeezenet()
    prepare_shared_(fresh, {"features.0.weight": 2})
    with pytest.raises(ValueError, match="'features.0.weight' is shared with 2 bits, the state"):
        load_shared_state_(fresh, model.state_dict())


def test_deepcopy_after_a_training_forward_and_data_parallel_names():
    model = _shared_tiny().train()
    model(X).sum()  # a forward with autograd on leaves non-leaf weights behind without care
    twin = copy.deepcopy(model)
    assert torch.equal(twin.eval()(X), model.eval()(X))
    with torch.no_grad():
        twin.features[0].codebook.add_(1.0)
    assert not torch.equal(twin.features[0].codebook, model.features[0].codebook)

    wrapped = nn.DataParallel(tiny_squeezenet())
    share_weights_(wrapped, WeightSharingConfig(bits={"squeeze": 3}))
    names = list(shared_modules(wrapped))
    assert names and all(n.startswith("features.") and n.endswith("squeeze.weight") for n in names)


def test_materialize_restores_plain_layers_with_the_same_outputs():
    model = _shared_tiny()
    expected = model(X)
    names = materialize_(model)
    assert set(names) == set(select_layers(tiny_squeezenet(),
                                           WeightSharingConfig(bits={"conv": 4})))
    assert not shared_modules(model)
    m = model.features[4].squeeze
    assert isinstance(m.weight, nn.Parameter) and not hasattr(m, "codebook")
    assert not hasattr(m, "weight_bits") and not m._forward_pre_hooks and not m._forward_hooks
    assert torch.equal(model(X), expected)
    keys = set(model.state_dict())
    assert "features.4.squeeze.weight" in keys and not any("codebook" in k for k in keys)
    # gradients now go to the dense weight again
    model.train()(X).sum().backward()
    assert m.weight.grad is not None


@pytest.mark.parametrize("init", ["random", "density"])
def test_other_inits_share_within_the_codebook(init):
    model = conv_linear_net()
    summary = share_weights_(model, WeightSharingConfig(bits={"conv": 2}, init=init, seed=4))
    for name, m in shared_modules(model).items():
        used = torch.unique(m.weight_indices[m.weight_mask].long())
        assert used.numel() == summary[name]["num_used"] <= 4
        assert torch.equal(torch.sort(m.codebook.detach()).values, m.codebook.detach())


def test_load_shared_state_reuses_layers_already_shared_with_the_same_bits():
    model = _shared_tiny()
    fresh = tiny_squeezenet(seed=5)
    prepare_shared_(fresh, {"features.0.weight": 4})  # part of the structure already there
    load_shared_state_(fresh, model.state_dict())
    assert shared_layer_bits(fresh) == shared_layer_bits(model)
    assert torch.equal(fresh.eval()(X), model(X))


def test_entropy_weight_lowers_the_indices_entropy_and_coded_size(tmp_path):
    """entropy_weight clusters each layer with a price on rate: lower index entropy and a
    smaller entropy-coded file than plain k-means, zeros still zero, every layer still within
    its codebook; 0 is the paper's k-means, unchanged."""
    from squeezelab.compress.format.sqz import load_compressed, save_compressed

    def entropy(model):
        bits = 0.0
        for m in shared_modules(model).values():
            idx = m.weight_indices[m.weight_mask].long()
            p = torch.bincount(idx).double()
            p = p[p > 0] / idx.numel()
            bits += float(-(p * p.log2()).sum()) * idx.numel()
        return bits

    torch.manual_seed(0)
    base = create_model("squeezenet_cifar")
    prune_smallest_(base, 0.6)
    plain, priced = copy.deepcopy(base), copy.deepcopy(base)
    share_weights_(plain, WeightSharingConfig(bits=6, max_iter=20))
    share_weights_(priced, WeightSharingConfig(bits=6, max_iter=20, entropy_weight=0.02))
    assert entropy(priced) < 0.95 * entropy(plain)

    def relative_error(model):
        err = total = 0.0
        for weight_name, m in shared_modules(model).items():
            w = base.get_parameter(weight_name).detach()
            d = dense_weight(m.codebook, m.weight_indices, m.weight_mask).detach()
            err, total = err + float(((d - w) ** 2).sum()), total + float((w ** 2).sum())
        return err / total

    # the price is a rise in error (here on uniform initial weights, where fine levels are
    # worth the most), not a collapse: under 1% of the weights' energy
    assert relative_error(plain) < relative_error(priced) < 0.01
    sizes = {}
    for name, model in (("plain", plain), ("priced", priced)):
        for weight_name, m in shared_modules(model).items():
            assert torch.equal(m.weight_mask, base.get_parameter(weight_name) != 0)
        sizes[name] = save_compressed(model, tmp_path / f"{name}.sqz", coder="ans").stat().st_size
        with torch.no_grad():  # the file holds the model it was given
            assert torch.equal(load_compressed(tmp_path / f"{name}.sqz")(X), model.eval()(X))
    assert sizes["priced"] < sizes["plain"]
    same = copy.deepcopy(base)
    share_weights_(same, WeightSharingConfig(bits=6, max_iter=20, entropy_weight=0))
    assert all(torch.equal(a.codebook, b.codebook) for a, b in zip(
        shared_modules(same).values(), shared_modules(plain).values()))

"""Weight sharing trained through the assignments (``quantization/reassign.py``)."""
import copy

import pytest
import torch
import torch.nn as nn

from squeezelab.compress.quantization.kmeans import assign_clusters, assign_with_rate
from squeezelab.compress.quantization.reassign import (
    enable_reassignment_,
    freeze_assignments_,
    is_reassigning,
)
from squeezelab.compress.quantization.weight_sharing import (
    WeightSharingConfig,
    load_shared_state_,
    materialize_,
    prepare_shared_,
    share_weights_,
    shared_layer_bits,
    shared_modules,
)

X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def pruned_net(seed: int = 0) -> nn.Sequential:
    """Two convs and a linear layer, the smallest half of each weight zeroed."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5))
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight
                w[w.abs() <= w.abs().flatten().median()] = 0
    return net


def shared_net(entropy_weight: float = 0.0):
    """(the shared net, its weights before sharing by name)."""
    net = pruned_net()
    originals = {n: p.detach().clone() for n, p in net.named_parameters() if n.endswith("weight")}
    share_weights_(net, WeightSharingConfig(bits=3, entropy_weight=entropy_weight))
    return net, originals


# --- assign_with_rate ------------------------------------------------------------------------
def test_assign_with_rate_picks_the_cheapest_cluster():
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        k = int(torch.randint(1, 12, (1,), generator=g))
        values, centroids = torch.randn(300, generator=g), torch.randn(k, generator=g)
        rates = torch.rand(k, generator=g) * 4
        rates[torch.rand(k, generator=g) < 0.25] = float("inf")
        rates[0] = 1.0  # at least one cluster may be used
        weight = float(torch.rand(1, generator=g)) * 0.5
        chosen = assign_with_rate(values, centroids, rates, weight)
        cost = (values[:, None] - centroids[None]) ** 2 + weight * rates[None]
        assert torch.isfinite(rates[chosen]).all()
        assert torch.allclose(cost.gather(1, chosen[:, None]), cost.min(1, keepdim=True).values,
                              atol=1e-12)
    # no price on rate: the nearest centroid, every cluster allowed
    rates = torch.full((5,), float("inf"))
    values, centroids = torch.randn(50, generator=g), torch.randn(5, generator=g)
    assert torch.equal(assign_with_rate(values, centroids, rates, 0.0),
                       assign_clusters(values, centroids))


def test_assign_with_rate_refuses_bad_input():
    with pytest.raises(ValueError, match="every cluster has an infinite rate"):
        assign_with_rate(torch.zeros(3), torch.zeros(2), torch.full((2,), float("inf")), 0.1)
    with pytest.raises(ValueError, match="rate_weight must be a finite number >= 0, got -1"):
        assign_with_rate(torch.zeros(3), torch.zeros(2), torch.zeros(2), -1)
    with pytest.raises(ValueError, match=r"one shape, got \(2,\) and \(3,\)"):
        assign_with_rate(torch.zeros(3), torch.zeros(2), torch.zeros(3), 0.1)


# --- the straight-through weights -------------------------------------------------------------
def test_forward_computes_with_the_centroids_and_both_get_gradients():
    net, originals = shared_net()
    reference = copy.deepcopy(net)
    materialize_(reference)
    enable_reassignment_(net, originals)
    # at the start each weight's cheapest cluster is the one k-means gave it
    out, expected = net(X), reference(X)
    assert torch.equal(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    for name, module in shared_modules(net).items():
        grad = reference.get_parameter(name).grad
        mask = module.weight_mask
        assert torch.equal(module.latent_weight.grad, torch.where(mask, grad, 0.0))
        per_cluster = torch.zeros_like(module.codebook).index_add_(
            0, module.weight_indices[mask].long(), grad[mask])
        assert torch.allclose(module.codebook.grad, per_cluster, atol=1e-6)
        # each latent weight starts where the weight was before sharing (zero where pruned)
        assert torch.equal(module.latent_weight.detach(), originals[name])


def test_a_weight_that_crosses_a_boundary_changes_cluster_and_stays_pruned_elsewhere():
    net, originals = shared_net()
    enable_reassignment_(net, originals)
    conv = net[0]
    mask = conv.weight_mask
    kept = mask.flatten().nonzero()[0, 0]
    old = int(conv.weight_indices.flatten()[kept])
    target = (old + 3) % conv.codebook.numel()
    with torch.no_grad():
        conv.latent_weight.view(-1)[kept] = conv.codebook[target]
    net(X)
    assert int(conv.weight_indices.flatten()[kept]) == target
    moved = freeze_assignments_(net)
    assert moved["0.weight"] == {"kept": int(mask.sum()), "moved": 1}
    assert moved["2.weight"]["moved"] == 0 and moved["6.weight"]["moved"] == 0
    # an ordinary shared model again: no latent weights, no hooks, its weight the centroids
    assert not any(is_reassigning(m) for m in shared_modules(net).values())
    assert all("latent" not in n for n, _ in net.named_parameters())
    assert float(conv.weight.view(-1)[kept]) == float(conv.codebook.detach()[target])
    assert torch.all(conv.weight[~mask] == 0)
    reference = copy.deepcopy(net)
    materialize_(reference)
    assert torch.equal(net(X), reference(X))


def test_training_moves_weights_between_clusters_and_the_state_dict_stays_a_shared_model():
    net, originals = shared_net(entropy_weight=0.05)
    enable_reassignment_(net, originals, entropy_weight=0.05)
    names = [n for n, _ in net.named_parameters()]
    assert "0.latent_weight" in names and "0.codebook" in names
    # the state dict leaves the latent weights out: it loads into a fresh shared model
    state = net.state_dict()
    assert not any("latent" in k for k in state)
    fresh = pruned_net(seed=5)
    load_shared_state_(fresh, state)
    assert torch.equal(fresh(X), net(X))
    used_before = {n: set(m.weight_indices[m.weight_mask].tolist())
                   for n, m in shared_modules(net).items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    target = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    for _ in range(20):
        opt.zero_grad()
        (net(X) - target).square().mean().backward()
        opt.step()
    moved = freeze_assignments_(net)
    assert sum(v["moved"] for v in moved.values()) > 0
    for name, module in shared_modules(net).items():
        # entropy-priced: a cluster the sharing emptied is never refilled
        assert set(module.weight_indices[module.weight_mask].tolist()) <= used_before[name]
        assert torch.all(module.weight[~module.weight_mask] == 0)


def test_enable_refuses_what_it_cannot_train():
    with pytest.raises(ValueError, match="has no shared layer: share its weights"):
        enable_reassignment_(pruned_net())
    net, originals = shared_net()
    with pytest.raises(ValueError, match=r"originals name layers that are not shared: \['4.w'\]"):
        enable_reassignment_(net, {"4.w": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"originals\['0.weight'\] has shape \(2,\)"):
        enable_reassignment_(net, {"0.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="entropy_weight must be a finite number >= 0"):
        enable_reassignment_(net, originals, entropy_weight=-0.1)
    enable_reassignment_(net)  # without originals: each latent weight starts at its centroid
    assert torch.equal(net[0].latent_weight.detach(), net[0].weight)
    with pytest.raises(ValueError, match="layer '0.weight' already reassigns its weights"):
        enable_reassignment_(net)
    # a fresh model prepared from the layer bits has no latent weights to expect
    fresh = pruned_net()
    prepare_shared_(fresh, shared_layer_bits(net))
    assert not any(is_reassigning(m) for m in shared_modules(fresh).values())

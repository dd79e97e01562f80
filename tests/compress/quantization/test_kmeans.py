"""Tests for the 1-D k-means of weight sharing (Deep Compression, arXiv 1510.00149, section 3)."""
import time

import pytest
import torch

from squeezelab.compress.quantization.kmeans import (
    assign_clusters,
    fit_entropy_constrained,
    fit_kmeans,
    init_centroids,
)


def brute_force_assign(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    # (N, 1) - (1, K) -> (N, K) distances; argmin returns the first minimum, like the contract
    return (values.double()[:, None] - centroids.double()[None, :]).abs().argmin(dim=1)


def lloyd_reference(values: torch.Tensor, centroids: torch.Tensor, iters: int) -> torch.Tensor:
    """Textbook Lloyd with an N x K distance matrix, float64, empty clusters kept."""
    values = values.double()
    c = centroids.double().clone()
    for _ in range(iters):
        a = brute_force_assign(values, c)
        sums = torch.zeros_like(c).index_add_(0, a, values)
        counts = torch.bincount(a, minlength=c.numel())
        c = torch.where(counts > 0, sums / counts.clamp(min=1), c)
    return c


# --- init ------------------------------------------------------------------------------------
def test_linear_init_is_evenly_spaced_between_min_and_max():
    values = torch.tensor([3.0, -1.0, 0.5, 2.0, 1.0])
    c = init_centroids(values, 5, "linear")
    assert c.tolist() == [-1.0, 0.0, 1.0, 2.0, 3.0]
    assert init_centroids(values, 1, "linear").tolist() == [-1.0]


def test_density_init_takes_values_at_evenly_spaced_cdf_levels():
    values = torch.arange(100, dtype=torch.float32).flip(0)  # order must not matter
    # CDF levels (k + 0.5) / 4 -> sorted positions 12, 37, 62, 87
    assert init_centroids(values, 4, "density").tolist() == [12.0, 37.0, 62.0, 87.0]
    # density init follows the mass: most centroids land where most values are
    # 90 zeros then 10, 20, ..., 100: the last level (9.5 / 10) sits at sorted position 95
    skewed = torch.cat([torch.zeros(90), torch.arange(1, 11, dtype=torch.float32) * 10])
    c = init_centroids(skewed, 10, "density")
    assert c.tolist() == [0.0] * 9 + [60.0]


def test_random_init_samples_distinct_positions_reproducibly():
    values = torch.arange(50, dtype=torch.float32) * 0.5
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    c1 = init_centroids(values, 8, "random", generator=g1)
    c2 = init_centroids(values, 8, "random", generator=g2)
    assert torch.equal(c1, c2)
    assert torch.equal(c1, torch.sort(c1).values)
    assert torch.unique(c1).numel() == 8  # without replacement: 8 distinct values
    assert all(v in values.tolist() for v in c1.tolist())


def test_init_rejects_bad_input():
    with pytest.raises(ValueError, match="init method must be one of"):
        init_centroids(torch.ones(3), 2, "kmeans++")
    with pytest.raises(ValueError, match="num_clusters must be an integer >= 1, got 0"):
        init_centroids(torch.ones(3), 0)


# --- assignment ------------------------------------------------------------------------------
def test_bucketize_assignment_equals_brute_force_argmin():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(20_000, generator=g)
    centroids = torch.randn(37, generator=g) * 2  # unsorted on purpose
    got = assign_clusters(values, centroids)
    assert got.dtype == torch.int64
    assert torch.equal(got, brute_force_assign(values, centroids))


def test_assignment_ties_go_to_the_smaller_centroid_then_the_lower_index():
    centroids = torch.tensor([2.0, 0.0, 2.0, 1.0])  # a duplicate and an unsorted order
    values = torch.tensor([0.5, 1.5, 2.0, 5.0, -3.0])
    # 0.5: half-way 0 | 1 -> 0.0 (index 1); 1.5: half-way 1 | 2 -> 1.0 (index 3);
    # 2.0 and 5.0: the first of the two equal 2.0 centroids (index 0)
    assert assign_clusters(values, centroids).tolist() == [1, 3, 0, 0, 1]
    # on ascending centroids the rule is exactly argmin's first minimum, duplicates included
    ascending = torch.tensor([0.0, 1.0, 2.0, 2.0])
    assert torch.equal(assign_clusters(values, ascending), brute_force_assign(values, ascending))
    assert assign_clusters(values, ascending).tolist() == [0, 1, 2, 2, 0]


# --- fit ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("init", ["linear", "random", "density"])
def test_two_separated_clumps_converge_to_the_clump_means(init):
    low = torch.tensor([-1.0, -1.25, -0.75, -1.5])   # mean -1.125, exact in binary
    high = torch.tensor([2.0, 2.5, 3.0])             # mean 2.5
    values = torch.cat([high, low])
    centroids, assignments = fit_kmeans(values, 2, init=init)
    assert centroids.dtype == torch.float32 and assignments.dtype == torch.int64
    assert centroids.tolist() == [-1.125, 2.5]
    assert assignments.tolist() == [1, 1, 1, 0, 0, 0, 0]


def test_fit_matches_textbook_lloyd_and_returns_nearest_assignments():
    g = torch.Generator().manual_seed(1)
    values = torch.randn(3000, generator=g) * 0.1
    centroids, assignments = fit_kmeans(values, 16, max_iter=7, tol=0.0)
    ref = lloyd_reference(values, init_centroids(values, 16, "linear"), 7)
    torch.testing.assert_close(centroids, ref.float(), rtol=0, atol=1e-7)
    assert torch.equal(assignments, brute_force_assign(values, centroids))
    # sorted, and each centroid is the mean of its cluster at convergence
    assert torch.equal(centroids, torch.sort(centroids).values)


def test_converged_centroids_are_cluster_means():
    g = torch.Generator().manual_seed(2)
    values = torch.randn(5000, generator=g)
    centroids, assignments = fit_kmeans(values, 8, max_iter=500, tol=0.0)
    for k in range(8):
        members = values[assignments == k].double()
        assert members.numel() > 0
        assert abs(members.mean().item() - centroids[k].item()) < 1e-6


def test_empty_clusters_keep_their_centroid():
    # linear init over [0, 100] with 5 centroids: 0, 25, 50, 75, 100. Nothing is near 50 or 75,
    # so those clusters get no value in the first step and stay where they are.
    values = torch.tensor([0.0, 1.0, 2.0, 24.0, 26.0, 99.0, 100.0])
    centroids, assignments = fit_kmeans(values, 5, max_iter=1)
    assert centroids.tolist() == [1.0, 25.0, 50.0, 75.0, 99.5]
    assert assignments.tolist() == [0, 0, 0, 1, 1, 4, 4]


def test_fewer_distinct_values_than_clusters_is_exact():
    values = torch.tensor([0.5, -2.0, 0.5, 3.0, -2.0])
    centroids, assignments = fit_kmeans(values, 8)
    assert centroids.tolist() == [-2.0, 0.5, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    assert torch.equal(centroids[assignments], values)  # lossless
    assert assignments.tolist() == [1, 0, 1, 2, 0]


def test_single_cluster_is_the_mean():
    centroids, assignments = fit_kmeans(torch.tensor([1.0, 2.0, 6.0]), 1)
    assert centroids.tolist() == [3.0]
    assert assignments.tolist() == [0, 0, 0]


def test_random_init_is_reproducible_by_seed():
    values = torch.randn(2000, generator=torch.Generator().manual_seed(5))
    a = fit_kmeans(values, 6, init="random", max_iter=2, seed=11)
    b = fit_kmeans(values, 6, init="random", max_iter=2, seed=11)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        (torch.tensor([]), {}, "values is empty"),
        (torch.tensor([1.0, float("nan")]), {}, "1 non-finite value"),
        (torch.tensor([1.0, float("inf"), -float("inf")]), {}, "2 non-finite value"),
        (torch.ones(2, 2), {}, r"values must be 1-D, got shape \(2, 2\)"),
        (torch.ones(3), {"num_clusters": 0}, "num_clusters must be an integer >= 1, got 0"),
        (torch.ones(3), {"num_clusters": 2.0}, "num_clusters must be an integer >= 1"),
        (torch.ones(3), {"init": "kmeans++"}, "init must be one of"),
        (torch.ones(3), {"max_iter": -1}, "max_iter must be an integer >= 0, got -1"),
        (torch.ones(3), {"tol": -0.1}, "tol must be >= 0, got -0.1"),
    ],
)
def test_fit_rejects_bad_input(values, kwargs, message):
    kwargs = {"num_clusters": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        fit_kmeans(values, **kwargs)


def test_fit_is_fast_on_a_million_values():
    values = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0))
    fit_kmeans(values[:1000], 256)  # warm-up
    # CPU time of this process (all its threads), so a busy shared machine does not inflate it
    start = time.process_time()
    centroids, assignments = fit_kmeans(values, 256)
    elapsed = time.process_time() - start
    assert centroids.shape == (256,) and assignments.shape == (1_000_000,)
    # about 0.2 s of CPU on one core; the bound leaves room for slow CI machines
    assert elapsed < 3.0, f"fit_kmeans took {elapsed:.2f} s of CPU on 1M values"


# ------------------------------------------------------------ entropy-constrained clustering
def _cost(values, centroids, assignments, rate_weight):
    """Squared error plus rate_weight x the assignments' code lengths (-log2 p), summed."""
    v = values.double()
    counts = torch.bincount(assignments, minlength=centroids.numel()).double()
    lengths = -torch.log2(counts[assignments] / values.numel())
    return float(((v - centroids.double()[assignments]) ** 2).sum()
                 + rate_weight * lengths.sum())


def _entropy(assignments):
    p = torch.bincount(assignments).double() / assignments.numel()
    p = p[p > 0]
    return float(-(p * p.log2()).sum())


def laplace(n=20_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g, dtype=torch.float64) - 0.5
    return -0.05 * torch.sign(u) * torch.log1p(-2 * u.abs())


def test_entropy_constrained_with_no_rate_weight_is_kmeans():
    v = laplace()
    a, b = fit_entropy_constrained(v, 16, 0.0), fit_kmeans(v, 16)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_entropy_constrained_lowers_its_objective_and_the_entropy():
    """At the same rate weight, its result costs less than k-means' (error + weight x bits);
    a larger weight trades error for entropy; every value sits in its cheapest cluster."""
    v = laplace()
    var = float(v.var())
    km_c, km_a = fit_kmeans(v, 32)
    previous_entropy, previous_error = float("inf"), 0.0
    for w in (0.005, 0.02, 0.08):
        c, a = fit_entropy_constrained(v, 32, w * var, max_iter=1000)  # to its fixed point
        assert bool((c[1:] >= c[:-1]).all())
        assert _cost(v, c, a, w * var) < _cost(v, km_c, km_a, w * var)
        error = float(((v - c.double()[a]) ** 2).mean())
        assert _entropy(a) < previous_entropy and error > previous_error
        previous_entropy, previous_error = _entropy(a), error
        # a fixed point: no value would be cheaper in another used cluster (brute force)
        counts = torch.bincount(a, minlength=32).double()
        used = counts > 0
        lengths = torch.where(used, -torch.log2(counts / v.numel()), torch.inf)
        costs = (v[:, None] - c.double()[None, :]) ** 2 + w * var * lengths[None, :]
        chosen = costs.gather(1, a[:, None]).squeeze(1)
        assert bool((chosen <= costs.min(dim=1).values + 1e-12).all())
    assert int(used.sum()) < 32  # a strong price on rate empties the rare clusters


def test_entropy_constrained_beats_kmeans_of_the_same_entropy():
    """The rate-distortion point it reaches: about the entropy of 16-cluster k-means, at less
    error (the textbook gain of entropy-coded uniform-like levels over Lloyd's)."""
    v = laplace(50_000)
    km_c, km_a = fit_kmeans(v, 16)
    c, a = fit_entropy_constrained(v, 64, 0.02 * float(v.var()))
    assert _entropy(a) < _entropy(km_a)
    assert float(((v - c.double()[a]) ** 2).mean()) < float(((v - km_c.double()[km_a]) ** 2)
                                                             .mean())


def test_entropy_constrained_rejects_bad_rate_weights():
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rate_weight must be a finite number >= 0"):
            fit_entropy_constrained(laplace(100), 4, bad)

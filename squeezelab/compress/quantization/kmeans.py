"""One-dimensional k-means for weight sharing (Deep Compression, Han et al. 2015, arXiv 1510.00149,
section 3).

Pure tensor functions, no model code:

* ``init_centroids``: the paper's three initialisations, linear (evenly spaced between the
  smallest and largest value: the paper's best, because it keeps the rare large weights
  representable), random (a sample of the values) and density (the values at evenly spaced
  quantiles of their CDF);
* ``assign_clusters``: nearest centroid for every value, by ``torch.bucketize`` against the
  midpoints of the sorted centroids (O(N log K), no N x K distance matrix);
* ``assign_with_rate``: the cheapest cluster for every value when each cluster's code length
  is priced too (what entropy-constrained sharing assigns by; ``reassign.py`` uses it);
* ``fit_kmeans``: Lloyd's algorithm on 1-D data. Every 1-D cluster is a run of the sorted
  values, so after one sort each step is K-1 binary searches and prefix-sum differences
  (O(K log N)); empty clusters keep their centroid. About 0.3 s of CPU for 1M values and 256
  clusters.
* ``fit_entropy_constrained``: the same with a price on rate (entropy-constrained scalar
  quantization, Chou, Lookabaugh & Gray 1989; for networks Choi et al. 2017, arXiv
  1612.01543): each value joins the cluster that minimises squared error plus ``rate_weight``
  times its code length -log2 p, so rare clusters empty out and the indices' entropy (their
  bytes once entropy-coded) drops for a small rise in error. Its clusters are runs of the
  sorted values too: the cheapest cluster as a function of the value is the lower envelope of
  K lines, found in O(K).

Centroids are always returned sorted ascending, so equal inputs give equal codebooks.
"""
from __future__ import annotations

import numpy as np
import torch

INIT_METHODS = ("linear", "random", "density")


def _check_values(values: torch.Tensor, name: str = "values") -> torch.Tensor:
    """Validate a 1-D, non-empty, finite tensor and return it as float64 (exact sums)."""
    if not torch.is_tensor(values):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(values).__name__}")
    if values.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(values.shape)}")
    if values.numel() == 0:
        raise ValueError(f"{name} is empty; k-means needs at least one value")
    if values.is_complex():
        raise ValueError(f"{name} must be real, got dtype {values.dtype}")
    values = values.detach().to(torch.float64)
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or inf); expected finite")
    return values


def _check_num_clusters(num_clusters: int) -> int:
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or num_clusters < 1:
        raise ValueError(f"num_clusters must be an integer >= 1, got {num_clusters!r}")
    return num_clusters


def init_centroids(
    values: torch.Tensor,
    num_clusters: int,
    method: str = "linear",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Initial centroids (float64, sorted ascending, shape [num_clusters]) for 1-D ``values``.

    * ``"linear"``: ``linspace(min, max, K)``; with K = 1 the single centroid is the minimum.
    * ``"random"``: K values drawn from ``values`` without replacement (with replacement when
      there are fewer than K values), using ``generator`` (a CPU ``torch.Generator``).
    * ``"density"``: the sorted values at positions ``floor((k + 0.5) * N / K)``, k = 0..K-1,
      i.e. evenly spaced levels of the empirical CDF, each the centre of a 1/K slice of mass.
    """
    return _init_centroids(_check_values(values), _check_num_clusters(num_clusters), method,
                           generator)


def _init_centroids(
    values: torch.Tensor, num_clusters: int, method: str, generator: torch.Generator | None
) -> torch.Tensor:
    # values: checked float64 1-D (see _check_values)
    if method == "linear":
        lo, hi = values.min(), values.max()
        return torch.linspace(float(lo), float(hi), num_clusters, dtype=torch.float64,
                              device=values.device)
    if method == "random":
        n = values.numel()
        if n >= num_clusters:
            pick = torch.randperm(n, generator=generator)[:num_clusters]
        else:
            pick = torch.randint(0, n, (num_clusters,), generator=generator)
        return torch.sort(values[pick.to(values.device)]).values
    if method == "density":
        n = values.numel()
        ordered = torch.sort(values).values
        # positions of the CDF levels (k + 0.5) / K, in integer arithmetic so they are exact
        k = torch.arange(num_clusters, dtype=torch.int64, device=values.device)
        pos = torch.clamp((2 * k + 1) * n // (2 * num_clusters), max=n - 1)
        return ordered[pos]
    raise ValueError(f"init method must be one of {INIT_METHODS}, got {method!r}")


def assign_clusters(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index (int64, shape of ``values``) of the nearest centroid for every value.

    ``centroids`` may be in any order. A value exactly half-way between two centroids goes to
    the smaller one; among equal centroids the one with the lowest index wins. For ascending
    centroids (what ``fit_kmeans`` returns) this is exactly the first minimum of
    ``argmin(|values[:, None] - centroids[None, :]|, dim=1)``, at O(N log K) instead of O(N K).
    """
    if centroids.dim() != 1 or centroids.numel() == 0:
        raise ValueError(f"centroids must be a non-empty 1-D tensor, got shape "
                         f"{tuple(centroids.shape)}")
    flat = values.reshape(-1)
    dtype = torch.promote_types(flat.dtype, centroids.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float64
    # stable sort: equal centroids keep their index order, so ties go to the lowest index
    ordered, order = torch.sort(centroids.detach().to(dtype), stable=True)
    # keep the first of each run of equal centroids (its lowest original index), so that
    # values above a duplicated centroid do not go to its later copies
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    ordered, order = ordered[first], order[first]
    midpoints = (ordered[1:] + ordered[:-1]) / 2  # [U-1], increasing
    # right=False: midpoints[i-1] < v <= midpoints[i] -> sorted cluster i (ties to the lower)
    pos = torch.bucketize(flat.detach().to(dtype), midpoints, right=False)
    return order[pos].reshape(values.shape)


def assign_with_rate(values: torch.Tensor, centroids: torch.Tensor, rate_bits: torch.Tensor,
                     rate_weight: float) -> torch.Tensor:
    """Index (int64, shape of ``values``) of the cheapest cluster for every value: the one
    minimising ``(v - c_k)^2 + rate_weight * rate_bits[k]`` (``rate_bits``: each cluster's code
    length, inf for a cluster that may not be used). ``rate_weight`` 0 is ``assign_clusters``
    (nearest centroid, every cluster allowed). ``centroids`` may be in any order. As in
    ``fit_entropy_constrained``, the cheapest cluster is a run of the value axis, found from the
    lower envelope of K lines, so this is O(N log K) too.
    """
    if not rate_weight >= 0 or not np.isfinite(rate_weight):
        raise ValueError(f"rate_weight must be a finite number >= 0, got {rate_weight!r}")
    if rate_weight == 0:
        return assign_clusters(values, centroids)
    if centroids.dim() != 1 or rate_bits.shape != centroids.shape or centroids.numel() == 0:
        raise ValueError(f"centroids and rate_bits must be non-empty 1-D tensors of one shape, "
                         f"got {tuple(centroids.shape)} and {tuple(rate_bits.shape)}")
    c = centroids.detach().double().cpu().numpy()
    rate = rate_bits.detach().double().cpu().numpy()
    live = np.flatnonzero(np.isfinite(rate))
    if live.size == 0:
        raise ValueError("every cluster has an infinite rate: no value can be assigned")
    order = live[np.argsort(c[live], kind="stable")]  # ascending, as the envelope needs
    hull, handover = _envelope(c[order], c[order] ** 2 + rate_weight * rate[order])
    flat = values.detach().reshape(-1).double()
    pos = torch.bucketize(flat, torch.from_numpy(handover).to(flat.device), right=False)
    chosen = torch.from_numpy(order[hull]).to(flat.device)
    return chosen[pos].reshape(values.shape)


def fit_kmeans(
    values: torch.Tensor,
    num_clusters: int,
    init: str = "linear",
    max_iter: int = 100,
    tol: float = 1e-6,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster 1-D ``values`` into ``num_clusters`` groups with Lloyd's algorithm.

    Returns ``(centroids, assignments)``: centroids float32 [K] sorted ascending, assignments
    int64 [N] with ``assignments[i]`` the nearest of the returned centroids to ``values[i]``.

    When ``values`` holds at most K distinct numbers the answer is exact with no iterations:
    the centroids are those numbers (float32), padded by repeating the largest one (padding
    entries are never assigned). Otherwise the centroids start from ``init_centroids(init)``
    (``seed`` drives the random init) and iterate until no centroid moves by more than
    ``tol`` times the value range, or ``max_iter`` iterations. A cluster that loses all its
    values keeps its centroid, as in the paper (it is simply unused).
    """
    values = _check_values(values)
    num_clusters = _check_num_clusters(num_clusters)
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")

    n = values.numel()
    ordered = torch.sort(values).values
    num_distinct = 1 + int((ordered[1:] != ordered[:-1]).sum())
    if num_distinct <= num_clusters:
        distinct, inverse = torch.unique(values, sorted=True, return_inverse=True)
        pad = distinct[-1:].expand(num_clusters - num_distinct)
        return torch.cat([distinct, pad]).to(torch.float32), inverse

    generator = torch.Generator().manual_seed(seed)
    centroids = _init_centroids(values, num_clusters, init, generator)
    span = float(ordered[-1] - ordered[0])
    # In 1-D every cluster is a contiguous run of the sorted values, so one sort up front turns
    # each Lloyd step into K-1 binary searches plus prefix-sum differences: O(K log N) per
    # iteration instead of O(N log K). Values are centred first so the prefix sums stay small.
    # The loop itself touches only K-sized arrays, so it runs in NumPy on the host: a torch
    # call costs microseconds to milliseconds of dispatch and thread start-up, a NumPy call
    # on 256 numbers next to nothing (a zero-copy view for CPU tensors).
    offset = float(ordered[n // 2])
    prefix = torch.cat([ordered.new_zeros(1), torch.cumsum(ordered - offset, 0)])  # [N+1]
    ordered_np = ordered.cpu().numpy()
    prefix_np = prefix.cpu().numpy()
    c = centroids.cpu().numpy()
    for _ in range(max_iter):
        midpoints = (c[1:] + c[:-1]) / 2
        # cluster i holds midpoints[i-1] < v <= midpoints[i], as assign_clusters decides
        cuts = np.searchsorted(ordered_np, midpoints, side="right")
        bounds = np.concatenate([[0], cuts, [n]])  # [K+1] run starts/ends
        counts = np.diff(bounds)
        sums = prefix_np[bounds[1:]] - prefix_np[bounds[:-1]]
        means = np.where(counts > 0, sums / np.maximum(counts, 1) + offset, c)
        # means of consecutive runs are already ordered; sorting guards against rounding
        means = np.sort(means)
        shift = float(np.abs(means - c).max())
        c = means
        if shift <= tol * span:
            break
    centroids = torch.from_numpy(c).to(device=values.device)
    centroids = centroids.to(torch.float32)
    # assign against the float32 centroids actually returned, so the pair is self-consistent
    return centroids, assign_clusters(values, centroids.to(torch.float64))


def _envelope(c: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lower envelope of the lines y = -2 c_k x + intercept_k (c ascending, intercepts
    finite): (the clusters that are cheapest somewhere, in order; the values of x where each
    hands over to the next). (x - c_k)^2 + rate_k = x^2 + that line, so this is the cheapest
    cluster of every value."""
    slopes = -2.0 * c  # descending, as c ascends
    hull: list[int] = []
    starts: list[float] = []  # where hull[i] becomes the cheapest
    for k in range(c.size):
        if hull and slopes[k] == slopes[hull[-1]]:  # equal centroids: the cheaper one only
            if intercept[k] >= intercept[hull[-1]]:
                continue
            hull.pop()
            starts.pop()
        while hull:
            j = hull[-1]
            if (intercept[k] - intercept[j]) / (slopes[j] - slopes[k]) > starts[-1]:
                break
            hull.pop()  # line k undercuts j everywhere j was cheapest
            starts.pop()
        if hull:
            j = hull[-1]
            starts.append((intercept[k] - intercept[j]) / (slopes[j] - slopes[k]))
        else:
            starts.append(-np.inf)
        hull.append(k)
    return np.asarray(hull), np.asarray(starts[1:])


def fit_entropy_constrained(
    values: torch.Tensor,
    num_clusters: int,
    rate_weight: float,
    init: str = "linear",
    max_iter: int = 100,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy-constrained clustering of 1-D ``values``: minimise
    ``sum (v - c[a(v)])^2 + rate_weight * sum -log2 p[a(v)]`` over centroids, assignments and
    the cluster probabilities p (the counts' share), starting from ``fit_kmeans``' answer (so
    the objective ends no higher than k-means').

    ``rate_weight`` is in squared value units per bit (``share_weights_`` scales it by each
    layer's variance); 0 gives ``fit_kmeans`` exactly. Returns ``(centroids, assignments)``
    as ``fit_kmeans`` does (float32 [K] ascending, int64 [N]); a value is assigned to the
    cluster of least cost, which need not be its nearest centroid, and clusters that empty
    out stay in the codebook unused.
    """
    if not rate_weight >= 0 or not np.isfinite(rate_weight):
        raise ValueError(f"rate_weight must be a finite number >= 0, got {rate_weight!r}")
    if rate_weight == 0:
        return fit_kmeans(values, num_clusters, init=init, max_iter=max_iter, seed=seed)
    values = _check_values(values)
    num_clusters = _check_num_clusters(num_clusters)
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    n = values.numel()
    # start from k-means' answer (its centroids and its clusters' shares): every step below
    # lowers the objective, so the result never costs more than k-means' own
    start, start_assignments = fit_kmeans(values, num_clusters, init=init, max_iter=max_iter,
                                          seed=seed)
    ordered, order = torch.sort(values)
    c = start.double().cpu().numpy().copy()
    counts = np.bincount(start_assignments.cpu().numpy(), minlength=num_clusters)
    rate = np.where(counts > 0, -np.log2(np.maximum(counts, 1) / n), np.inf)  # bits
    offset = float(ordered[n // 2])
    prefix = np.concatenate([[0.0], np.cumsum(ordered.cpu().numpy() - offset)])
    ordered_np = ordered.cpu().numpy()
    bounds = None
    for _ in range(max(max_iter, 1)):
        live = np.isfinite(rate)
        idx = np.flatnonzero(live)
        hull, handover = _envelope(c[idx], c[idx] ** 2 + rate_weight * rate[idx])
        active = idx[hull]
        cuts = np.searchsorted(ordered_np, handover, side="right")
        new_bounds = np.concatenate([[0], cuts, [n]])
        counts = np.diff(new_bounds)
        sums = prefix[new_bounds[1:]] - prefix[new_bounds[:-1]]
        c[active] = np.where(counts > 0, sums / np.maximum(counts, 1) + offset, c[active])
        rate = np.full(num_clusters, np.inf)
        rate[active] = np.where(counts > 0, -np.log2(np.maximum(counts, 1) / n), np.inf)
        # the active clusters' means stay in order (consecutive runs); keep c ascending
        if bounds is not None and np.array_equal(new_bounds, bounds):
            break
        bounds = new_bounds
    runs = np.repeat(active, counts)  # cluster of each sorted value
    assignments = torch.empty(n, dtype=torch.int64)
    assignments[order.cpu()] = torch.from_numpy(runs)
    # ascending codebook: unused clusters keep their last centroid; remap the indices
    perm = np.argsort(c, kind="stable")
    rank = np.empty_like(perm)
    rank[perm] = np.arange(num_clusters)
    centroids = torch.from_numpy(c[perm]).to(torch.float32).to(values.device)
    return centroids, torch.from_numpy(rank)[assignments].to(values.device)


__all__ = ["INIT_METHODS", "assign_clusters", "assign_with_rate", "fit_entropy_constrained",
           "fit_kmeans", "init_centroids"]

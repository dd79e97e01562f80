"""Symbol streams for the entropy-coder tests (compress/coding): a skewed source and its
empirical entropy."""
import numpy as np


def skewed(n=50_000, k=16, seed=0):
    """``n`` symbols of ``range(k)`` from a random, strongly skewed distribution."""
    rng = np.random.default_rng(seed)
    p = rng.random(k) ** 3 + 1e-3
    p /= p.sum()
    return rng.choice(k, size=n, p=p)


def entropy_bytes(symbols):
    """The empirical (order-0) entropy of ``symbols`` in bytes: what an ideal coder spends."""
    counts = np.bincount(symbols)
    counts = counts[counts > 0]
    return float(-(counts * np.log2(counts / counts.sum())).sum() / 8)

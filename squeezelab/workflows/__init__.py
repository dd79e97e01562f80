"""Workflows: what combines training (``squeezelab.train``) with compression
(``squeezelab.compress``), the two floors that never import each other.

    deep_compression.py   prune -> retrain -> share -> tune centroids -> .sqz (arXiv 1510.00149)
    dsd.py                dense-sparse-dense training (arXiv 1607.04381)
    fitnets.py            FitNets: hint training, then distillation (arXiv 1412.6550)
    studies/              grids of ordinary runs described by one recipe (squeezelab study)
"""

"""The registered kinds of study cell, one module each (registry.py imports them all).

    train.py        an ordinary train() run of a TrainConfig
    compress.py     the Deep Compression pipeline on a source model: a .sqz, loaded back
    quantize.py     one quantizer of the registry on a source model (and its fine-tuning)
    dsd.py          dense-sparse-dense, from scratch or from a source, and its dense baseline
    distill.py      a student trained with a teacher: labels, KD, logit matching, FitNets
    sensitivity.py  per-layer pruning sensitivity of a source model

The kinds that start from a model share ``workflows/studies/model_cells.py``.
"""

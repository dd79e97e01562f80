"""The registered kinds of study cell, one module each (registry.py imports them all).

    train.py   an ordinary train() run of a TrainConfig
"""

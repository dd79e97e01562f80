"""Activation choice by name: the SqueezeNet activation study compares ReLU, LeakyReLU and Tanh;
MobileNetV2 (arXiv 1801.04381) uses ReLU6; airbench's layout (and the Fire groups built on it)
uses GELU."""
from __future__ import annotations

import torch.nn as nn

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "relu6", "gelu")


def make_activation(name: str) -> nn.Module:
    """A fresh activation module; ``name`` is one of ``ACTIVATIONS``."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        # 0.1 rather than PyTorch's 0.01: the slope used by the activation study's LeakyReLU runs.
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "tanh":
        return nn.Tanh()
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")

"""Shared building blocks with no model-specific code."""
from squeezelab.layers.activations import ACTIVATIONS, make_activation
from squeezelab.layers.conv import ConvBnAct
from squeezelab.layers.fire import EXPAND3X3_KINDS, Fire
from squeezelab.layers.inception import Inception, XceptionBlock
from squeezelab.layers.residual import Bottleneck, InvertedResidual
from squeezelab.layers.spatial import (
    SPATIAL_KINDS,
    FactorizedConv,
    FlattenedConv,
    SeparableConv,
    spatial_conv,
)

__all__ = [
    "ACTIVATIONS", "make_activation", "ConvBnAct", "EXPAND3X3_KINDS", "Fire", "Inception",
    "XceptionBlock", "Bottleneck", "InvertedResidual", "SPATIAL_KINDS", "FactorizedConv",
    "FlattenedConv", "SeparableConv", "spatial_conv",
]

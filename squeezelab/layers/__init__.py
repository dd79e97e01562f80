"""Shared building blocks with no model-specific code."""
from squeezelab.layers.activations import ACTIVATIONS, make_activation
from squeezelab.layers.conv import ConvBnAct
from squeezelab.layers.fire import Fire

__all__ = ["ACTIVATIONS", "make_activation", "ConvBnAct", "Fire"]

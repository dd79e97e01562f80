"""Fold BatchNorm into the convolution before it, for a smaller and faster deployed model.

In eval mode ``bn(conv(x)) = conv'(x)`` with ``W' = W * g`` and ``b' = beta + (b - mean) * g``,
``g = gamma / sqrt(running_var + eps)`` per output channel. A BatchNorm layer stores four
tensors per channel; folding leaves one (the bias), and zero weights stay exactly zero, so
pruning masks survive. For a pruned, 4-bit SqueezeNet the BatchNorm tensors are about a sixth
of the ``.sqz`` file; folded, a twenty-fourth.

``fold_batchnorm(model)`` returns a new registry model built with ``batch_norm=False`` (so its
spec saves and rebuilds like any other) holding the folded weights; outputs match the original
in eval mode to float rounding.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from squeezelab.layers import Fire
from squeezelab.models import create_model, model_spec, unwrap_model


def conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """Every Conv2d in module order, with the BatchNorm2d that directly follows it (or None).

    A Fire module names its norms ``<conv>_bn``; in a Sequential (the stem) the norm is the
    next child.
    """
    follows: dict[int, nn.BatchNorm2d] = {}
    for module in model.modules():
        if isinstance(module, Fire):
            for conv_name in ("squeeze", "expand1x1", "expand3x3"):
                bn = getattr(module, f"{conv_name}_bn")
                conv = getattr(module, conv_name)
                if not isinstance(conv, nn.Conv2d):  # a factorised expand3x3: BN follows its last
                    conv = [m for m in conv.modules() if isinstance(m, nn.Conv2d)][-1]
                if isinstance(bn, nn.BatchNorm2d):
                    follows[id(conv)] = bn
        elif isinstance(module, nn.Sequential):
            children = list(module.children())
            for a, b in zip(children, children[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    follows[id(a)] = b
    return [(m, follows.get(id(m))) for m in model.modules() if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the single conv equal to ``bn(conv(x))`` in eval mode."""
    g = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (out,)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    weight = conv.weight * g.reshape(-1, 1, 1, 1)  # (out, in, kh, kw) scaled per output
    return weight, bn.bias + (bias - bn.running_mean) * g


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A BatchNorm-free copy of a registry model with every conv+BN pair folded (eval mode).

    The model's builder must accept ``batch_norm=False`` and then lay out the same convs in the
    same order (the SqueezeNet family does).
    """
    model = unwrap_model(model)
    spec = model_spec(model)
    if not spec["kwargs"].get("batch_norm", True) or not any(
            isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        raise ValueError(f"model {spec['name']!r} has no BatchNorm layers to fold")
    try:
        folded = create_model(spec["name"], **{**spec["kwargs"], "batch_norm": False})
    except TypeError as e:
        raise ValueError(
            f"model {spec['name']!r} cannot be rebuilt without BatchNorm: {e}") from e
    source_pairs = conv_bn_pairs(model)
    targets = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    if len(source_pairs) != len(targets) or any(
            a.weight.shape != b.weight.shape for (a, _), b in zip(source_pairs, targets)):
        raise ValueError(f"model {spec['name']!r}: the BatchNorm-free rebuild has a different "
                         "conv layout; it cannot be folded")
    for (conv, bn), target in zip(source_pairs, targets):
        if bn is None:
            target.weight.copy_(conv.weight)
            if target.bias is not None:
                target.bias.copy_(conv.bias if conv.bias is not None else 0)
        else:
            weight, bias = fold_conv_bn(conv, bn)
            target.weight.copy_(weight)
            target.bias.copy_(bias)
    leftover = [n for n, p in folded.named_parameters()
                if not any(p is t.weight or p is t.bias for t in targets)]
    if leftover:
        raise ValueError(f"model {spec['name']!r}: parameters outside convs ({leftover[:3]}) "
                         "are not handled by folding")
    return folded.train(model.training)

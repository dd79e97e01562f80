"""Quantization-aware training (Jacob et al. 2018, arXiv 1712.05877): ``QATConv2d`` /
``QATLinear`` keep float shadow weights as Parameters and fake-quantize weights and inputs in the
forward (straight-through gradients); ``prepare_qat_`` swaps them in, ``convert_qat_`` turns the
trained model into ``uniform_ptq``'s integer layers.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.compress.quantization.select import select_layers, set_module
from squeezelab.compress.quantization.uniform import (
    UniformQuantConfig,
    fake_quantize,
    qparams_unchecked,
    qrange,
    tensor_min_max,
)
from squeezelab.compress.quantization.uniform_ptq import layer_report, quantized_from_float

# --------------------------------------------------------------------------- QAT


class _QATMixin:
    """Fake quantization of the input (moving-average range) and the weight (current range)."""

    def _init_qat(self, config: UniformQuantConfig) -> None:
        self.qconfig = config
        if config.activation_num_bits is not None:
            self.input_observer = config.make_observer(moving_average=True).to(self.weight.device)
        else:
            self.input_observer = None

    def _fake_quant_input(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.qconfig
        if self.input_observer is None:
            return x
        # Track the range while training; in eval a never-trained layer calibrates on the batch.
        if self.training or not self.input_observer.initialized:
            self.input_observer(x)
        signed = cfg.activation_symmetric
        qmin, qmax = qrange(cfg.activation_num_bits, signed)
        scale, zp = qparams_unchecked(self.input_observer.min_val, self.input_observer.max_val,
                             qmin, qmax, signed)
        return fake_quantize(x, scale, zp, cfg.activation_num_bits, signed)

    def fake_quantized_weight(self) -> torch.Tensor:
        """The weight as the integer model will see it, with an STE gradient to ``self.weight``."""
        cfg = self.qconfig
        lo, hi = tensor_min_max(self.weight.detach(), 0 if cfg.per_channel else None)
        qmin, qmax = qrange(cfg.num_bits, cfg.weight_symmetric)
        scale, zp = qparams_unchecked(lo, hi, qmin, qmax, cfg.weight_symmetric)
        return fake_quantize(self.weight, scale, zp, cfg.num_bits, cfg.weight_symmetric,
                             0 if cfg.per_channel else None)


class QATConv2d(_QATMixin, nn.Conv2d):
    """Conv2d with float shadow weights (a Parameter) and fake-quantized weights and input."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, config: UniformQuantConfig) -> QATConv2d:
        qat = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                  conv.padding_mode, device="meta")
        # the same Parameters: optimizers keep working
        qat.weight, qat.bias = conv.weight, conv.bias
        qat._init_qat(config)
        return qat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._fake_quant_input(x), self.fake_quantized_weight(),
                                  self.bias)


class QATLinear(_QATMixin, nn.Linear):
    """Linear with float shadow weights (a Parameter) and fake-quantized weights and input."""

    @classmethod
    def from_float(cls, linear: nn.Linear, config: UniformQuantConfig) -> QATLinear:
        qat = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        qat.weight, qat.bias = linear.weight, linear.bias
        qat._init_qat(config)
        return qat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._fake_quant_input(x), self.fake_quantized_weight(), self.bias)


def prepare_qat_(model: nn.Module, config: UniformQuantConfig) -> list[str]:
    """Quantization-aware training in place: the selected Conv2d/Linear become QATConv2d /
    QATLinear sharing the original weight Parameters, so an optimizer over
    ``model.parameters()`` (made before or after) trains the float shadow weights through the
    fake quantizers. Returns the names of the prepared layers."""
    chosen = select_layers(model, config)
    for name, module in chosen:
        if isinstance(module, (QATConv2d, QATLinear)):
            raise ValueError(f"layer {name!r} is already prepared for QAT")
        qat_cls = QATConv2d if isinstance(module, nn.Conv2d) else QATLinear
        set_module(model, name, qat_cls.from_float(module, config))
    return [n for n, _ in chosen]


@torch.no_grad()
def convert_qat_(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Replace every QAT layer by its integer counterpart (weights quantized from the trained
    shadow weights, input qparams from the moving-average range). Returns ``quantize_ptq_``'s
    per-layer report."""
    qat_layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (QATConv2d, QATLinear))]
    if not qat_layers:
        raise ValueError("the model has no QAT layer; call prepare_qat_ first")
    report = {}
    for name, module in qat_layers:
        cfg = module.qconfig
        input_qparams = None
        if module.input_observer is not None:
            if not module.input_observer.initialized:
                raise ValueError(
                    f"layer {name!r} has not observed any input; train or run it first")
            input_qparams = module.input_observer.qparams(cfg.activation_num_bits,
                                                          cfg.activation_symmetric)
        q = quantized_from_float(module, cfg, input_qparams)  # reads the shadow weights
        set_module(model, name, q)
        report[name] = layer_report(q, module)
    return report

__all__ = ["QATConv2d", "QATLinear", "convert_qat_", "prepare_qat_"]

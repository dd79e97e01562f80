"""Architecture learning, the compression side (Srinivas & Babu, "Learning the Architecture of
Deep Neural Networks", arXiv 1511.05497): tri-state ReLU gates put into a SqueezeNet, and the
learned gates turned into a smaller ordinary SqueezeNet.

``install_gates_`` replaces the ReLU after every conv whose channels channel pruning can remove
(``channels.channel_producers``: the stem, every squeeze, the expands of Fires without a
bypass; a bypass keeps the widths of the layers around it, so those are not gated) with a
``layers.tsrelu.TsReLU`` starting at w = 1, d = 0, exactly a ReLU. Training with the gates'
regulariser (``squeezelab.train.architecture``) drives w and d toward 0 or 1.
``cut_architecture`` then makes the learned model an ordinary one:

* every gate w is rounded at ``threshold`` (0.5). A channel whose w rounds to 0 outputs
  w * relu(.) ~ 0: it is removed physically (``channels.remove_channels``), exact when w is
  exactly 0 (the regulariser and the clamp to [0, 1] usually put it there; the report gives
  the largest w removed). A kept channel keeps its weights, and its w (not rounded: exact,
  because relu(w z) = w relu(z) for w >= 0) is folded into the BatchNorm scale and shift (or
  the conv's weights and bias) before it;
* a layer whose d rounds to 1 is linear (tsReLU = w x). Merging it into its neighbour is
  exact algebra in two cases (``compose_1x1_then_conv``, ``compose_conv_then_1x1``), but not
  within a SqueezeNet, and each linear layer's report says why: a max-pool (not linear)
  follows the stem; a Fire has no form without its squeeze, merging a squeeze into its expands
  would cost parameters (in * (e1 + 9 e3) against in * s + s * (e1 + 9 e3): the squeeze is
  the bottleneck that saves them) and is not exact at the borders (expand3x3 zero-pads the
  squeeze's output, whose BatchNorm shift would be padded as zeros); an expand's output is
  concatenated with the other branch's and feeds the next Fire (or, after a pool, through a
  non-linear max). Such a layer keeps its ReLU (d set to 0); the output then changes where
  the layer's input is negative, which the fine-tuning that follows absorbs. A d that rounds
  to 0 is set to 0, exact when it is 0.

The result rebuilds from the registry (``fire_config``, ``stem_channels``) and saves as an
ordinary checkpoint. A checkpoint of a gated model (the learning run's) names its gates
``<activation>.gate_w`` / ``.gate_d``; ``install_gates_from_state_`` puts them back before
loading (``format/checkpoints.load_compressible`` does).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from squeezelab.compress.pruning.channels import channel_producers, remove_channels
from squeezelab.compress.quantization.select import set_module
from squeezelab.layers.tsrelu import TsReLU, floor_mask
from squeezelab.models import create_model, model_spec, unwrap_model

#: the names of a TsReLU's parameters in a state dict (``<activation path>.gate_w``)
GATE_PARAMS = ("gate_w", "gate_d")


# --------------------------------------------------------------------------- the algebra


def compose_conv_then_1x1(w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor,
                          b2: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One conv equal to a 1x1 conv (w2 (out, mid, 1, 1), b2) applied after a kxk conv (w1
    (mid, in, kh, kw), b1), both without groups: W[o] = sum_m w2[o, m] w1[m], b = w2 b1 + b2.
    Exact everywhere (the 1x1 conv sees no padding), with the first conv's stride, padding
    and dilation."""
    if w2.shape[2:] != (1, 1) or w1.shape[0] != w2.shape[1]:
        raise ValueError(f"the second conv must be 1x1 reading the first's {w1.shape[0]} "
                         f"channels, got weight shapes {tuple(w1.shape)} and {tuple(w2.shape)}")
    m2 = w2[:, :, 0, 0]  # (out, mid, 1, 1) -> (out, mid)
    weight = torch.einsum("om,mikl->oikl", m2, w1)
    bias = torch.zeros(w2.shape[0], dtype=w1.dtype, device=w1.device)
    if b1 is not None:
        bias = bias + m2 @ b1
    if b2 is not None:
        bias = bias + b2
    return weight, bias


def compose_1x1_then_conv(w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor,
                          b2: torch.Tensor | None, padding: int | tuple[int, int] = 0,
                          atol: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One conv equal to a kxk conv (w2 (out, mid, kh, kw), b2, zero ``padding``) applied
    after a 1x1 conv (w1 (mid, in, 1, 1), b1): W[o, :, y, x] = sum_m w2[o, m, y, x] w1[m],
    b = b2 + sum_{m, y, x} w2[o, m, y, x] b1[m].

    With zero padding this is exact only where the first conv's bias is zero: the composed
    conv pads the *input* with zeros, the original pads the first conv's *output*, whose padded
    pixels are 0 instead of b1. So the border pixels of the original miss the bias terms their
    window reaches into the padding, a position-dependent term no single conv has. Refused
    (ValueError) when padding is not 0 and some |b1| > ``atol``."""
    if w1.shape[2:] != (1, 1) or w1.shape[0] != w2.shape[1]:
        raise ValueError(f"the first conv must be 1x1 feeding the second's {w2.shape[1]} "
                         f"channels, got weight shapes {tuple(w1.shape)} and {tuple(w2.shape)}")
    pad = (padding, padding) if isinstance(padding, int) else tuple(padding)
    if any(pad) and b1 is not None and float(b1.abs().max()) > atol:
        raise ValueError(
            f"a 1x1 conv with a bias (max |b| {float(b1.abs().max()):.3g}) followed by a "
            f"zero-padded conv (padding {pad}) is not one conv: the padding zeros replace the "
            "bias at the borders, a position-dependent difference")
    m1 = w1[:, :, 0, 0]  # (mid, in, 1, 1) -> (mid, in)
    weight = torch.einsum("omkl,mi->oikl", w2, m1)
    bias = torch.zeros(w2.shape[0], dtype=w2.dtype, device=w2.device)
    if b1 is not None:
        bias = bias + torch.einsum("omkl,m->o", w2, b1)
    if b2 is not None:
        bias = bias + b2
    return weight, bias


def conv_bn_affine(conv: nn.Conv2d, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of ``bn(conv(x))`` as one conv in eval mode (BatchNorm folded)."""
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else w.new_zeros(w.shape[0])
    if isinstance(bn, nn.BatchNorm2d):
        g = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        return w * g.view(-1, 1, 1, 1), bn.bias.detach() + (b - bn.running_mean) * g
    return w, b


# --------------------------------------------------------------------------- gates


def gateable_layers(model: nn.Module) -> dict[str, str]:
    """Producer conv name -> path of the activation module after it, for every conv whose
    channels can be removed (not locked by a bypass), in order."""
    net = unwrap_model(model)
    paths = {id(m): n for n, m in net.named_modules()}
    return {name: paths[id(p.act)] for name, p in channel_producers(net).items()
            if not p.locked}


def install_gates_(model: nn.Module, layers: Sequence[str] | None = None, w: float = 1.0,
                   d: float = 0.0) -> dict[str, str]:
    """Replace the ReLU after each gateable conv (``layers``: producer names, default all)
    by a TsReLU over its channels, starting at ``w`` and ``d`` (1 and 0: the model computes
    what it did). Returns producer name -> activation path of the gates installed."""
    net = unwrap_model(model)
    targets = gateable_layers(net)
    if layers is not None:
        unknown = [n for n in layers if n not in targets]
        if unknown:
            raise ValueError(f"{unknown} are not gateable layers of this model; expected some "
                             f"of {list(targets)}")
        targets = {n: targets[n] for n in layers}
    producers = channel_producers(net)
    for name, path in targets.items():
        act = net.get_submodule(path)
        if isinstance(act, TsReLU):
            raise ValueError(f"{path} is already a TsReLU")
        if not isinstance(act, nn.ReLU):
            # tsReLU with w = 1, d = 0 is a ReLU; it generalises no other activation
            raise ValueError(f"architecture learning replaces ReLUs; {path} is a "
                             f"{type(act).__name__}")
        set_module(net, path, TsReLU(producers[name].channels, w, d))
    return targets


def install_gates_from_state_(model: nn.Module, keys: Iterable[str]) -> list[str]:
    """Put a TsReLU wherever ``keys`` (a state dict's) name ``<path>.gate_w``, sized from the
    model's own producer, so a gated model's checkpoint loads; returns the paths."""
    net = unwrap_model(model)
    paths = sorted({k[:-len(".gate_w")] for k in keys if k.endswith(".gate_w")})
    if not paths:
        return []
    by_path = {path: name for name, path in gateable_layers(net).items()}
    producers = channel_producers(net)
    missing = [p for p in paths if p not in by_path]
    if missing:
        raise ValueError(f"gates at {missing} do not follow a gateable conv of this model "
                         f"(gateable activations: {list(by_path)})")
    for path in paths:
        set_module(net, path, TsReLU(producers[by_path[path]].channels))
    return paths


def gate_scales(model: nn.Module) -> dict[str, nn.Parameter]:
    """Activation path -> the BatchNorm scale (gamma) right before each gate whose conv has
    one. gamma and w scale a channel alike (relu(w gamma z) = w relu(gamma z)), so while gamma
    trains, a pull on w moves into gamma and w says nothing of the channel's worth: architecture
    learning freezes these while the gates learn (``ArchitectureLearningConfig.freeze_scales``),
    and the cut folds w into them."""
    net = unwrap_model(model)
    producers = channel_producers(net)
    gates = gate_modules(net)
    return {path: producers[name].bn.weight for name, path in gateable_layers(net).items()
            if path in gates and producers[name].bn is not None}


def gate_modules(model: nn.Module) -> dict[str, TsReLU]:
    """Activation path -> TsReLU, for every gate in the model."""
    return {n: m for n, m in unwrap_model(model).named_modules() if isinstance(m, TsReLU)}


def channel_costs(model: nn.Module) -> dict[str, torch.Tensor]:
    """Per gate (activation path): the parameters each of its channels costs, (C,): the
    channel's filter (and bias), its two BatchNorm entries and its input slice in every conv
    that reads it. The regulariser's "parameters" cost weights each gate by this."""
    net = unwrap_model(model)
    producers = channel_producers(net)
    convs = {n: m for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    out = {}
    for name, path in gateable_layers(net).items():
        p = producers[name]
        cost = p.conv.weight[0].numel() + (p.conv.bias is not None) + 2 * (p.bn is not None)
        for consumer, _ in p.consumers:
            c = convs[consumer].weight
            cost += c.shape[0] * c.shape[2] * c.shape[3]  # (out, in, kh, kw): one input slice
        out[path] = torch.full((p.channels,), float(cost))
    return out


# --------------------------------------------------------------------------- the cut


@dataclass
class ArchitectureReport:
    """What ``cut_architecture`` did. ``layers``: one row per gated layer (the lecture's
    table): ``layer``, ``original_width``, ``learned_width``, ``removed`` (channel indices),
    ``linear`` (d rounded to 1), ``d``, ``largest_removed_w`` / ``smallest_kept_w`` (how far
    the rounding was from exact) and ``merge`` (why a linear layer is not merged). ``exact``:
    the cut model computes what the gated one did (every removed w and every d exactly 0)."""

    layers: list[dict[str, Any]]
    params_before: int
    params_after: int
    fire_config: list[tuple[int, int, int]]
    stem_channels: int
    kept_back: dict[str, list[int]]
    exact: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def merge_reason(model: nn.Module, layer: str) -> str:
    """Why the linear layer ``layer`` (a producer name) is not merged into its neighbour in
    this SqueezeNet (see the module docstring)."""
    net = unwrap_model(model)
    producers = channel_producers(net)
    p = producers[layer]
    if layer == "features.0":
        after_act = 3 if p.bn is not None else 2  # conv, (BatchNorm), activation, then this
        if isinstance(net.features[after_act], nn.MaxPool2d):
            return "a max-pool follows the stem: max-pooling is not linear, nothing to merge into"
        return ("the stem feeds a Fire's squeeze: a kxk conv then a 1x1 conv compose exactly "
                "into one kxk conv (compose_conv_then_1x1), but a Fire has no form without its "
                "squeeze")
    if layer.endswith(".squeeze"):
        fire = net.get_submodule(layer.rsplit(".", 1)[0])
        cin, s = fire.squeeze.in_channels, fire.squeeze.out_channels
        e1, e3 = fire.expand1x1.out_channels, fire.expand3x3.out_channels
        _, bias = conv_bn_affine(fire.squeeze, p.bn)
        return (f"merging the squeeze into the expands would remove the bottleneck: "
                f"{cin * (e1 + 9 * e3):,} weights instead of {cin * s + s * (e1 + 9 * e3):,}, "
                f"and a Fire has no form without its squeeze; into expand1x1 it is exact "
                f"(compose_1x1_then_conv), into the zero-padded expand3x3 only if the "
                f"squeeze's output bias were 0 (max |bias| {float(bias.abs().max()):.3g})")
    return ("an expand's output is concatenated with the other branch's and read by the next "
            "layer through its concatenation (and a max-pool, which is not linear, where one "
            "follows): a SqueezeNet has no form for the merged layer")


@torch.no_grad()
def cut_architecture(model: nn.Module, threshold: float = 0.5, min_width: float = 0.0
                     ) -> tuple[nn.Module, ArchitectureReport]:
    """The ordinary SqueezeNet that the gated ``model`` learned (module docstring): gates
    rounded at ``threshold``, kept channels' w folded into their conv's BatchNorm (or weights),
    channels whose w rounds to 0 removed, linear layers reported. ``min_width``: each layer
    keeps at least its ``width_floor`` channels of largest w (their w folded like any kept
    one's), the floor the regulariser was trained with. The gated model is not changed; the
    result is in its train/eval mode."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    net = unwrap_model(model)
    gates = gate_modules(net)
    if not gates:
        raise ValueError("the model has no TsReLU gates: install_gates_ and train first")
    layer_of = {path: name for name, path in gateable_layers(net).items()}
    stray = [p for p in gates if p not in layer_of]
    if stray:
        raise ValueError(f"gates at {stray} do not follow a gateable conv")
    spec = model_spec(net)
    plain = create_model(spec["name"], **spec["kwargs"])
    state = {k: v for k, v in net.state_dict().items()
             if k.rsplit(".", 1)[-1] not in GATE_PARAMS}
    plain.load_state_dict(state, strict=True)
    plain.train(net.training)
    producers = channel_producers(plain)
    drop: dict[str, list[int]] = {}
    rows = []
    exact = True
    for path, gate in gates.items():
        name = layer_of[path]
        p = producers[name]
        w = gate.gate_w.detach().float().clamp(0.0, 1.0)
        d = float(gate.gate_d.detach().clamp(0.0, 1.0))
        keep = (w >= threshold) | floor_mask(w, min_width)
        w_kept = torch.where(keep, w, torch.zeros_like(w))
        # relu(w z) = w relu(z) for w >= 0: fold w into the affine layer right before the ReLU
        if p.bn is not None:
            p.bn.weight.mul_(w_kept)
            p.bn.bias.mul_(w_kept)
        else:
            p.conv.weight.mul_(w_kept.view(-1, 1, 1, 1))
            if p.conv.bias is not None:
                p.conv.bias.mul_(w_kept)
        removed = (~keep).nonzero().flatten().tolist()
        if removed:
            drop[name] = removed
        linear = d >= threshold
        largest_removed = float(w[~keep].max()) if removed else None
        exact &= (largest_removed in (None, 0.0)) and d == 0.0
        rows.append({"layer": name, "original_width": p.channels,
                     "learned_width": int(keep.sum()), "removed": removed, "linear": linear,
                     "d": d, "largest_removed_w": largest_removed,
                     "smallest_kept_w": float(w[keep].min()) if bool(keep.any()) else None,
                     "merge": merge_reason(plain, name) if linear else None})
    new, report = remove_channels(plain, drop)
    # a channel kept back (at least one per conv; the bypass layout) has w folded to 0: it
    # outputs 0, so the result is still what the rounded gates compute
    for row in rows:
        row["learned_width"] += len(report.kept_back.get(row["layer"], []))
    return new, ArchitectureReport(
        layers=rows, params_before=report.params_before, params_after=report.params_after,
        fire_config=report.fire_config, stem_channels=report.stem_channels,
        kept_back=report.kept_back, exact=bool(exact))


def round_gates_(model: nn.Module, threshold: float = 0.5) -> nn.Module:
    """Round every gate of ``model`` in place: w to 0 below ``threshold`` (kept channels keep
    their w, which folds exactly), d to 0 or 1. The model then computes what its cut
    (``cut_architecture``) computes, except in linear layers (d = 1), which the cut turns back
    into ReLUs. Returns the model."""
    for gate in gate_modules(model).values():
        with torch.no_grad():
            w = gate.gate_w.clamp_(0.0, 1.0)
            w.mul_((w >= threshold).to(w.dtype))
            gate.gate_d.copy_((gate.gate_d >= threshold).to(gate.gate_d.dtype))
    return model


def widths_table(report: ArchitectureReport | Mapping[str, Any]) -> str:
    """The lecture's table (layer, original width, learned width) as aligned text."""
    rows = report.layers if isinstance(report, ArchitectureReport) else report["layers"]
    width = max([len("layer")] + [len(r["layer"]) for r in rows])
    lines = [f"{'layer':<{width}}  original  learned  linear"]
    for r in rows:
        lines.append(f"{r['layer']:<{width}}  {r['original_width']:>8}  "
                     f"{r['learned_width']:>7}  {'yes' if r['linear'] else 'no':>6}")
    return "\n".join(lines)


__all__ = ["ArchitectureReport", "GATE_PARAMS", "channel_costs", "compose_1x1_then_conv",
           "compose_conv_then_1x1", "conv_bn_affine", "cut_architecture", "gate_modules",
           "gate_scales",
           "gateable_layers", "install_gates_", "install_gates_from_state_", "merge_reason",
           "round_gates_", "widths_table"]

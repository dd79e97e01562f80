"""Physical removal of dead channels from SqueezeNet models (structured pruning: Wen et al.
2016, "Learning Structured Sparsity in Deep Neural Networks", arXiv 1608.03665; SqueezeNet's
Fire module: Iandola et al. 2016, arXiv 1602.07360).

Group lasso (``regularizers.GroupLassoRegularizer``) drives whole filters to zero; zeroed
filters still cost bytes and time until they are cut out. A channel is a conv output channel of
the stem conv, a Fire ``squeeze``, ``expand1x1`` or ``expand3x3``. Removing it removes:

* its filter (and bias, and BatchNorm entries) from the producing conv;
* the matching input channel of every consumer: a squeeze channel feeds expand1x1 and expand3x3;
  the Fire output is the concatenation [expand1x1 | expand3x3], so expand3x3 channel j is input
  channel e1 + j of the next layer (the next Fire's squeeze or the classifier conv
  ``classifier.1``); the stem feeds the first Fire's squeeze.

A dead channel (filter L2 norm <= eps) still outputs a constant v = act(BN(bias)) per pixel.
If v is 0 (e.g. a negative bias under ReLU) removal is exact. Otherwise v is folded into its
consumers' biases (or BatchNorm running means) which is exact only for 1x1 consumers, so
``find_dead_channels`` lists a squeeze channel (which feeds the zero-padded expand3x3) only when
|v| <= eps. Equivalence holds in eval mode (BatchNorm running statistics).

Bypass: a Fire with a bypass (simple or complex) adds its input to its output, so its expand
channels and the channels of the layer feeding it are left alone (their squeeze channels can
still go). Where removal would make a non-bypass Fire of a ``bypass="simple"`` model have
equal input and output widths (the rebuilt model would then gain a bypass), one removed channel
is kept back. Every conv keeps at least one channel.

The result is a fresh ``create_model(name, **kwargs, fire_config=..., stem_channels=...)``
loaded with the sliced weights, so it saves and rebuilds through the normal checkpoint path.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.layers import Fire
from squeezelab.models import create_model, model_spec, unwrap_model
from squeezelab.models.squeezenet import SqueezeNet


@dataclass
class _Producer:
    """A conv whose output channels may be removed, with what follows it and who reads it."""

    name: str  # module path, e.g. "features.3.expand3x3"
    conv: nn.Conv2d
    bn: nn.Module | None  # BatchNorm2d or None
    act: nn.Module
    consumers: list[tuple[str, int]] = field(default_factory=list)  # (consumer conv, offset)
    locked: bool = False

    @property
    def channels(self) -> int:
        return self.conv.out_channels


@dataclass
class ChannelPruneReport:
    """What ``remove_channels`` did. ``removed``: layer -> removed channel indices (old
    numbering); ``kept_back``: dead channels kept to preserve the bypass layout or a minimum
    of one channel; ``locked``: layers whose channels were not touched (bypass)."""

    removed: dict[str, list[int]]
    kept_back: dict[str, list[int]]
    locked: list[str]
    params_before: int
    params_after: int
    fire_config: list[tuple[int, int, int]]
    stem_channels: int

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _graph(model: SqueezeNet) -> tuple[dict[str, _Producer], dict[str, nn.Conv2d], list]:
    """Producers in order, every conv by name, and the Fire modules with their names."""
    modules = dict(model.named_modules())
    feats = list(model.features.named_children())
    stem_conv = model.features[0]
    stem_bn = model.features[1] if isinstance(model.features[1], nn.BatchNorm2d) else None
    stem_act = model.features[2 if stem_bn is not None else 1]
    producers: dict[str, _Producer] = {
        "features.0": _Producer("features.0", stem_conv, stem_bn, stem_act)
    }
    fires = [(f"features.{i}", m) for i, m in feats if isinstance(m, Fire)]
    upstream = ["features.0"]  # producers whose concatenated outputs feed the next layer
    for fname, fire in fires:
        offset = 0
        for pname in upstream:
            producers[pname].consumers.append((f"{fname}.squeeze", offset))
            offset += producers[pname].channels
            if fire.bypass is not None:
                producers[pname].locked = True
        sq = _Producer(f"{fname}.squeeze", fire.squeeze, _bn(fire.squeeze_bn),
                       fire.squeeze_activation,
                       [(f"{fname}.expand1x1", 0), (f"{fname}.expand3x3", 0)])
        e1 = _Producer(f"{fname}.expand1x1", fire.expand1x1, _bn(fire.expand1x1_bn),
                       fire.expand1x1_activation, locked=fire.bypass is not None)
        e3 = _Producer(f"{fname}.expand3x3", fire.expand3x3, _bn(fire.expand3x3_bn),
                       fire.expand3x3_activation, locked=fire.bypass is not None)
        producers.update({p.name: p for p in (sq, e1, e3)})
        upstream = [e1.name, e3.name]
    offset = 0
    for pname in upstream:
        producers[pname].consumers.append(("classifier.1", offset))
        offset += producers[pname].channels
    convs = {n: m for n, m in modules.items() if isinstance(m, nn.Conv2d)}
    return producers, convs, fires


def _bn(m: nn.Module) -> nn.BatchNorm2d | None:
    return m if isinstance(m, nn.BatchNorm2d) else None


def _check_model(model: nn.Module) -> SqueezeNet:
    model = unwrap_model(model)
    if not isinstance(model, SqueezeNet):
        raise TypeError(f"channel pruning needs a SqueezeNet model, got {type(model).__name__}")
    kind = getattr(model, "expand3x3_kind", "standard")
    if kind != "standard":
        # the channel bookkeeping knows one conv per expand branch, not a stack of them
        raise ValueError(f"channel pruning needs SqueezeNet's standard 3x3 expand convs, got "
                         f"expand3x3={kind!r}")
    model_spec(model)  # raises ValueError when the model cannot be rebuilt from the registry
    return model


@torch.no_grad()
def _constant_output(p: _Producer) -> torch.Tensor:
    """Per channel, the output of a channel whose filter is all zero: act(BN(bias)), (C,)."""
    conv = p.conv
    y = conv.bias.detach().clone() if conv.bias is not None else conv.weight.new_zeros(p.channels)
    if p.bn is not None:
        bn = p.bn
        y = F.batch_norm(y.view(1, -1), bn.running_mean, bn.running_var, bn.weight, bn.bias,
                         training=False, eps=bn.eps).view(-1)
    return p.act(y.view(1, -1, 1, 1).clone()).view(-1)


def channel_producers(model: nn.Module) -> dict[str, _Producer]:
    """Every conv whose output channels this module can remove, in order: name -> its
    ``conv``, ``bn`` (or None), ``act`` (the activation module after it), ``consumers`` ((conv
    name, input-channel offset) pairs) and ``locked`` (a bypass keeps its channels)."""
    producers, _, _ = _graph(_check_model(model))
    return producers


def channel_norms(model: nn.Module) -> dict[str, torch.Tensor]:
    """L2 norm of each output channel's filter, (out,), for every removable conv in order."""
    producers, _, _ = _graph(_check_model(model))
    return {n: p.conv.weight.detach().flatten(1).norm(dim=1) for n, p in producers.items()}


def find_dead_channels(model: nn.Module, eps: float = 1e-8) -> dict[str, list[int]]:
    """Channels whose removal leaves the eval-mode output unchanged: filter L2 norm <= eps and
    a constant output that is 0 (|v| <= eps) or read only by 1x1 convs. Locked (bypass)
    layers are skipped. Layers with no dead channel are left out."""
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    net = _check_model(model)
    producers, convs, _ = _graph(net)
    out = {}
    for name, p in producers.items():
        if p.locked:
            continue
        dead = p.conv.weight.detach().flatten(1).norm(dim=1) <= eps  # (out, in*kh*kw) -> (out,)
        all_1x1 = all(tuple(convs[c].kernel_size) == (1, 1) for c, _ in p.consumers)
        if not all_1x1:
            dead &= _constant_output(p).abs() <= eps
        idx = dead.nonzero().flatten().tolist()
        if idx:
            out[name] = idx
    return out


CRITERIA = ("auto", "filter_norm", "bn_scale")


def channel_importance(model: nn.Module, by: str = "auto") -> dict[str, torch.Tensor]:
    """Per removable conv, one score per output channel (out,); the lowest go first.

    ``filter_norm``: the L2 norm of the channel's filter. ``bn_scale``: |gamma| of the
    BatchNorm after it (Network Slimming, Liu et al. 2017, arXiv 1708.06519): behind BatchNorm
    a filter's norm says nothing (BN rescales it), gamma sets how much the channel passes on.
    ``auto``: bn_scale where the conv has a BatchNorm, else filter_norm.
    """
    if by not in CRITERIA:
        raise ValueError(f"by must be one of {CRITERIA}, got {by!r}")
    producers, _, _ = _graph(_check_model(model))
    out = {}
    for name, p in producers.items():
        if by == "bn_scale" and p.bn is None:
            raise ValueError(f"by='bn_scale' needs a BatchNorm after every conv; {name} has none")
        if p.bn is not None and by != "filter_norm":
            out[name] = p.bn.weight.detach().abs()
        else:
            out[name] = p.conv.weight.detach().flatten(1).norm(dim=1)  # (out, in*kh*kw) -> (out,)
    return out


def smallest_channels(model: nn.Module, fraction: float, by: str = "auto"
                      ) -> dict[str, list[int]]:
    """The round(fraction * C) least important channels (``channel_importance(model, by)``) of
    every unlocked layer: structured magnitude pruning. Removing them changes the outputs, so
    fine-tune afterwards."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    net = _check_model(model)
    producers, _, _ = _graph(net)
    scores = channel_importance(net, by)
    out = {}
    for name, p in producers.items():
        k = int(round(fraction * p.channels))
        if p.locked or k == 0:
            continue
        order = torch.sort(scores[name], stable=True).indices  # ties: lower index removed first
        out[name] = sorted(order[:k].tolist())
    return out


def _fires_in_new_layout(fires, keep) -> list[tuple[str, int, int]]:
    """(fire name, in channels, out channels) after removal, for every built Fire."""
    rows = []
    width = len(keep["features.0"])
    for fname, _ in fires:
        out = len(keep[f"{fname}.expand1x1"]) + len(keep[f"{fname}.expand3x3"])
        rows.append((fname, width, out))
        width = out
    return rows


@torch.no_grad()
def remove_channels(
    model: nn.Module, channels: Mapping[str, Sequence[int]], eps: float = 1e-8
) -> tuple[nn.Module, ChannelPruneReport]:
    """Rebuild ``model`` without ``channels`` (layer -> old channel indices, as returned by
    ``find_dead_channels`` / ``smallest_channels``). Removed channels whose filters have L2
    norm <= eps have their constant output folded into their consumers. The input model is not
    changed; the new model is in the input's train/eval mode."""
    net = _check_model(model)
    producers, convs, fires = _graph(net)
    spec = model_spec(net)
    drop: dict[str, set[int]] = {}
    for name, idx in channels.items():
        if name not in producers:
            raise ValueError(f"{name!r} is not a removable conv of this SqueezeNet; expected one "
                             f"of {list(producers)[:4]}...")
        p = producers[name]
        idx = [int(i) for i in idx]
        bad = [i for i in idx if not 0 <= i < p.channels]
        if bad:
            raise ValueError(f"channels {bad[:5]} of {name!r} are outside 0..{p.channels - 1}")
        if p.locked and idx:
            raise ValueError(f"{name!r} feeds or belongs to a bypass Fire; its channels stay")
        drop[name] = set(idx)
    kept_back: dict[str, list[int]] = {}

    def keep_back(name: str, i: int) -> None:
        drop[name].discard(i)
        kept_back.setdefault(name, []).append(i)

    norms = {n: p.conv.weight.detach().flatten(1).norm(dim=1) for n, p in producers.items()}
    for name, d in drop.items():
        if len(d) == producers[name].channels:  # a conv keeps at least one channel
            keep_back(name, int(norms[name].argmax()))

    def keep_lists() -> dict[str, list[int]]:
        return {n: [i for i in range(p.channels) if i not in drop.get(n, ())]
                for n, p in producers.items()}

    # A simple-bypass model gives a Fire a bypass wherever in == out: keep that layout.
    if net.bypass_kind == "simple":
        for _ in range(sum(len(d) for d in drop.values()) + 1):
            keep = keep_lists()
            clash = next(((f, i, o) for (f, i, o), (_, fire) in
                          zip(_fires_in_new_layout(fires, keep), fires)
                          if fire.bypass is None and i == o), None)
            if clash is None:
                break
            fname = clash[0]
            candidates = [f"{fname}.expand3x3", f"{fname}.expand1x1"]
            prev = [pn for pn, p in producers.items()
                    if any(c == f"{fname}.squeeze" for c, _ in p.consumers)]
            for pname in candidates + prev:
                if drop.get(pname):
                    keep_back(pname, max(drop[pname]))
                    break
            else:  # pragma: no cover - a clash implies some width changed
                raise RuntimeError(f"cannot keep the bypass layout of {fname}")

    keep = keep_lists()
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    module_names = {m: n for n, m in net.named_modules()}
    bn_names = {n: module_names[p.bn] for n, p in producers.items() if p.bn is not None}

    # Fold the constant outputs of removed dead channels into the consumers (before slicing).
    for name, d in drop.items():
        if not d:
            continue
        p = producers[name]
        idx = torch.tensor(sorted(d))
        dead = idx[norms[name][idx] <= eps]
        if dead.numel() == 0:
            continue
        v = _constant_output(p)[dead]  # (n_dead,)
        for cname, offset in p.consumers:
            w = state[f"{cname}.weight"]  # (out, in, kh, kw)
            delta = (w[:, dead + offset].sum(dim=(2, 3)) * v).sum(dim=1)  # (out,)
            if f"{cname}.bias" in state:
                state[f"{cname}.bias"] += delta
            else:  # conv without bias is followed by BatchNorm: x + d normalises as mean - d
                state[f"{bn_names[cname]}.running_mean"] -= delta

    # Slice producers' outputs and consumers' inputs.
    def take_out(prefix: str, idx: torch.Tensor) -> None:
        for key in list(state):
            if key.startswith(prefix + ".") and key.rsplit(".", 1)[1] != "num_batches_tracked":
                state[key] = state[key].index_select(0, idx)

    in_index: dict[str, list[int]] = {}
    for name, p in producers.items():
        idx = torch.tensor(keep[name], dtype=torch.long)
        take_out(name, idx)
        if p.bn is not None:
            take_out(bn_names[name], idx)
        for cname, offset in p.consumers:
            in_index.setdefault(cname, []).extend(i + offset for i in keep[name])
    for cname, idx in in_index.items():
        key = f"{cname}.weight"
        state[key] = state[key].index_select(1, torch.tensor(idx, dtype=torch.long))

    # Rebuild from the registry with the new widths.
    fire_config = list(net.fire_config)
    for (fname, _), fire_index in zip(fires, net.fire_indices):
        fire_config[fire_index] = (len(keep[f"{fname}.squeeze"]), len(keep[f"{fname}.expand1x1"]),
                                   len(keep[f"{fname}.expand3x3"]))
    fire_config = [tuple(int(c) for c in f) for f in fire_config]
    stem_channels = len(keep["features.0"])
    kwargs = dict(spec["kwargs"], fire_config=[list(f) for f in fire_config],
                  stem_channels=stem_channels)
    new = create_model(spec["name"], **kwargs)
    new.load_state_dict(state, strict=True)
    new.train(net.training)
    report = ChannelPruneReport(
        removed={n: sorted(d) for n, d in drop.items() if d},
        kept_back={n: sorted(v) for n, v in kept_back.items()},
        locked=[n for n, p in producers.items() if p.locked],
        params_before=sum(t.numel() for t in net.parameters()),
        params_after=sum(t.numel() for t in new.parameters()),
        fire_config=fire_config,
        stem_channels=stem_channels,
    )
    return new, report


def remove_dead_channels(
    model: nn.Module, eps: float = 1e-8
) -> tuple[nn.Module, ChannelPruneReport]:
    """``remove_channels(model, find_dead_channels(model, eps), eps)``: a smaller SqueezeNet
    with the same eval-mode outputs (to float tolerance)."""
    return remove_channels(model, find_dead_channels(model, eps), eps)


__all__ = [
    "CRITERIA", "ChannelPruneReport", "channel_importance", "channel_norms", "channel_producers",
    "find_dead_channels", "remove_channels", "remove_dead_channels", "smallest_channels",
]

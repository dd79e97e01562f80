"""Masks and MaskHook: pruned weights stay exactly zero through SGD/Adam steps and resume."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from squeezelab.checkpoint import load_checkpoint, save_checkpoint
from squeezelab.compress.pruning.masks import MaskHook, Masks
from squeezelab.hooks import TrainState
from squeezelab.models import create_model


def tiny_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 5))


def half_masks(model: nn.Module) -> Masks:
    g = torch.Generator().manual_seed(1)
    return Masks({
        "0.weight": torch.rand(model[0].weight.shape, generator=g) > 0.5,
        "3.weight": torch.rand(model[3].weight.shape, generator=g) > 0.5,
    })


def run_steps(model, optimizer, hook, steps=6):
    """A manual loop calling the hook methods in the order train/loop.py documents."""
    state = TrainState(model=model, optimizer=optimizer, config=None, device=torch.device("cpu"))
    hook.on_train_start(state)
    hook.on_epoch_start(state)
    g = torch.Generator().manual_seed(2)
    for _ in range(steps):
        x = torch.randn(8, 3, 4, 4, generator=g)
        y = torch.randint(0, 5, (8,), generator=g)
        logits = model(x)
        loss = hook.loss(state, x, y, logits, nn.functional.cross_entropy(logits, y))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        hook.after_backward(state)
        for name, p in model.named_parameters():
            if name in hook.masks:
                assert (p.grad[~hook.masks[name]] == 0).all()
        optimizer.step()
        state.step += 1
        hook.after_step(state)
    metrics: dict = {}
    hook.on_epoch_end(state, metrics)
    return state, metrics


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-3),
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-3),
    lambda ps: torch.optim.Adam(ps, lr=0.05, weight_decay=1e-3),
    lambda ps: torch.optim.AdamW(ps, lr=0.05, amsgrad=True),
])
def test_masks_hold_through_optimizer_steps(make_opt):
    model = tiny_net()
    masks = half_masks(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_opt(model.parameters())
    hook = MaskHook(masks)
    _, metrics = run_steps(model, opt, hook)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert (params[name][~mask] == 0).all()
        assert (params[name][mask] != before[name][mask]).any()  # kept weights do train
        for value in opt.state[params[name]].values():
            if torch.is_tensor(value) and value.shape == mask.shape:
                assert (value[~mask] == 0).all()
    assert metrics["sparsity"] == pytest.approx(masks.sparsity())
    # Biases carry no mask and move freely.
    assert not torch.equal(params["0.bias"], before["0.bias"])


def test_apply_and_statistics_exact():
    w = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        w.weight.copy_(torch.arange(1.0, 9.0).view(2, 4))
    m = Masks({"weight": torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.uint8)})
    assert m["weight"].dtype == torch.bool
    m.apply_(w)
    assert w.weight.tolist() == [[1.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 8.0]]
    assert m.num_kept() == 3 and m.numel() == 8
    assert m.sparsity() == pytest.approx(5 / 8)
    assert m.layer_sparsity() == {"weight": pytest.approx(5 / 8)}
    assert Masks().sparsity() == 0.0
    recovered = Masks.from_model(w)
    assert torch.equal(recovered["weight"], m["weight"])


def test_bad_masks_rejected():
    with pytest.raises(ValueError, match="only 0 and 1"):
        Masks({"w": torch.tensor([0, 2])})
    with pytest.raises(TypeError, match="bool or 0/1 integers"):
        Masks({"w": torch.tensor([0.0, 1.0])})
    model = tiny_net()
    with pytest.raises(ValueError, match="names no parameter"):
        Masks({"conv.weight": torch.ones(3, dtype=torch.bool)}).apply_(model)
    with pytest.raises(ValueError, match=r"has shape \(3,\), but the parameter has"):
        Masks({"0.weight": torch.ones(3, dtype=torch.bool)}).apply_(model)


def test_set_masks_and_clear_mid_run():
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    hook = MaskHook()
    run_steps(model, opt, hook, steps=2)  # dense: nothing masked
    assert (model[0].weight != 0).all()
    masks = half_masks(model)
    hook.set_masks(masks)  # applied at once: weights and momentum zeroed
    assert (model[0].weight[~masks["0.weight"]] == 0).all()
    buf = opt.state[model[0].weight]["momentum_buffer"]
    assert (buf[~masks["0.weight"]] == 0).all()
    hook.clear()  # dense again: pruned weights may regrow from zero
    assert len(hook.masks) == 0
    run_steps(model, opt, hook, steps=2)
    assert (model[0].weight[~masks["0.weight"]] != 0).any()


def test_mask_state_round_trip_through_checkpoint(tmp_path):
    model = create_model("squeezenet_cifar", fire_config=[(2, 4, 4)] * 8, stem_channels=8)
    name = "features.4.squeeze.weight"
    shape = dict(model.named_parameters())[name].shape
    masks = Masks({name: torch.rand(shape, generator=torch.Generator().manual_seed(3)) > 0.3})
    hook = MaskHook(masks)
    masks.apply_(model)
    save_checkpoint(tmp_path / "ck", model, extra_tensors={"mask": hook.state_tensors()})
    ckpt = load_checkpoint(tmp_path / "ck")
    restored = MaskHook()
    restored.load_state_tensors(ckpt.group("mask"))
    assert list(restored.masks) == [name]
    assert torch.equal(restored.masks[name], masks[name])
    assert restored.masks.sparsity() == pytest.approx(masks.sparsity())

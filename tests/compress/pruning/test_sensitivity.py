"""Sensitivity analysis on a tiny model with a hand-checkable evaluate function."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from squeezelab.compress.pruning.sensitivity import (
    sensitivity_analysis,
    sensitivity_table,
    suggest_sparsities,
)


def tiny():
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(1.0, 17.0).view(4, 4))
        model[1].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]))
    return model


def surviving_mass(model: nn.Module) -> float:
    """Sum of |w| left over both layers: falls exactly as magnitude pruning removes weights."""
    return float(sum(p.abs().sum() for p in model.parameters()))


def test_sensitivity_exact_values_and_model_untouched(tmp_path):
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = []

    def evaluate(m):
        modes.append(m.training)
        return surviving_mass(m)

    result = sensitivity_analysis(model, evaluate, sparsities=(0.25, 0.5))
    dense = 136.0 + 36.0
    # layer 0 (16 weights 1..16): 25% prunes 1..4 (sum 10), 50% prunes 1..8 (sum 36)
    assert result["0.weight"] == {0.0: dense, 0.25: dense - 10, 0.5: dense - 36}
    # layer 1 (8 weights 1..8): 25% prunes 1, 2; 50% prunes 1..4
    assert result["1.weight"] == {0.0: dense, 0.25: dense - 3, 0.5: dense - 10}
    assert not any(modes)  # always evaluated in eval mode
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])

    table = sensitivity_table(result)
    lines = table.splitlines()
    assert lines[0].split() == ["layer", "0.00", "0.25", "0.50"]
    assert lines[2].split() == ["0.weight", "172.0000", "162.0000", "136.0000"]

    from squeezelab.plots import plot_sensitivity

    png = tmp_path / "sens.png"
    plot_sensitivity(result, png, metric_name="mass")
    data = png.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_suggest_sparsities_stops_at_first_drop():
    result = {
        "a": {0.0: 0.90, 0.3: 0.90, 0.5: 0.895, 0.7: 0.85, 0.9: 0.89},
        "b": {0.0: 0.90, 0.3: 0.80},
    }
    assert suggest_sparsities(result, max_drop=0.01) == {"a": 0.5, "b": 0.0}
    assert suggest_sparsities(result, max_drop=0.2) == {"a": 0.9, "b": 0.3}
    with pytest.raises(ValueError, match="max_drop must be >= 0, got -1"):
        suggest_sparsities(result, max_drop=-1)
    with pytest.raises(ValueError, match="no dense baseline"):
        suggest_sparsities({"c": {0.5: 1.0}}, max_drop=0.1)


def test_sensitivity_selected_layers_and_errors():
    model = tiny()
    result = sensitivity_analysis(model, surviving_mass, sparsities=(0.5,), layers=["1.weight"])
    assert list(result) == ["1.weight"]
    with pytest.raises(ValueError, match="not prunable weights"):
        sensitivity_analysis(model, surviving_mass, layers=["0.bias"])
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.0"):
        sensitivity_analysis(model, surviving_mass, sparsities=(0.5, 1.0))

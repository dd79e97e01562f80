"""The sensitivity study as a workflow: every figure scored under one protocol, a progress bar
over the evaluations, and a plot whose 26 SqueezeNet lines can be told apart."""
import json

import pytest
import torch
from model_configs import TINY

from squeezelab.models import create_model
from squeezelab.models.layer_roles import prunable_parameters
from squeezelab.plots import sensitivity_figure
from squeezelab.train.evaluate import EvalProtocol, evaluate_data
from squeezelab.workflows.sensitivity import run_sensitivity


def tiny_model():
    torch.manual_seed(0)
    return create_model("squeezenet_cifar", num_classes=10, **TINY)


def test_run_sensitivity_scores_under_the_protocol_with_a_progress_bar(tmp_path, cifar_small,
                                                                        capsys):
    model = tiny_model()
    test = cifar_small[1].subset(torch.arange(0, 300, 10))
    protocol = EvalProtocol(flip=True)
    result = run_sensitivity(model, test, tmp_path / "s", [0.5], max_drop=0.05,
                             protocol=protocol)
    dense = evaluate_data(model, test, protocol)["top1"]
    assert len(result.top1) == 26 and all(row[0.0] == dense for row in result.top1.values())
    # 1 dense + 26 layers x 1 sparsity evaluations, counted by the bar
    assert "27/27" in capsys.readouterr().err
    recorded = json.loads(result.json.read_text())
    assert recorded["protocol"] == {"precision": "fp32", "flip": True}
    assert recorded["images"] == 30 and recorded["suggested"] == result.suggested
    assert json.loads(result.suggested_json.read_text()) == result.suggested
    assert result.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"sparsities must be in \[0, 1\), got 1.0"):
        run_sensitivity(model, test, tmp_path / "t", [1.0], progress=False)


def test_sensitivity_plot_lines_are_distinguishable_and_labelled():
    params = prunable_parameters(tiny_model())
    result = {name: {0.0: 0.8, 0.5: 0.7 - 0.01 * i, 0.9: 0.3}
              for i, name in enumerate(params)}
    roles = {name: p.types[0] for name, p in params.items()}
    fig = sensitivity_figure(result, roles, "top-1 (fp32, no flip)")
    fig.canvas.draw()
    axes = fig.axes
    # small multiples: one panel per role (stem, squeeze, expand1x1, expand3x3, classifier)
    assert len(axes) == 5
    drawn = []
    for ax in axes:
        lines = ax.get_lines()
        styles = {(tuple(line.get_color()), line.get_linestyle(), line.get_marker())
                  for line in lines}
        assert len(styles) == len(lines)  # no two lines of a panel look alike
        legend = ax.get_legend()
        assert [t.get_text() for t in legend.get_texts()] == [line.get_label() for line in lines]
        # the legend sits outside the axes, to the right, never over the curves
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1
        drawn += [line.get_label() for line in lines]
    assert sorted(drawn) == sorted(n.removesuffix(".weight") for n in result)
    # colour follows depth on one continuous scale: the deepest squeeze is not the first's hue
    squeeze = next(ax for ax in axes if ax.get_title(loc="left").startswith("squeeze"))
    first, last = squeeze.get_lines()[0], squeeze.get_lines()[-1]
    assert first.get_color() != last.get_color()

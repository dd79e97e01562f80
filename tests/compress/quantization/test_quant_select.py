"""The layer selection shared by the quantizer configs: globs, exclusions, first/last, errors."""
import pytest
import torch.nn as nn

from squeezelab.compress.quantization.select import (
    LayerSelection,
    select_layers,
    set_module,
)
from squeezelab.compress.quantization.uniform import UniformQuantConfig


def net():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 3)),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def names(model, sel):
    return [n for n, _ in select_layers(model, sel)]


def test_default_globs_exclude_and_first_last():
    m = net()
    assert names(m, LayerSelection()) == ["0", "1.0", "1.2", "3"]
    assert names(m, LayerSelection(keep_first_last=True)) == ["1.0", "1.2"]
    assert names(m, LayerSelection(layers=["1.*"])) == ["1.0", "1.2"]
    assert names(m, LayerSelection(layers=["1.*", "3"], exclude=["1.2"])) == ["1.0", "3"]
    # first/last refer to the whole model, not to the matches
    assert names(m, LayerSelection(layers=["1.*", "3"], keep_first_last=True)) == ["1.0", "1.2"]


def test_selection_errors_name_the_input():
    m = net()
    with pytest.raises(ValueError, match="layer glob '2' matches no Conv2d/Linear module"):
        select_layers(m, LayerSelection(layers=["2"]))
    with pytest.raises(ValueError, match="leaves no Conv2d/Linear module of 4"):
        select_layers(m, LayerSelection(exclude=["*"]))
    with pytest.raises(ValueError, match="has no Conv2d/Linear module"):
        select_layers(nn.ReLU(), LayerSelection())
    with pytest.raises(ValueError, match="layers must be a list of glob strings"):
        LayerSelection(layers="1.*")
    with pytest.raises(ValueError, match="no submodule '5'"):
        set_module(m, "5", nn.Identity())


def test_dict_round_trip_and_unknown_keys():
    cfg = UniformQuantConfig(num_bits=4, layers=["features.*"], exclude=["features.0"])
    data = cfg.to_dict()
    assert data["layers"] == ["features.*"] and data["num_bits"] == 4
    assert UniformQuantConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match="UniformQuantConfig: unknown key 'bits'"):
        UniformQuantConfig.from_dict({"bits": 4})
    with pytest.raises(ValueError, match="expected a mapping of UniformQuantConfig keys, got list"):
        UniformQuantConfig.from_dict(["num_bits"])

"""Layer pruning as a workflow: every removable Fire scored without it on training images, the
least harmful dropped (greedily), fine-tuned, measured and saved."""
import pytest
import torch
from model_configs import QUIET_FP32, TINY

from squeezelab.compress.pruning.fire_removal import fire_modules, remove_fires
from squeezelab.config import ConfigError
from squeezelab.inference import load_model
from squeezelab.models import create_model
from squeezelab.train.evaluate import EvalProtocol, evaluate_data
from squeezelab.workflows.layer_pruning import LayerPruneConfig, fire_sensitivity, prune_fires


@pytest.fixture
def source(tiny_checkpoint):
    return tiny_checkpoint()


def test_fire_sensitivity_scores_each_removable_fire(data):
    torch.manual_seed(0)
    model = create_model("squeezenet_cifar", **TINY).eval()
    protocol = EvalProtocol()
    sens = fire_sensitivity(model, data[0], protocol)
    assert sens["top1"] == evaluate_data(model, data[0], protocol)["top1"]
    assert set(sens["fires"]) == {"features.4", "features.5", "features.8", "features.9",
                                  "features.10", "features.13"}
    for name, row in sens["fires"].items():
        smaller, _ = remove_fires(model, [name])
        assert row["top1"] == evaluate_data(smaller.eval(), data[0], protocol)["top1"]
        assert row["drop"] == pytest.approx(sens["top1"] - row["top1"])


def test_prune_fires_drops_the_least_harmful_then_fine_tunes_and_saves(tmp_path, source, data,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    logged = []
    cfg = LayerPruneConfig(num_fires=2, selection_images=60, retrain_epochs=1,
                           retrain_lr=2e-3, train=QUIET_FP32)
    result = prune_fires(source, tmp_path / "shallow", cfg, data, log=logged.append)
    assert len(result.steps) == 2
    for step in result.steps:  # each step removed its candidate with the smallest drop
        drops = {n: c["drop"] for n, c in step["candidates"].items()}
        assert drops[step["removed"]] == min(drops.values())
    assert len(fire_modules(result.model)) == 6
    assert sorted(result.model.spec["kwargs"]["skip_fires"]) == sorted(
        s["fire_index"] for s in result.steps)
    assert result.after["parameters"] < result.before["parameters"]
    assert result.after["macs"] < result.before["macs"]
    assert result.after["top1"] == evaluate_data(result.model, data[1], EvalProtocol())["top1"]
    assert (tmp_path / result.run_dir / "metrics.jsonl").is_file()
    loaded, meta = load_model(result.path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))
    assert meta["layer_prune"]["removed"] == [s["removed"] for s in result.steps]
    assert any(line.startswith("step 2: without ") for line in logged)


def test_layer_prune_config_and_errors(tmp_path, source, data):
    with pytest.raises(ConfigError, match="num_fires must be an integer >= 1"):
        LayerPruneConfig(num_fires=0)
    with pytest.raises(ConfigError, match=r"may not set \['epochs'\]"):
        LayerPruneConfig(train={"epochs": 3})
    assert LayerPruneConfig.from_dict(LayerPruneConfig(num_fires=2).to_dict()).num_fires == 2
    with pytest.raises(ValueError, match="no Fire of the model has equal input and output"):
        prune_fires(source, tmp_path / "x", LayerPruneConfig(num_fires=7, selection_images=20),
                    data)
    with pytest.raises(ValueError, match="chooses the Fires on training images"):
        prune_fires(source, tmp_path / "x", LayerPruneConfig(), (None, data[1]))

"""Architecture learning as a workflow: learn gated widths, cut, fine-tune, measure, save; the
learning run's gated checkpoints load too."""
import pytest
import torch
from model_configs import QUIET_FP32

from squeezelab.checkpoint import save_checkpoint
from squeezelab.compress.pruning.architecture import gate_modules
from squeezelab.config import ConfigError
from squeezelab.inference import load_model
from squeezelab.models import create_model
from squeezelab.train.evaluate import EvalProtocol, evaluate_data
from squeezelab.workflows.architecture_learning import (
    ArchitectureLearningConfig,
    learn_architecture,
)

TRAIN = {**QUIET_FP32, "lr": 2e-3}
# 12 stem channels feed a 16-wide first Fire: no bypass there, so the stem is gated too
TINY = {"fire_config": [[4, 8, 8], [4, 8, 8], [8, 16, 16], [8, 16, 16],
                        [8, 16, 16], [8, 16, 16], [8, 24, 24], [8, 24, 24]],
        "stem_channels": 12}


@pytest.fixture
def source(tiny_checkpoint):
    return tiny_checkpoint(TINY)


def test_learn_cut_fine_tune_measure_and_save(tmp_path, source, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logged = []
    # a strong count term and fast gates: widths fall within the two steps of the run
    cfg = ArchitectureLearningConfig(learn_epochs=1, finetune_epochs=1, width_count=1.0,
                                     gate_lr=0.6, train=TRAIN)
    result = learn_architecture(source, tmp_path / "learned", cfg, data, log=logged.append)
    rows = result.report.layers
    assert [r["layer"] for r in rows][0] == "features.0"
    assert any(r["learned_width"] < r["original_width"] for r in rows)
    assert result.after["parameters"] == result.report.params_after
    assert result.after["parameters"] < result.before["parameters"]
    assert result.after["macs"] < result.before["macs"]
    assert result.after["top1"] == evaluate_data(result.model, data[1], EvalProtocol())["top1"]
    assert result.learn_run == tmp_path.joinpath("runs", "learned-arch", "learn").relative_to(
        tmp_path)
    assert "layer                original  learned  linear" in "\n".join(logged)
    # the file holds the fine-tuned, ordinary model and the whole record
    loaded, meta = load_model(result.path)
    assert not gate_modules(loaded)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))
    record = meta["architecture_learning"]
    assert record["report"]["layers"][0]["original_width"] == 12
    assert record["cut"]["parameters"] == record["after"]["parameters"]
    # the learning run's checkpoint is the gated model, and it loads as one; the BatchNorm
    # scales before the gates did not train (freeze_scales), the other ones did
    gated, _ = load_model(tmp_path / result.learn_run)
    assert len(gate_modules(gated)) == len(rows)
    src, _ = load_model(source)
    assert torch.equal(gated.features[8].squeeze_bn.weight, src.features[8].squeeze_bn.weight)
    assert not torch.equal(gated.features[8].expand1x1_bn.weight,
                           src.features[8].expand1x1_bn.weight)


def test_config_checks_and_round_trip():
    with pytest.raises(ConfigError, match="cost must be one of"):
        ArchitectureLearningConfig(cost="flops")
    with pytest.raises(ConfigError, match=r"may not set \['epochs'\]"):
        ArchitectureLearningConfig(train={"epochs": 2})
    with pytest.raises(ConfigError, match=r"min_width must be a fraction"):
        ArchitectureLearningConfig(min_width=-0.1)
    assert ArchitectureLearningConfig().min_width == 0.25
    with pytest.raises(ConfigError, match=r"threshold must be in \(0, 1\)"):
        ArchitectureLearningConfig(threshold=1.0)
    cfg = ArchitectureLearningConfig(learn_lr=1e-3, train={"lr": 5e-3})
    assert cfg.run_config("learn", "squeezenet_cifar").lr == 1e-3
    assert cfg.run_config("finetune", "squeezenet_cifar").lr == 5e-3
    assert ArchitectureLearningConfig.from_dict(cfg.to_dict()) == cfg


def test_refuses_a_gated_or_masked_source(tmp_path, data):
    from squeezelab.compress.pruning.architecture import install_gates_

    torch.manual_seed(0)
    model = create_model("squeezenet_cifar", num_classes=10, **TINY)
    install_gates_(model)
    path = save_checkpoint(tmp_path / "gated", model, meta={})
    with pytest.raises(ValueError, match="has tri-state ReLU gates already"):
        learn_architecture(path, tmp_path / "x", ArchitectureLearningConfig(train=TRAIN), data)

"""Channel pruning as a library workflow: cut, fine-tune, measure and save in one call, with a
typed result whose figures say how top-1 was scored."""
import pytest
import torch
from model_configs import QUIET_FP32

from squeezelab.config import ConfigError
from squeezelab.inference import load_model
from squeezelab.train.evaluate import EvalProtocol, evaluate_data
from squeezelab.workflows.channel_pruning import (
    ChannelPruneConfig,
    ChannelPruneResult,
    prune_channels,
)


@pytest.fixture
def source(tiny_checkpoint):
    return tiny_checkpoint(config={"test_time_flip": True})


def test_prune_channels_cuts_fine_tunes_measures_and_saves(tmp_path, source, data,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    logged = []
    cfg = ChannelPruneConfig(fraction=0.25, retrain_epochs=1, retrain_lr=2e-3, train=QUIET_FP32)
    result = prune_channels(source, tmp_path / "slim", cfg, data, log=logged.append)
    assert isinstance(result, ChannelPruneResult)
    # the source records test-time flip: both figures are scored so, and say so
    flip = EvalProtocol("fp32", True)
    assert result.before["protocol"] == result.after["protocol"] == flip.to_dict()
    assert result.after["top1"] == evaluate_data(result.model, data[1], flip)["top1"]
    assert result.after["parameters"] < result.before["parameters"]
    assert result.after["macs"] < result.before["macs"]
    # the fine-tuning run: under the runs folder by default, announced before it starts
    assert result.run_dir == tmp_path.joinpath("runs", "slim-channels", "channels").relative_to(
        tmp_path)
    assert (tmp_path / result.run_dir / "metrics.jsonl").is_file()
    assert logged.index(f"fine-tuning run goes to {result.run_dir}") < logged.index(
        "fine-tuning 1 epoch(s)")
    # the file is the model measured
    loaded, meta = load_model(result.path)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))
    assert meta["channel_prune"] == result.to_dict()
    assert meta["channel_prune"]["config"]["fraction"] == 0.25


def test_prune_channels_without_test_data_records_no_top1(tmp_path, source):
    result = prune_channels(source, tmp_path / "cut", ChannelPruneConfig(fraction=0.5),
                            protocol=EvalProtocol(), work_dir=tmp_path / "w", log=lambda m: None)
    assert result.before["top1"] is None and result.after["top1"] is None
    assert result.run_dir is None and not (tmp_path / "w").exists()
    # MACs are still counted, at the input size the model records
    assert result.after["macs"] < result.before["macs"]


def test_prune_channels_bad_input(tmp_path, source, data):
    with pytest.raises(ConfigError, match=r"channel fraction must be in \[0, 1\) or None"):
        ChannelPruneConfig(fraction=1.0)
    with pytest.raises(ConfigError, match="score must be one of"):
        ChannelPruneConfig(fraction=0.2, score="l1")
    with pytest.raises(ConfigError, match=r"train section may not set \['epochs'\]"):
        ChannelPruneConfig(train={"epochs": 2})
    with pytest.raises(ValueError, match="fine-tuning 1 epoch\\(s\\) needs training data"):
        prune_channels(source, tmp_path / "x", ChannelPruneConfig(fraction=0.2,
                                                                 retrain_epochs=1),
                       (None, data[1]))


def test_fine_tuning_can_learn_from_the_model_before_the_cut(tmp_path, source, data,
                                                             monkeypatch):
    """``distill`` (prune --channels ... --distill dense): the fine-tuning run's loss is the
    distillation loss, its teacher the source model as it was before its channels were cut."""
    import squeezelab.train.distill as distill
    from squeezelab.checkpoint import load_checkpoint
    from squeezelab.workflows.deep_compression import load_compressible

    teachers, calls = [], []
    real_init, real_loss = distill.DistillHook.__init__, distill.DistillHook.loss

    def init(self, config, teacher=None):
        real_init(self, config, teacher)
        teachers.append(self.teacher)

    def loss(self, *args, **kw):
        calls.append(1)
        return real_loss(self, *args, **kw)

    monkeypatch.setattr(distill.DistillHook, "__init__", init)
    monkeypatch.setattr(distill.DistillHook, "loss", loss)
    src = load_compressible(source)
    dense_params = sum(p.numel() for p in src.model.parameters())
    cfg = ChannelPruneConfig(fraction=0.25, retrain_epochs=1, retrain_lr=2e-3, train=QUIET_FP32,
                             distill={"temperature": 2.0, "alpha": 0.5})
    result = prune_channels(src, tmp_path / "slim", cfg, data, work_dir=tmp_path / "w",
                            log=lambda m: None)
    (teacher,) = teachers
    assert sum(p.numel() for p in teacher.parameters()) == dense_params
    assert result.after["parameters"] < dense_params
    steps = len(data[0]) // QUIET_FP32.get("batch_size", 128) or 1
    assert len(calls) >= steps  # every step of the fine-tuning took the distillation loss
    hook = load_checkpoint(result.run_dir / "checkpoints" / "last").meta["hooks"]["distill"]
    assert (hook["teacher"], hook["temperature"], hook["alpha"]) == ("dense", 2.0, 0.5)
    assert result.to_dict()["config"]["distill"]["teacher"] == "dense"
    with pytest.raises(ConfigError, match="distill needs fine-tuning"):
        ChannelPruneConfig(fraction=0.25, distill={})

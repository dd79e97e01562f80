"""The weight average (TrainConfig.ema_decay): the exact recursion, the average scored and
kept in best.* and in the final model, the training weights in last.*, and an exact resume."""
import pytest
import torch
from hook_checks import assert_masked_run_stays_sparse, assert_resume_is_exact
from model_configs import TINY, small_run

from squeezelab.checkpoint import (
    CheckpointError,
    holds_separate_average,
    load_checkpoint,
    model_from_checkpoint,
)
from squeezelab.hooks import TrainState
from squeezelab.inference import load_model
from squeezelab.models import create_model
from squeezelab.train import ConfigError, TrainConfig, train
from squeezelab.train.evaluate import EvalProtocol, evaluate_data
from squeezelab.train.weight_average import WeightAverageHook


def config(tmp_path, **kw):
    return small_run(tmp_path, **{"schedule": "constant", "ema_decay": 0.9, **kw})



def test_the_average_follows_the_recursion_with_its_warm_up():
    model = create_model("squeezenet_cifar", **TINY)
    state = TrainState(model=model, optimizer=None, config=None, device=torch.device("cpu"))
    hook = WeightAverageHook(0.5)
    hook.on_train_start(state)
    w = model.features[0].weight
    expected = w.detach().clone()
    for n in range(1, 6):
        with torch.no_grad():
            w.add_(1.0)
        hook.after_step(state)
        d = min(0.5, (1 + n) / (10 + n))  # 0.18, 0.25, 0.31, 0.36, 0.4: then capped at 0.5
        expected = d * expected + (1 - d) * w.detach()
    torch.testing.assert_close(hook.average["features.0.weight"], expected)
    # evaluation swaps the average in and back out; the end of training keeps it
    hook.before_evaluate(state)
    assert torch.equal(w.detach(), hook.average["features.0.weight"])
    hook.after_evaluate(state)
    assert not torch.equal(w.detach(), hook.average["features.0.weight"])
    hook.on_train_end(state)
    assert torch.equal(w.detach(), hook.average["features.0.weight"])
    with pytest.raises(ValueError, match=r"ema_decay must be in \(0, 1\), got 1.0"):
        WeightAverageHook(1.0)
    with pytest.raises(ConfigError, match="ema_decay must be 0 .off. or in .0, 1., got 1.5"):
        TrainConfig(ema_decay=1.5)


def test_the_run_scores_and_keeps_the_average(tmp_path, cifar_tiny):
    result = train(config(tmp_path), data=cifar_tiny)
    run = result.run_dir
    best, _ = model_from_checkpoint(run / "checkpoints" / "best")
    last = load_checkpoint(run / "checkpoints" / "last")
    final = result.model.state_dict()
    # the final model and best.* hold the average (best is the last epoch's here, or earlier)
    average = last.group("hook.ema")
    assert average and all(torch.equal(final[k], average[k]) for k in average)
    # last.* holds the training weights, which differ from the average
    assert not torch.equal(last.model_state["features.0.weight"], final["features.0.weight"])
    # the recorded top-1 is the average's
    top1 = evaluate_data(result.model.eval(), cifar_tiny[1], EvalProtocol())["top1"]
    assert result.history[-1]["test_top1"] == pytest.approx(top1, abs=1e-9)
    if result.history[-1]["test_top1"] >= max(r["test_top1"] for r in result.history):
        assert all(torch.equal(best.state_dict()[k], final[k]) for k in final)


def test_the_average_loads_from_last_and_is_refused_where_there_is_none(tmp_path, cifar_tiny):
    """``load_model(..., average=True)``: last's average is the final model exactly; best's
    weights are the average already; a run without ema_decay has none to load."""
    result = train(config(tmp_path), data=cifar_tiny)
    last = result.run_dir / "checkpoints" / "last"
    final = result.model.state_dict()
    averaged, _ = load_model(last, average=True)
    assert all(torch.equal(averaged.state_dict()[k], final[k]) for k in final)
    saved, _ = load_model(last)
    assert not torch.equal(saved.state_dict()["features.0.weight"], final["features.0.weight"])
    assert holds_separate_average(load_checkpoint(last))
    assert not holds_separate_average(load_checkpoint(result.run_dir / "checkpoints" / "best"))

    plain = train(config(tmp_path, ema_decay=0.0, run_name="plain"), data=cifar_tiny)
    plain_last = plain.run_dir / "checkpoints" / "last"
    assert not holds_separate_average(load_checkpoint(plain_last))
    with pytest.raises(CheckpointError, match=r"last keeps no weight average: its run trained "
                       "without ema_decay"):
        load_model(plain_last, average=True)
    with pytest.raises(ValueError, match=r"model.sqz: only a training checkpoint keeps a weight "
                       r"average beside its weights; a .sqz file holds one set of weights"):
        load_model(tmp_path / "model.sqz", average=True)


def test_resume_continues_the_average_exactly(tmp_path, cifar_tiny):
    assert_resume_is_exact(config, tmp_path, cifar_tiny, "average")


def test_the_average_of_a_masked_run_stays_exactly_sparse(tmp_path, cifar_tiny):
    """The average runs after the masks at every step, so pruned weights average to exact 0."""
    assert_masked_run_stays_sparse(config, tmp_path, cifar_tiny)

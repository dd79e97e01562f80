"""Evaluation: per-image top-1 hits that agree with evaluate(), and the paired difference of two
models on the same images, checked against hand arithmetic."""
import math

import pytest
import torch
from model_configs import TINY

from squeezelab.data import BatchLoader
from squeezelab.models import create_model
from squeezelab.train import evaluate, paired_difference, top1_correct


def test_top1_correct_agrees_with_evaluate(cifar_small):
    torch.manual_seed(0)
    model = create_model("squeezenet_cifar", **TINY)
    test = cifar_small[1]
    loader = BatchLoader(test, 128, train=False, augment=None)  # 300 images: a ragged last batch
    loader.set_epoch(0)
    hits = top1_correct(model, loader)
    loader.set_epoch(0)
    assert hits.dtype == torch.bool and hits.shape == (300,)
    assert hits.double().mean().item() == pytest.approx(evaluate(model, loader, 10)["top1"],
                                                        abs=1e-12)
    assert model.training  # the mode it came in with


def test_paired_difference_by_hand():
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([True, False, True, True])
    result = paired_difference(b, a)
    # per image B - A: 0, -1, 1, 1; mean 0.25, sample variance 2.75 / 3
    assert result["difference"] == pytest.approx(0.25)
    assert result["image_se"] == pytest.approx(math.sqrt(2.75 / 3) / 2)
    assert (result["gained"], result["lost"], result["images"]) == ([2], [1], 4)


def test_paired_difference_over_runs_averages_each_image_first():
    a = torch.tensor([[True, True, False, False], [True, False, False, True]])
    b = torch.tensor([[True, False, True, True], [True, False, True, False]])
    result = paired_difference(b, a)
    # per run: 0, -1, 1, 1 and 0, 0, 1, -1; per image over runs: 0, -0.5, 1, 0
    assert result["difference"] == pytest.approx(0.125)
    assert result["image_se"] == pytest.approx(torch.tensor([0, -0.5, 1, 0]).std().item() / 2)
    assert (result["gained"], result["lost"]) == ([2, 1], [1, 1])
    # identical models differ by exactly nothing, with no image-sampling error
    assert paired_difference(a, a)["difference"] == 0 and paired_difference(a, a)["image_se"] == 0


def test_paired_difference_refuses_unpaired_input():
    with pytest.raises(ValueError, match=r"one shape, \(images,\) or \(runs, images\); got "
                                         r"\(3,\) and \(4,\)"):
        paired_difference(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least 2 images, got 1"):
        paired_difference(torch.ones(1, dtype=torch.bool), torch.ones(1, dtype=torch.bool))


def test_eval_protocol_labels_validates_and_round_trips():
    from squeezelab.config import ConfigError
    from squeezelab.train.evaluate import EvalProtocol, describe_protocol

    assert EvalProtocol().describe() == "fp32, no flip"
    assert EvalProtocol("bf16", True).describe() == "bf16, flip-averaged"
    assert EvalProtocol.from_dict(EvalProtocol("bf16", True).to_dict()) == EvalProtocol("bf16",
                                                                                         True)
    assert describe_protocol({"precision": "fp32", "flip": True}) == "fp32, flip-averaged"
    assert describe_protocol(None) is None
    with pytest.raises(ConfigError, match="evaluation precision must be one of .*got 'fp16'"):
        EvalProtocol("fp16")
    with pytest.raises(ConfigError, match="flip must be true or false, got 'yes'"):
        EvalProtocol(flip="yes")


def test_eval_protocol_for_a_model_follows_its_training_unless_told():
    from squeezelab.train.evaluate import EvalProtocol

    flipped = {"config": {"test_time_flip": True, "precision": "bf16"}}
    # fp32 unless asked: the run's autotuned precision is not what other commands score in
    assert EvalProtocol.for_model(flipped) == EvalProtocol("fp32", True)
    assert EvalProtocol.for_model(flipped, flip=False) == EvalProtocol("fp32", False)
    assert EvalProtocol.for_model({}) == EvalProtocol("fp32", False)
    assert EvalProtocol.for_model(None, precision="bf16") == EvalProtocol("bf16", False)


def test_evaluate_scores_under_the_protocol_and_records_it(cifar_small):
    from squeezelab.train.evaluate import EvalProtocol, evaluate_data

    torch.manual_seed(0)
    model = create_model("squeezenet_cifar", **TINY)
    test = cifar_small[1]
    loader = BatchLoader(test, 128, train=False, augment=None)
    for protocol in (EvalProtocol(), EvalProtocol(flip=True)):
        result = evaluate_data(model, test, protocol)
        assert result["protocol"] == protocol.to_dict()
        loader.set_epoch(0)
        assert result["top1"] == evaluate(model, loader, 10, test_time_flip=protocol.flip)["top1"]
        loader.set_epoch(0)
        hits = top1_correct(model, loader, protocol=protocol)
        assert hits.double().mean().item() == pytest.approx(result["top1"], abs=1e-12)
    # the flip reaches the forward: the logits (hence the loss) differ between the protocols
    assert evaluate_data(model, test, EvalProtocol(flip=True))["loss"] != pytest.approx(
        evaluate_data(model, test, EvalProtocol())["loss"])

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


def test_crop_protocols_label_validate_and_record_only_when_used():
    from squeezelab.config import ConfigError
    from squeezelab.train.evaluate import EvalProtocol

    ten = EvalProtocol(crops=10, crop_pad=4)
    assert ten.flip  # 10-crop includes the mirror images
    assert ten.describe() == "fp32, 10-crop (the image size, images padded by 4 px)"
    assert EvalProtocol(crops=144, crop_size=224).describe() == "fp32, 144-crop (224 px)"
    assert EvalProtocol(crop_size=224).describe() == "fp32, centre crop (224 px)"
    assert EvalProtocol.from_dict(ten.to_dict()) == ten
    assert ten.to_dict() == {"precision": "fp32", "flip": True, "crops": 10, "crop_size": None,
                             "crop_pad": 4, "translate": 0}
    # a single-image protocol records what it always recorded
    assert EvalProtocol().to_dict() == {"precision": "fp32", "flip": False}
    with pytest.raises(ConfigError, match=r"crops must be one of \(1, 10, 144\), got 5"):
        EvalProtocol(crops=5)
    with pytest.raises(ConfigError, match="crop_pad must be an integer >= 0"):
        EvalProtocol(crops=10, crop_pad=-1)
    with pytest.raises(ConfigError, match="crop_size must be a positive integer"):
        EvalProtocol(crops=10, crop_size=0)


class _Spy(torch.nn.Module):
    """Records the batches it sees; its logits are the per-channel means of its input."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return x.mean(dim=(2, 3))


def test_ten_crop_logits_are_the_mean_over_the_ten_crops():
    from squeezelab.data.crops import ten_crops
    from squeezelab.train.evaluate import EvalProtocol

    torch.manual_seed(0)
    images = torch.randn(4, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 0])
    spy = _Spy()
    protocol = EvalProtocol(crops=10, crop_size=6)
    result = evaluate(spy, [(images, labels)], 3, protocol=protocol)
    assert len(spy.seen) == 10
    crops = list(ten_crops(images, 6))
    for seen, crop in zip(spy.seen, crops):
        assert torch.equal(seen, crop)
    mean_logits = torch.stack([c.mean(dim=(2, 3)) for c in crops]).mean(dim=0)
    expected = (mean_logits.argmax(dim=1) == labels).double().mean().item()
    assert result["top1"] == pytest.approx(expected)
    assert result["loss"] == pytest.approx(torch.nn.functional.cross_entropy(
        mean_logits, labels).item(), rel=1e-6)
    assert result["protocol"] == protocol.to_dict()


def test_an_image_constant_in_space_scores_alike_under_every_crop_protocol():
    from squeezelab.train.evaluate import EvalProtocol

    # every crop of a constant image is the same image at the crop size, so a model whose
    # output does not depend on the size (global average pooling) gives the same logits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    images = torch.randn(6, 3, 1, 1).expand(6, 3, 40, 40).contiguous()
    labels = torch.randint(0, 5, (6,))
    one = top1_correct(model, [(images, labels)], protocol=EvalProtocol())
    for protocol in (EvalProtocol(crops=10, crop_size=32), EvalProtocol(crops=144,
                                                                        crop_size=32)):
        hits = top1_correct(model, [(images, labels)], protocol=protocol)
        assert torch.equal(hits, one)
        a = evaluate(model, [(images, labels)], 5, protocol=protocol)["loss"]
        assert a == pytest.approx(evaluate(model, [(images, labels)], 5)["loss"], rel=1e-5)


def test_crop_padding_is_black_in_pixel_space(cifar_small):
    from squeezelab.train.evaluate import EvalProtocol, black_pixel, evaluate_data

    test = cifar_small[1].subset(torch.arange(4))
    spy = _Spy()
    evaluate_data(spy, test, EvalProtocol(crops=10, crop_pad=4))
    top_left = spy.seen[0]
    black = black_pixel(test.mean, test.std)
    # the padded rows of the top-left crop are a black pixel once normalised
    assert torch.allclose(top_left[:, :, 0, 0], black.expand(4, 3))
    assert torch.allclose(black * torch.tensor(test.std) + torch.tensor(test.mean),
                          torch.zeros(3), atol=1e-6)


def test_translation_protocol_labels_validates_and_records_only_when_used():
    from squeezelab.config import ConfigError
    from squeezelab.train.evaluate import EvalProtocol

    shifted = EvalProtocol(flip=True, translate=2)
    assert shifted.describe() == "fp32, flip-averaged, translated +-2 px"
    assert shifted.to_dict() == {"precision": "fp32", "flip": True, "translate": 2}
    assert EvalProtocol.from_dict(shifted.to_dict()) == shifted
    assert "translate" not in EvalProtocol(flip=True).to_dict()
    trained = {"config": {"test_time_flip": True, "test_time_translate": 2}}
    assert EvalProtocol.for_model(trained) == shifted
    assert EvalProtocol.for_model(trained, translate=0) == EvalProtocol(flip=True)
    with pytest.raises(ConfigError, match=r"translate must be an integer number of pixels in "
                                          r"\[0, 4\], got 5"):
        EvalProtocol(translate=5)
    with pytest.raises(ConfigError, match="does not combine with crops"):
        EvalProtocol(crops=10, crop_pad=4, translate=1)


def test_translation_testing_averages_the_shifted_copies_with_their_weights():
    """Logits under translate 1 (with flip) are 1/2 of the image's and 1/4 of each shifted
    copy's (black borders), each summed with its mirror's: checked view by view."""
    from squeezelab.data.crops import translated_views
    from squeezelab.train.evaluate import EvalProtocol, _logits

    torch.manual_seed(0)
    model = create_model("squeezenet_cifar", **TINY).eval()
    images = torch.randn(3, 3, 32, 32)
    black = torch.tensor([-1.0, -2.0, -3.0])
    views = translated_views(images, 1, black)
    assert [w for w, _ in views] == [0.5, 0.25, 0.25]
    _, down_right = views[1]
    _, up_left = views[2]
    assert torch.equal(down_right[..., 1:, 1:], images[..., :-1, :-1])
    assert torch.equal(up_left[..., :-1, :-1], images[..., 1:, 1:])
    assert torch.equal(down_right[0, :, 0, 5], black) and torch.equal(up_left[0, :, 31, 5], black)
    with torch.no_grad():
        expected = sum(w * (model(v) + model(v.flip(3))) for w, v in views)
        got = _logits(model, images, torch.device("cpu"),
                      EvalProtocol(flip=True, translate=1), black)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="shift must be an integer >= 1"):
        translated_views(images, 0)

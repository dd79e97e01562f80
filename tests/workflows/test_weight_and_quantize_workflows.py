"""Weight pruning and post-training quantization as library workflows: one call scores before
and after under one protocol, writes a model file that loads back, and refuses what it
cannot do."""
import pytest
from model_configs import QUIET_FP32

from squeezelab.compress.format.checkpoints import load_compressible
from squeezelab.compress.pruning.magnitude import PruneConfig
from squeezelab.compress.quantization.registry import QuantizeOptions, quantizer_config
from squeezelab.inference import load_model
from squeezelab.train.evaluate import EvalProtocol, evaluate_data
from squeezelab.workflows.deep_compression import CompressConfig
from squeezelab.workflows.quantize_model import quantize_model, report_bytes
from squeezelab.workflows.weight_pruning import prune_weights


@pytest.fixture
def source(tiny_checkpoint):
    return tiny_checkpoint(config={"test_time_flip": True})


def test_prune_weights_retrains_scores_and_saves_the_masks(tmp_path, source, data,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = CompressConfig(prune=PruneConfig(sparsity=0.5), prune_rounds=2, retrain_epochs=1,
                         retrain_lr=1e-3, sharing=None, train=QUIET_FP32)
    logged = []
    result = prune_weights(source, tmp_path / "pruned", cfg, train=data[0], test=data[1],
                           log=logged.append)
    flip = EvalProtocol("fp32", True)  # as the source was trained
    assert [s["round"] for s in result.steps] == [1, 2]
    assert result.masks.sparsity() == pytest.approx(0.5, abs=0.01)
    assert result.record["protocol"] == flip.to_dict()
    assert result.before == result.record["top1_before"]
    loaded = load_compressible(result.path)
    assert loaded.masks.sparsity() == result.masks.sparsity()
    assert loaded.meta["prune"]["top1_after"] == result.after
    assert evaluate_data(loaded.model.eval(), data[1], flip)["top1"] == result.after
    assert any(line.startswith("before: top-1") for line in logged)
    # pruning to the same output again replaces its retraining runs instead of refusing
    again = prune_weights(source, tmp_path / "pruned", cfg, train=data[0], test=data[1],
                          log=logged.append)
    assert again.record["work_dir"] == result.record["work_dir"]
    assert any(line.startswith("replacing the earlier runs") for line in logged)


def test_prune_weights_without_images_or_a_prune_section(tmp_path, source, data):
    cfg = CompressConfig(prune=PruneConfig(sparsity=0.3), sharing=None, retrain_epochs=0)
    result = prune_weights(source, tmp_path / "p", cfg, log=lambda m: None)
    assert result.before is None and result.after is None
    assert result.record["work_dir"] is None
    with pytest.raises(ValueError, match="needs train and test images"):
        prune_weights(source, tmp_path / "p", CompressConfig(
            prune=PruneConfig(sparsity=0.3), sharing=None, retrain_epochs=1), test=data[1])
    with pytest.raises(ValueError, match="needs a CompressConfig with a prune section"):
        prune_weights(source, tmp_path / "p", CompressConfig(prune=None, sharing=None))


def test_quantize_model_writes_a_checkpoint_or_sqz_that_loads_back(tmp_path, source, data):
    config = quantizer_config("fixed", QuantizeOptions(bits=6))
    result = quantize_model(source, tmp_path / "q", config, "fixed", test=data[1],
                            log=lambda m: None)
    model, meta = load_model(result.path)
    flip = EvalProtocol("fp32", True)
    assert evaluate_data(model, data[1], flip)["top1"] == result.after
    assert meta["quantize"]["method"] == "fixed"
    assert result.record["checkpoint"] == str(source)
    kmeans = quantizer_config("kmeans", QuantizeOptions(bits=4))
    sqz = quantize_model(source, tmp_path / "q.sqz", kmeans, "kmeans", test=data[1],
                         log=lambda m: None)
    assert sqz.record["size"]["ratio_fp32"] > 1
    shared, _ = load_model(sqz.path)
    assert evaluate_data(shared, data[1], flip)["top1"] == sqz.after
    with pytest.raises(ValueError, match="holds a k-means weight-shared model"):
        quantize_model(source, tmp_path / "x.sqz", config, "fixed")
    with pytest.raises(ValueError, match="int8 calibrates its activation ranges"):
        quantize_model(source, tmp_path / "i8", quantizer_config("int8"), "int8")


def test_report_bytes_sums_bytes_or_bits_and_says_when_there_are_none():
    assert report_bytes({"a": {"size_bytes": 10, "fp32_bytes": 40},
                         "b": {"size_bits": 16, "fp32_bits": 128}}) == (12.0, 56.0)
    assert report_bytes({"layers": {"a": {"size_bytes": 1, "fp32_bytes": 4}}}) == (1.0, 4.0)
    assert report_bytes({"a": {"other": 1}}) == (None, None)
    assert report_bytes(None) == (None, None)

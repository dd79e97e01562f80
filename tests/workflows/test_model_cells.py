"""What the study kinds that start from a model share (``studies/model_cells.py``): the source
model scored once per process for the cells that start from it, and the check that a written
file gives back exactly the model it was written from."""
from __future__ import annotations

import pytest
import torch
from noise_data import noise_split

from squeezelab.checkpoint import save_checkpoint
from squeezelab.compress.format.checkpoints import load_compressible
from squeezelab.models import create_model
from squeezelab.train.evaluate import EvalProtocol
from squeezelab.workflows.studies import model_cells
from squeezelab.workflows.studies.model_cells import check_reproduces, source_score
from squeezelab.workflows.studies.registry import CellContext

TINY_ARGS = {"fire_config": [[4, 8, 8]] * 8, "stem_channels": 8}


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("squeezenet_cifar", num_classes=2, **TINY_ARGS).eval()


@pytest.fixture
def counted(monkeypatch):
    """How often a model was scored (model_cells.score, which source_score calls)."""
    calls = []
    real = model_cells.score

    def counting(model, test, protocol):
        calls.append(protocol.to_dict())
        return real(model, test, protocol)

    monkeypatch.setattr(model_cells, "score", counting)
    return calls


def test_the_source_is_scored_once_for_the_cells_that_share_it(tmp_path, counted):
    path = save_checkpoint(tmp_path / "source", tiny_model())
    test = noise_split(40, side=16)
    cache: dict = {}  # one process: its cells share the CellContext cache
    first, second = (source_score(path, load_compressible(path).model, test, EvalProtocol(),
                                  CellContext(name=f"cell{i}", run_dir=tmp_path / f"c{i}",
                                              cache=cache))
                     for i in range(2))
    assert len(counted) == 1 and first == second
    assert first["top1"] == model_cells.score(tiny_model(), test, EvalProtocol())["top1"]
    ctx = CellContext(name="cell", run_dir=tmp_path / "c", cache=cache)
    # another protocol, other test images, or a rewritten file: scored again
    flipped = source_score(path, tiny_model(), test, EvalProtocol(flip=True), ctx)
    assert len(counted) == 3 and counted[-1]["flip"] is True
    source_score(path, tiny_model(), noise_split(40, side=16), EvalProtocol(), ctx)
    assert len(counted) == 4
    save_checkpoint(tmp_path / "source", tiny_model(seed=1))
    rescored = source_score(path, load_compressible(path).model, test, EvalProtocol(), ctx)
    assert len(counted) == 5
    assert rescored == model_cells.score(tiny_model(seed=1), test, EvalProtocol())
    assert flipped["protocol"]["flip"] is True


def test_a_file_that_gives_other_logits_is_refused(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "model", model)
    test = noise_split(300, side=16)  # more than the images compared: only those run
    check_reproduces(model, load_compressible(path).model, test, EvalProtocol(), path)
    changed = load_compressible(path).model
    with torch.no_grad():
        changed.classifier[1].weight.view(-1)[0] += 1e-3  # one weight of conv10
    with pytest.raises(RuntimeError, match=r"model\.json: the model loaded back from the file "
                       r"gives other logits .* over 256 test images"):
        check_reproduces(model, changed, test, EvalProtocol(), path)

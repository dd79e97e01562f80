"""Fixtures of the .sqz tests: a tiny pruned + weight-shared model and its files, written with
each coder, and as format version 5 wrote them (``sqz_helpers.writing_version_5``)."""
import pytest
from sqz_helpers import context_shared_model, tiny_shared_model, writing_version_5

from squeezelab.compress.format.sqz import save_compressed


@pytest.fixture(scope="module")
def shared_model():
    return tiny_shared_model()


@pytest.fixture(scope="module")
def sqz_bytes(shared_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("sqz") / "tiny.sqz"
    save_compressed(shared_model, path, class_names=[f"c{i}" for i in range(10)],
                    meta={"top1": 0.5, "recipe": "test"}, gap_bits=3)
    return path.read_bytes()


@pytest.fixture(scope="module")
def ans_bytes(shared_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("sqz") / "ans.sqz"
    save_compressed(shared_model, path, gap_bits=3, coder="ans")
    return path.read_bytes()


@pytest.fixture(scope="module")
def ans_v5_bytes(shared_model, tmp_path_factory):
    """The same file as version 5 wrote it: its ANS streams by constriction (32-bit words)."""
    path = tmp_path_factory.mktemp("sqz") / "ans5.sqz"
    with writing_version_5():
        save_compressed(shared_model, path, gap_bits=3, coder="ans")
    return path.read_bytes()


@pytest.fixture(scope="module")
def context_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("sqz") / "ctx.sqz"
    save_compressed(context_shared_model(), path, coder="ans")
    return path.read_bytes()


@pytest.fixture(scope="module")
def context_v5_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("sqz") / "ctx5.sqz"
    with writing_version_5():
        save_compressed(context_shared_model(), path, coder="ans")
    return path.read_bytes()

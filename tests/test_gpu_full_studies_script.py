"""benchmarks/gpu_full_studies.sh, the one command a lent GPU machine runs: it unpacks the
carried CIFAR-10 archive where no copy is beside the checkout, runs the recipes as one pool,
copies each study's results JSON out, and refuses to start what its deadline leaves no time
for. Checked here at the smoke budget of a tiny recipe, on the CPU."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from study_fixtures import tiny_recipe, write

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_full_studies.sh"


def _archive(tmp_path, cifar_tree):
    """A tar.xz laid out as the carried one: cifar10-jpeg/{train,test}/<class>/*.jpg."""
    path = tmp_path / "c10.tar.xz"
    with tarfile.open(path, "w:xz") as tar:
        tar.add(cifar_tree, arcname="cifar10-jpeg")
    return path


def _run(tmp_path, **env):
    full = {**os.environ, "OUT": str(tmp_path / "out"), "WORK_DIR": str(tmp_path / "work"),
            "PYTHON": sys.executable, "CIFAR10_JPEG": str(tmp_path / "no-copy-here"), **env}
    return subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True,
                          timeout=600)


def test_it_unpacks_the_archive_runs_the_pool_and_copies_the_results(tmp_path, cifar_tree):
    recipe = write(tmp_path / "tiny.yaml", tiny_recipe(cifar_tree))
    done = _run(tmp_path, DATA_ARCHIVE=str(_archive(tmp_path, cifar_tree)),
                STUDY_RECIPES=str(recipe), STUDY_BUDGET="smoke", STUDY_JOBS="2",
                DEADLINE_S="300")
    assert done.returncode == 0, done.stdout + done.stderr
    unpacked = tmp_path / "work" / "data" / "cifar10-jpeg"
    assert sorted(p.name for p in (unpacked / "train").iterdir()) == \
        sorted(p.name for p in (cifar_tree / "train").iterdir())
    results = json.loads((tmp_path / "out" / "tiny_smoke.json").read_text())
    assert results["counts"]["done"] == 2 and results["budget"] == "smoke"
    assert "python" in (tmp_path / "out" / "machine.txt").read_text()
    assert "study exit status 0" in (tmp_path / "out" / "study.log").read_text()


def test_no_data_and_no_archive_is_refused_before_anything_runs(tmp_path):
    done = _run(tmp_path, DATA_ARCHIVE=str(tmp_path / "missing.tar.xz"))
    assert done.returncode == 2
    assert "no CIFAR-10 JPEGs at" in done.stderr and "missing.tar.xz" in done.stderr
    assert not (tmp_path / "out" / "study.log").exists()


def test_a_deadline_already_spent_runs_nothing(tmp_path, cifar_tree):
    done = _run(tmp_path, DATA_ARCHIVE=str(_archive(tmp_path, cifar_tree)), DEADLINE_S="0")
    assert done.returncode == 3
    assert "nothing run" in done.stderr
    assert not (tmp_path / "out" / "study.log").exists()


def test_cells_recorded_by_an_earlier_session_are_imported_not_run_again(tmp_path, cifar_tree):
    recipe = write(tmp_path / "tiny.yaml", tiny_recipe(cifar_tree))
    common = dict(DATA_ARCHIVE=str(_archive(tmp_path, cifar_tree)), STUDY_RECIPES=str(recipe),
                  STUDY_BUDGET="smoke", STUDY_JOBS="1", DEADLINE_S="300")
    first = _run(tmp_path, **common)
    assert first.returncode == 0, first.stdout + first.stderr
    # one cell of the first session's results kept, as if the deadline had cut the other
    earlier = json.loads((tmp_path / "out" / "tiny_smoke.json").read_text())
    earlier["cells"][1]["status"] = "pending"
    kept = tmp_path / "earlier.json"
    kept.write_text(json.dumps(earlier))
    fresh = {**common, "WORK_DIR": str(tmp_path / "work2"), "OUT": str(tmp_path / "out2")}
    done = _run(tmp_path, STUDY_IMPORT=str(kept), **fresh)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "out2" / "tiny_smoke.json").read_text())
    assert results["counts"]["done"] == 2
    relu, tanh = results["cells"]
    assert relu["imported_from"] == str(kept) and "imported_from" not in tanh
    assert relu["metrics"] == earlier["cells"][0]["metrics"]
    runs = tmp_path / "work2" / "studies" / "tiny" / "smoke" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == [tanh["name"]]  # only the missing one ran


def test_an_import_of_a_study_no_recipe_runs_is_refused(tmp_path, cifar_tree):
    recipe = write(tmp_path / "tiny.yaml", tiny_recipe(cifar_tree))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"study": "bypass", "budget": "smoke", "cells": []}))
    done = _run(tmp_path, DATA_ARCHIVE=str(_archive(tmp_path, cifar_tree)),
                STUDY_RECIPES=str(recipe), STUDY_BUDGET="smoke", STUDY_IMPORT=str(other))
    assert done.returncode == 2
    assert "holds study bypass, which none of the recipes run" in done.stderr

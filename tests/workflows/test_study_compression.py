"""The study cells that start from a trained model (workflows/studies/kinds: compress,
quantize, dsd, distill, sensitivity) and the mechanism that gives them one: a cell reference
(``source: {cell: dense}``) makes the referenced cell a prerequisite, listed and run first;
``--cell K`` of a cell whose source has not finished is refused, naming the cell to run; the
record says which checkpoint the cell started from and that cell's top-1; settings given per
kind (``per_kind``) reach only that kind; bad settings are named with the recipe and the cell.

Each kind's cells run for real on a tiny SqueezeNet and 100 real CIFAR-10 images, from one
train cell trained once for the module, and their records are checked against what the files
they wrote give when loaded back."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from model_configs import TINY

from squeezelab.checkpoint import checkpoint_paths
from squeezelab.cli import main
from squeezelab.config import ConfigBase
from squeezelab.inference import load_model
from squeezelab.models import create_model
from squeezelab.train.data import load_run_data
from squeezelab.train.evaluate import EvalProtocol
from squeezelab.workflows.deep_compression import evaluate_top1
from squeezelab.workflows.studies import (
    StudyError,
    cell_commands,
    import_results,
    plan_study,
    register_cell_kind,
    run_study,
)
from squeezelab.workflows.studies import registry as kind_registry
from squeezelab.workflows.studies.kinds.quantize import weight_layers


def quiet(*_):
    pass


def write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))  # axis order matters
    return path


TRAIN = {"model": "squeezenet_cifar", "model_args": dict(TINY), "batch_size": 50,
         "optimizer": "adamw", "lr": 0.003, "precision": "fp32", "channels_last": False}


def model_recipe(data) -> dict:
    """One train cell (``dense``) and cells of every kind that start from it; the dependent
    cells come first on the axis, so the plan has to move ``dense`` before them."""
    common = {"data": str(data), "limit_train": 100, "limit_test": 50, "subset_seed": 0}
    return {
        "study": "from_a_model",
        "title": "every kind of cell from one tiny trained model",
        "source": {"paper": "a test"},
        "kind": "quantize",
        "base": {"per_kind": {
            "train": {**common, **TRAIN, "epochs": 1},
            "quantize": {"source": {"cell": "dense"}},
            "compress": {"source": {"cell": {"cell": "dense"}},
                         "compress": {"prune": {"sparsity": 0.5}, "retrain_epochs": 1,
                                      "centroid_epochs": 1, "sharing": {"bits": 4}}},
            "sensitivity": {"source": {"cell": "dense"}, "sparsities": [0.5, 0.9]},
            "dsd": {"train": {**common, **TRAIN},
                    "dsd": {"epochs": "1-1-1", "plot_layer": "features.0.weight"}},
            "distill": {"teacher": {"cell": "dense"}, "train": {**TRAIN, "epochs": 1}},
        }},
        "axes": {"cell": [
            {"name": "int8", "method": "int8"},
            {"name": "dense", "kind": "train"},
            {"name": "kmeans4", "method": "kmeans", "config": {"bits": 4}},
            {"name": "binary", "method": "binary"},
            {"name": "lowrank", "method": "lowrank", "config": {"rank": 2, "energy": None},
             "fine_tune_epochs": 1},
            {"name": "qat", "method": "int8", "fine_tune_epochs": 1},
            {"name": "dc", "kind": "compress"},
            {"name": "sens", "kind": "sensitivity"},
            {"name": "dsd", "kind": "dsd"},
            {"name": "dsd_dense", "kind": "dsd", "method": "dense",
             "compare_with": {"cell": "dsd"}},
            {"name": "dsd_from", "kind": "dsd", "source": {"cell": "dense"},
             "dsd": {"epochs": "1-1"}, "train": {"lr": 0.001}},
            {"name": "kd", "kind": "distill", "temperature": 2},
            {"name": "labels", "kind": "distill", "method": "labels"},
            {"name": "fitnets", "kind": "distill", "method": "fitnets", "hint": "features.6",
             "guided": "features.6", "stage1_epochs": 1},
        ]},
        "seeds": [0],
        "budgets": {"smoke": {}, "cpu": {}, "full": {}},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar_tree, cache_dir):
    """The plan of ``model_recipe`` with its train cell run (once for the module); the
    data those cells score on; and the train cell's record."""
    with pytest.MonkeyPatch.context() as mp:  # the session's decode cache, not ~/.cache
        mp.setenv("SQUEEZELAB_CACHE", str(cache_dir))
        root = tmp_path_factory.mktemp("from_a_model")
        plan = plan_study(write(root / "recipe.yaml", model_recipe(cifar_tree)), "smoke",
                          out=root / "out")
        results = run_study(plan, cell="dense-s0", progress=False, log=quiet)
    dense = results["cells"][0]
    assert dense["name"] == "dense-s0" and dense["status"] == "done"
    _, meta = load_model(Path(dense["run_dir"]))
    test = load_run_data(meta["config"], train=False).test
    return plan, test, dense


def run(plan, *names):
    for name in names:
        results = run_study(plan, cell=name, progress=False, log=quiet)
    by_name = {c["name"]: c for c in results["cells"]}
    return [by_name[n] for n in names]


def scored(path, test) -> float:
    """Top-1 of the model file at ``path`` loaded back, fp32 (as the cells score)."""
    model, _ = load_model(path)
    return evaluate_top1(model, test, EvalProtocol())["top1"]


def check_source(record, dense, key="source"):
    """The record names the train cell's best checkpoint and its top-1."""
    source = record["sources"][key]
    assert source["cell"] == "dense-s0" and source["index"] == 1
    assert source["path"] == str(Path(dense["run_dir"]) / "checkpoints" / "best.json")
    assert source["top1"] == dense["metrics"]["best_test_top1"]


# --- the source mechanism ---------------------------------------------------------------------

def test_referenced_cells_come_first_and_resolve_to_their_run_folders(trained):
    plan, _, _ = trained
    names = [c.name for c in plan.cells]
    assert names[:3] == ["dense-s0", "int8-s0", "kmeans4-s0"]  # dense moved before its users
    assert [c.index for c in plan.cells] == list(range(1, len(names) + 1))
    assert names.index("dsd-s0") < names.index("dsd_dense-s0")
    by_name = {c.name: c for c in plan.cells}
    assert by_name["int8-s0"].references == {"source": "dense-s0"}
    assert by_name["int8-s0"].settings.source == str(plan.runs_dir / "dense-s0")
    # a mapping reference: the cell whose variants are these
    assert by_name["dc-s0"].references == {"source": "dense-s0"}
    assert by_name["kd-s0"].references == {"teacher": "dense-s0"}
    assert by_name["dsd_dense-s0"].references == {"compare_with": "dsd-s0"}
    # --list prints them in that order: run one after the other, every source comes first
    commands = cell_commands(plan)
    assert commands[0].endswith("--cell 1") and len(commands) == len(names)


def test_a_cell_whose_source_has_not_finished_is_refused_or_waits(tmp_path, cifar_tree):
    recipe = model_recipe(cifar_tree)
    recipe["axes"]["cell"] = recipe["axes"]["cell"][:3]
    plan = plan_study(write(tmp_path / "r.yaml", recipe), "smoke", out=tmp_path / "out")
    with pytest.raises(StudyError, match=r"cell 2 int8-s0 starts from another cell's model and "
                       r"cannot run yet: its source is cell 1 dense-s0, which is pending\. Run "
                       r"that cell first \(--cell 1\)"):
        run_study(plan, cell="int8-s0", progress=False, log=quiet)
    assert not plan.cell_file(plan.cells[1]).exists()
    # the CLI: one error line, status 2
    assert main(["study", str(tmp_path / "r.yaml"), "--budget", "smoke", "--out",
                 str(tmp_path / "out"), "--cell", "2"]) == 2
    # a whole run whose source cell is skipped (its data is missing) skips its users too,
    # with the reason, and tries them again next time
    recipe["base"]["per_kind"]["train"]["data"] = str(tmp_path / "nowhere")
    plan = plan_study(write(tmp_path / "r2.yaml", recipe), "smoke", out=tmp_path / "out2")
    results = run_study(plan, progress=False, log=quiet)
    dense, int8, kmeans = results["cells"]
    assert dense["status"] == "skipped" and "does not exist" in dense["reason"]
    assert int8["status"] == kmeans["status"] == "skipped"
    assert int8["reason"].startswith("waits for its source: its source is cell 1 dense-s0, "
                                     "which is skipped (the data folder")


def test_an_imported_source_cell_without_its_run_folder_makes_its_users_wait(trained,
                                                                             tmp_path):
    plan, _, _ = trained
    here = plan_study(plan.recipe, "smoke", out=tmp_path / "here")
    assert import_results(here, [plan.results_path], log=quiet) == 1  # dense-s0 only
    with pytest.raises(StudyError, match=r"its source is cell 1 dense-s0, imported from .* "
                       r"without its run folder: copy .*dense-s0 to .*here/runs/dense-s0"):
        run_study(here, cell="int8-s0", progress=False, log=quiet)


def test_a_changed_reference_is_a_changed_experiment(trained, tmp_path):
    plan, _, dense = trained
    (record,) = run(plan, "int8-s0")
    assert record["status"] == "done"
    check_source(record, dense)
    # the same plan again: done, skipped; a plan whose int8 reads another cell: refused
    run(plan, "int8-s0")
    recipe = yaml.safe_load(plan.recipe.read_text())
    recipe["axes"]["cell"].insert(0, {"name": "other", "kind": "train"})
    recipe["base"]["per_kind"]["quantize"]["source"] = {"cell": "other"}
    changed = plan_study(write(tmp_path / "changed.yaml", recipe), "smoke", out=plan.out_dir)
    with pytest.raises(StudyError, match=r"source: \{cell: 'dense-s0'\} != \{cell: "
                       r"'other-s0'\}"):
        run_study(changed, cell="int8-s0", progress=False, log=quiet)


@dataclass
class _Probe(ConfigBase):
    value: float = 0.0
    source: str | None = None
    seed: int = 0


def test_per_kind_settings_reach_their_kind_only(tmp_path, monkeypatch):
    monkeypatch.setattr(kind_registry, "_KINDS", dict(kind_registry._KINDS))
    seen = {}

    @register_cell_kind("probe", settings=_Probe,
                        prepare=lambda values, seed, run_dir, where: {**values, "seed": seed})
    def run_probe(settings, ctx):
        seen[ctx.name] = settings
        return {"metrics": {"test_top1": settings.value}}

    recipe = {"study": "kinds", "kind": "probe",
              "base": {"per_kind": {"probe": {"value": 0.25}}},
              "axes": {"a": [{"name": "user", "source": {"cell": {"a": "maker"}}},
                             {"name": "maker", "per_kind": {"probe": {"value": 0.5}}}]},
              "budgets": {"smoke": {"per_kind": {"probe": {"value": 0.75}}}, "cpu": {},
                          "full": {}}}
    plan = plan_study(write(tmp_path / "r.yaml", recipe), "cpu", out=tmp_path / "out")
    assert [c.name for c in plan.cells] == ["maker-s0", "user-s0"]
    assert [c.settings.value for c in plan.cells] == [0.5, 0.25]  # the axis over the base
    results = run_study(plan, log=quiet)
    assert seen["user-s0"].source == str(tmp_path / "out" / "runs" / "maker-s0")
    assert results["cells"][1]["sources"]["source"]["top1"] == 0.5
    # --set of one kind's settings (the CLI reads YAML flow values: per_kind={probe: ...})
    forced = plan_study(tmp_path / "r.yaml", "cpu", out=tmp_path / "out2",
                        overrides={"per_kind": {"probe": {"value": 0.125}, "train": {"lr": 1}}})
    assert [c.settings.value for c in forced.cells] == [0.125, 0.125]
    # a budget's value and an axis' for the same key: the grid would not say which
    with pytest.raises(StudyError, match="sets 'value' in both budgets: smoke and axis 'a'"):
        plan_study(tmp_path / "r.yaml", "smoke", out=tmp_path / "out")
    recipe["base"]["per_kind"]["trian"] = {"epochs": 1}
    with pytest.raises(StudyError, match=r"base: per_kind: 'trian' is not a kind of cell; "
                       r"expected one of .*train"):
        plan_study(write(tmp_path / "bad.yaml", recipe), "cpu", out=tmp_path / "out")


@pytest.mark.parametrize("ref,message", [
    ({"cell": "nothing"}, r"source: \{cell: \.\.\.\}: the plan has no cells matching the cell "
     r"'nothing' at seed 0 \(cells at that seed: a-s0, b-s0\)"),
    ({"cell": {"v": "c"}}, r"axis 'v' has no variant 'c'"),
    ({"cell": "a"}, r"source: \{cell: \.\.\.\} names the cell itself"),
    ({"cell": "b", "seeds": 1}, r"takes cell and seed, got \['seeds'\]"),
    ({"cell": "b", "seed": 3}, r"no cells matching the cell 'b' at seed 3"),
    ({"cell": 7}, r"cell must be a cell's name or a mapping of axis: variant, got 7"),
])
def test_a_bad_reference_is_named_with_the_recipe_and_the_cell(tmp_path, monkeypatch, ref,
                                                                message):
    monkeypatch.setattr(kind_registry, "_KINDS", dict(kind_registry._KINDS))
    register_cell_kind("probe", settings=_Probe)(lambda s, ctx: {})
    recipe = {"study": "refs", "kind": "probe",
              "axes": {"v": [{"name": "a", "source": ref}, {"name": "b"}]},
              "budgets": {"smoke": {}, "cpu": {}, "full": {}}}
    path = write(tmp_path / "r.yaml", recipe)
    with pytest.raises(StudyError, match=message) as info:
        plan_study(path, "cpu", out=tmp_path / "out")
    assert str(info.value).startswith(f"{path} cell 'a-s0': ")


def test_a_circle_of_references_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(kind_registry, "_KINDS", dict(kind_registry._KINDS))
    register_cell_kind("probe", settings=_Probe)(lambda s, ctx: {})
    recipe = {"study": "circle", "kind": "probe",
              "axes": {"v": [{"name": "a", "source": {"cell": "b"}},
                             {"name": "b", "source": {"cell": "a"}}]},
              "budgets": {"smoke": {}, "cpu": {}, "full": {}}}
    with pytest.raises(StudyError, match=r"the cell references form a circle: a-s0 -> b-s0 -> "
                       r"a-s0"):
        plan_study(write(tmp_path / "r.yaml", recipe), "cpu", out=tmp_path / "out")


@pytest.mark.parametrize("kind,settings,message", [
    ("compress", {"compress": {"prune": {"sparsity": 1.5}}}, "sparsity must be in [0, 1)"),
    ("compress", {"compress": {"train": {"seed": 1}}}, "compress: train: seed is set by the"),
    ("compress", {"compress": {"retrain_epoch": 1}}, "unknown key 'retrain_epoch'"),
    ("quantize", {"method": "int4"}, "method must be one of kmeans, int8"),
    ("quantize", {"method": "pq", "fine_tune_epochs": 1}, "method pq cannot be fine-tuned"),
    ("quantize", {"method": "kmeans", "config": {"bitz": 4}}, "unknown key 'bitz'"),
    ("quantize", {"method": "int8", "train": {"lr": 0.1}}, "train may not set lr"),
    ("dsd", {"source": "x", "dsd": {"epochs": "2-1-1"}}, "give dsd epochs as SPARSE-REDENSE"),
    ("dsd", {"method": "sparse"}, "method must be one of dsd, dense"),
    ("dsd", {"train": {"optimiser": "sgd"}}, "unknown key 'optimiser'"),
    ("distill", {"teacher": "t", "method": "kd", "hint": "layer2"},
     "method kd does not use hint"),
    ("distill", {"teacher": "t", "method": "fitnets", "guided": "features.6"},
     "method fitnets needs hint"),
    ("distill", {"teacher": "t", "temperature": -1}, "temperature must be > 0"),
    ("sensitivity", {"sparsities": [0.5, 1.5]}, "sparsities must be a non-empty list of"),
    ("sensitivity", {"seed": 3}, "'seed' is set by the study from seeds:"),
])
def test_bad_settings_are_named(tmp_path, kind, settings, message):
    values = {"source": "runs/x"} if kind in ("compress", "quantize", "sensitivity") else {}
    if kind == "quantize":
        values["method"] = "int8"
    recipe = {"study": "bad", "kind": kind, "base": {**values, **settings},
              "axes": {"v": [{"name": "a"}]}, "budgets": {"smoke": {}, "cpu": {}, "full": {}}}
    path = write(tmp_path / "bad.yaml", recipe)
    with pytest.raises(ValueError) as info:
        plan_study(path, "cpu", out=tmp_path / "out")
    assert str(info.value).startswith(f"{path} cell 'a-s0'") and message in str(info.value)


def test_a_ctrl_c_in_a_fine_tuning_run_leaves_the_cell_to_run_again(tmp_path, cifar_tree,
                                                                     monkeypatch):
    """The workflows go on after ``train()`` returns from a Ctrl-C; the cells do not record
    what a half-trained model scores, and the study stops to be resumed."""
    import squeezelab.train.loop as loop
    import squeezelab.workflows.studies.kinds.quantize as quantize_kind

    recipe = model_recipe(cifar_tree)
    recipe["axes"]["cell"] = [c for c in recipe["axes"]["cell"]
                              if c["name"] in ("dense", "dc", "lowrank")]
    plan = plan_study(write(tmp_path / "r.yaml", recipe), "smoke", out=tmp_path / "out")
    run_study(plan, cell="dense-s0", progress=False, log=quiet)
    real_train = loop.train

    def stopped(cfg, *args, run_dir=None, **kwargs):  # as a Ctrl-C after the first step
        result = real_train(cfg, *args, run_dir=run_dir, **kwargs)
        (Path(run_dir) / "summary.json").unlink()
        result.interrupted = True
        return result

    monkeypatch.setattr(loop, "train", stopped)  # compress imports it when it trains
    monkeypatch.setattr(quantize_kind, "train", stopped)
    lines = []
    for name in ("dc-s0", "lowrank-s0"):
        with pytest.raises(KeyboardInterrupt):
            run_study(plan, cell=name, progress=False, log=lines.append)
        assert not (plan.cells_dir / f"{name}.json").exists()
        assert lines[-1] == f"cell {[c.name for c in plan.cells].index(name) + 1}/3 {name}: " \
            "interrupted; run the same command again to resume it"
    monkeypatch.setattr(loop, "train", real_train)
    monkeypatch.setattr(quantize_kind, "train", real_train)
    results = run_study(plan, progress=False, log=quiet)  # the same command: done now
    assert results["counts"]["done"] == 3


# --- each kind, for real ----------------------------------------------------------------------

def test_compress_cell_records_the_file_its_ratios_and_the_top1_loaded_back(trained):
    plan, test, dense = trained
    (cell,) = run(plan, "dc-s0")
    assert cell["status"] == "done" and cell["kind"] == "compress"
    check_source(cell, dense)
    sqz = Path(cell["file"])
    size = cell["compression"]
    assert sqz.suffix == ".sqz" and size["file_bytes"] == sqz.stat().st_size == cell["file_bytes"]
    source_st = checkpoint_paths(Path(dense["run_dir"]) / "checkpoints" / "best")[1]
    assert size["source_file_bytes"] == source_st.stat().st_size
    assert size["ratio_source_file"] == pytest.approx(source_st.stat().st_size / sqz.stat().st_size)
    assert size["bits_per_parameter"] == pytest.approx(8 * sqz.stat().st_size / dense["parameters"])
    assert size["ratio_fp32"] == pytest.approx(4 * dense["parameters"] / sqz.stat().st_size)
    m = cell["metrics"]
    assert m["test_top1"] == scored(sqz, test)  # the file as loaded back
    assert m["source_top1"] == scored(Path(dense["run_dir"]), test)  # the dense model
    assert m["sparsity"] == pytest.approx(0.5, abs=0.02) == size["sparsity"]
    assert set(m["steps_top1"]) == {"prune_1", "share", "centroids"}
    assert cell["compress_config"]["sharing"]["bits"] == {"conv": 4, "linear": 4}
    # the fine-tuning ran on the source's images, with the cell's seed
    assert cell["train_images"] == 100 and cell["test_images"] == 50


def test_quantize_cells_record_bits_per_weight_and_the_file_they_wrote(trained):
    plan, test, dense = trained
    cells = run(plan, "int8-s0", "kmeans4-s0", "binary-s0", "lowrank-s0")
    layers = weight_layers(create_model("squeezenet_cifar", num_classes=10, **TINY))
    n = sum(w for w, _ in layers.values())
    model = create_model("squeezenet_cifar", num_classes=10, **TINY)
    out_channels = {name: model.get_submodule(name).weight.shape[0] for name in layers}
    first, last = list(layers)[0], list(layers)[-1]
    rank2 = {name: 2 * (w // out_channels[name] + out_channels[name]) for name, (w, _) in
             layers.items()}
    expected = {
        # int8 per channel: 8 bits a weight, a 32-bit scale and zero point per channel
        "int8-s0": sum(8 * w + 64 * out_channels[m] for m, (w, _) in layers.items()) / n,
        # k-means 4 bits: an index a weight and a codebook of 16 fp32 values per layer
        "kmeans4-s0": sum(4 * w + 32 * 16 for w, _ in layers.values()) / n,
        # BinaryConnect: 1 bit a weight; the first and last layers stay fp32
        "binary-s0": sum(32 * w if m in (first, last) else w
                         for m, (w, _) in layers.items()) / n,
        # rank 2 factors in 32 bits where they are smaller than the layer
        "lowrank-s0": sum(32 * min(rank2[m], w) for m, (w, _) in layers.items()) / n,
    }
    source_top1 = scored(Path(dense["run_dir"]), test)
    for cell in cells:
        assert cell["status"] == "done", cell.get("reason")
        check_source(cell, dense)
        m = cell["metrics"]
        assert m["bits_per_weight"] == pytest.approx(expected[cell["name"]]), cell["name"]
        assert cell["compression"]["num_weights"] == n
        path = Path(cell["file"])
        on_disk = path.stat().st_size if path.suffix == ".sqz" else \
            checkpoint_paths(path)[1].stat().st_size
        assert cell["file_bytes"] == cell["compression"]["file_bytes"] == on_disk
        assert m["test_top1"] == scored(path, test), cell["name"]  # the file loaded back
        assert m["source_top1"] == source_top1
    by_name = {c["name"]: c for c in cells}
    assert Path(by_name["kmeans4-s0"]["file"]).suffix == ".sqz"
    assert by_name["lowrank-s0"]["fine_tune_dir"] is not None


def test_quantization_aware_int8_fine_tunes_then_writes_the_integer_model(trained):
    plan, test, dense = trained
    (cell,) = run(plan, "qat-s0")
    assert cell["status"] == "done" and cell["metrics"]["fine_tune_epochs"] == 1
    tuned = Path(cell["fine_tune_dir"])
    assert (tuned / "summary.json").is_file()  # an ordinary train() run
    _, meta = load_model(Path(cell["file"]))
    assert meta["quantizer"]["config_type"] == "UniformQuantConfig"
    assert cell["metrics"]["test_top1"] == scored(Path(cell["file"]), test)


def test_dsd_cells_record_the_phases_their_histograms_and_the_comparison(trained):
    plan, _, dense = trained
    dsd, baseline, continued = run(plan, "dsd-s0", "dsd_dense-s0", "dsd_from-s0")
    for cell in (dsd, baseline, continued):
        assert cell["status"] == "done"
        assert Path(cell["histograms"]["png"]).is_file()
        assert cell["histograms"]["layer"] == "features.0.weight"
    assert [h["phase"] for h in dsd["histograms"]["phases"]] == ["dense", "sparse", "redense"]
    # the counts are in the record (the report draws them without the run folder)
    assert all(sum(h["counts"]) == h["numel"] for h in dsd["histograms"]["phases"])
    assert dsd["histograms"]["phases"][1]["zeros"] > 0
    assert dsd["metrics"]["epochs"] == 3 and set(dsd["metrics"]["phase_top1"]) == {
        "dense", "sparse", "redense"}
    sparse = [r for r in dsd["curves"] if r["phase"] == "sparse"]
    assert sparse[0]["sparsity"] == pytest.approx(0.4, abs=0.01)
    # the dense comparison: the same epochs, nothing pruned, histograms at the same epochs
    assert baseline["metrics"]["sparsity"] == 0.0
    assert all(r["sparsity"] == 0.0 for r in baseline["curves"])
    assert [h["epoch"] for h in baseline["histograms"]["phases"]] == [1, 2, 3]
    assert Path(baseline["histograms"]["compare_png"]).is_file()
    assert baseline["sources"]["compare_with"]["cell"] == "dsd-s0"
    # from the source: no dense phase, the source recorded
    check_source(continued, dense)
    assert continued["metrics"]["epochs"] == 2 and "dense" not in continued["metrics"][
        "phase_top1"]
    assert continued["config"]["source"] == dense["run_dir"]


def test_distill_cells_train_students_beside_the_teacher(trained):
    plan, test, dense = trained
    kd, labels, fitnets = run(plan, "kd-s0", "labels-s0", "fitnets-s0")
    teacher_top1 = scored(Path(dense["run_dir"]), test)
    for cell in (kd, labels, fitnets):
        assert cell["status"] == "done" and cell["kind"] == "distill"
        check_source(cell, dense, "teacher")
        assert cell["metrics"]["teacher_top1"] == teacher_top1
        assert 0.0 <= cell["metrics"]["test_top1"] <= 1.0 and cell["metrics"]["epochs"] == 1
        # the student learned from the teacher's images
        assert cell["train_images"] == 100 and cell["test_images"] == 50
    assert kd["distill"] == {"method": "kd", "temperature": 2, "alpha": 0.9}
    assert labels["distill"] == {"method": "labels"}
    assert fitnets["distill"]["temperature"] == 3.0 and fitnets["stage1"]["epochs"] == 1
    assert Path(fitnets["stage1"]["run_dir"], "summary.json").is_file()


def test_sensitivity_cell_records_every_layer_at_every_sparsity(trained):
    plan, test, dense = trained
    (cell,) = run(plan, "sens-s0")
    assert cell["status"] == "done"
    check_source(cell, dense)
    layers = weight_layers(create_model("squeezenet_cifar", num_classes=10, **TINY))
    assert len(cell["rows"]) == 2 * len(layers) and cell["metrics"]["layers"] == len(layers)
    assert {r["sparsity"] for r in cell["rows"]} == {0.5, 0.9}
    dense_top1 = scored(Path(dense["run_dir"]), test)
    assert cell["metrics"]["test_top1"] == dense_top1
    assert all(r["drop"] == pytest.approx(dense_top1 - r["top1"]) for r in cell["rows"])
    assert set(cell["metrics"]["mean_top1"]) == {"s50", "s90"}
    assert cell["metrics"]["mean_top1"]["s90"] == pytest.approx(
        sum(r["top1"] for r in cell["rows"] if r["sparsity"] == 0.9) / len(layers))
    assert Path(cell["png"]).is_file() and Path(cell["json"]).is_file()
    assert set(cell["suggested"]) == {f"{m}.weight" for m in layers}
    assert not math.isnan(cell["metrics"]["mean_suggested_sparsity"])

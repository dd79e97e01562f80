"""The study engine (squeezelab/workflows/studies): recipes and their errors, expansion into
cells, runs that write one record per cell and a merged results JSON, resuming (finished cells
skipped, an interrupted cell continued exactly), data that is missing, failed cells, a kind
added by one registration, and the benchmark that prints a study as the README's table."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark
from cifar_fixtures import write_cifar_archive
from model_configs import TINY
from study_fixtures import EchoSettings, quiet, tiny_recipe, write

import squeezelab.workflows.studies.kinds.train as train_kind
from squeezelab.checkpoint import load_checkpoint
from squeezelab.data.cifar import CIFAR_SPECS, file_md5
from squeezelab.hooks import TrainHook
from squeezelab.models import create_model
from squeezelab.train import TrainConfig, TrainingDiverged
from squeezelab.workflows.studies import (
    StudyConfig,
    StudyError,
    expand_study,
    import_results,
    load_study,
    merge_study,
    plan_study,
    register_cell_kind,
    run_study,
)
from squeezelab.workflows.studies import registry as kind_registry

TABLE = load_benchmark("optimizer_study")
ROOT = Path(__file__).resolve().parents[2]


# --- recipes and expansion -----------------------------------------------------------------

def test_expansion_orders_names_and_merges_the_layers(tmp_path):
    study = StudyConfig.from_dict({
        "study": "grid",
        "base": {"lr": 0.1, "model_args": {"dropout": 0.2, "activation": "relu"}},
        "axes": {
            "opt": [{"name": "sgd", "optimizer": "sgd"},
                    {"name": "sgdr", "optimizer": "sgd", "schedule": "cosine_restarts",
                     "skip_axes": ["sched"]}],
            "sched": [{"name": "const", "schedule": "constant"},
                      {"name": "cos", "schedule": "cosine", "model_args": {"activation": "tanh"}}],
        },
        "seeds": [3, 1],
        "budgets": {"smoke": {"epochs": 1, "seeds": [7]}, "cpu": {"epochs": 2}, "full": {}},
        "published": {"metric": "top5", "dataset": "ImageNet",
                      "values": [{"where": {"opt": "sgd"}, "percent": 80.0},
                                 {"where": {"opt": "sgd", "sched": "cos"}, "percent": 81.0,
                                  "metric": "top1"}]},
    }, source="grid.yaml")
    cells = expand_study(study, "cpu", run_root=tmp_path / "runs")
    # seeds outermost; the SGDR cell appears once per seed although the scheduler axis has two
    # variants; names join the variants and the seed
    assert [c.name for c in cells] == ["sgd-const-s3", "sgd-cos-s3", "sgdr-s3",
                                       "sgd-const-s1", "sgd-cos-s1", "sgdr-s1"]
    assert [c.index for c in cells] == [1, 2, 3, 4, 5, 6]
    assert cells[2].variants == {"opt": "sgdr", "sched": None}
    cos = cells[1].settings
    assert (cos.epochs, cos.lr, cos.schedule, cos.seed) == (2, 0.1, "cosine", 3)
    # model_args merge key by key: the variant's activation over the base's, dropout kept
    assert cos.model_args == {"dropout": 0.2, "activation": "tanh"}
    assert cos.out_dir == str(tmp_path / "runs") and cos.run_name == "sgd-cos-s3"
    assert cells[2].settings.schedule == "cosine_restarts"
    # published values go to the cells they name, with the block's defaults filled in
    assert [p["percent"] for p in cells[1].published] == [80.0, 81.0]
    assert cells[1].published[1]["metric"] == "top1"
    assert cells[0].published[0]["dataset"] == "ImageNet" and cells[2].published == []
    # a budget's seeds, then --seeds, win over the study's; --set over everything
    assert {c.seed for c in expand_study(study, "smoke", run_root=tmp_path)} == {7}
    assert [c.name for c in expand_study(study, "smoke", run_root=tmp_path, seeds=[5])][0] \
        == "sgd-const-s5"
    forced = expand_study(study, "cpu", run_root=tmp_path, overrides={"schedule": "linear"})
    assert {c.settings.schedule for c in forced} == {"linear"}


def test_a_variants_own_budget_goes_over_the_studys_budget_and_its_own_values(tmp_path):
    """A slow learner may need more epochs than the rest of the grid at one budget: its own
    ``budgets`` go over the study's budget (and over its own values) at that budget only."""
    recipe = tiny_recipe(tmp_path)
    recipe["axes"]["act"][1].update(lr=0.001, budgets={"cpu": {"epochs": 9, "lr": 0.002},
                                                       "full": {"warmup_epochs": 1}})
    study = StudyConfig.from_dict(recipe, source="r.yaml")
    cpu = {c.name: c.settings for c in expand_study(study, "cpu", run_root=tmp_path)}
    assert (cpu["relu-s0"].epochs, cpu["relu-s0"].lr) == (3, 0.003)
    assert (cpu["tanh-s0"].epochs, cpu["tanh-s0"].lr) == (9, 0.002)
    full = {c.name: c.settings for c in expand_study(study, "full", run_root=tmp_path)}
    assert (full["tanh-s0"].epochs, full["tanh-s0"].lr, full["tanh-s0"].warmup_epochs) == \
        (4, 0.001, 1)
    smoke = expand_study(study, "smoke", run_root=tmp_path, overrides={"epochs": 1})
    assert {c.settings.epochs for c in smoke} == {1}


@pytest.mark.parametrize("change,message", [
    (lambda r: r["axes"]["act"][0].update(budgets={"gpu": {}}),
     "variant 'relu': budgets: unknown budget(s) ['gpu']"),
    (lambda r: r["axes"]["act"][0].update(budgets={"cpu": 3}),
     "variant 'relu': budgets: cpu must be a mapping"),
    (lambda r: r["axes"]["act"][0].update(budgets={"cpu": {"seeds": [1]}}),
     "budgets: cpu: seeds are the study's or its budget's"),
    (lambda r: r["axes"]["act"][0].update(budgets=[1]), "variant 'relu': budgets must be a"),
    (lambda r: r.update(axis=r.pop("axes")), "unknown key 'axis' (did you mean axes?)"),
    (lambda r: r["budgets"].pop("cpu"), "budgets must give smoke, cpu, full; missing: cpu"),
    (lambda r: r["budgets"].update(gpu={}), "unknown budget(s) ['gpu']"),
    (lambda r: r.update(study="my study"), "study (the study's name) must be a name"),
    (lambda r: r.update(kind="distil"), "kind must be one of"),
    (lambda r: r.update(seeds=[0, 0]), "seeds lists a seed twice"),
    (lambda r: r.update(seeds=[-1]), "seeds must be a non-empty list of non-negative"),
    (lambda r: r["axes"]["act"].append({"activation": "relu"}), "needs a name"),
    (lambda r: r["axes"]["act"].append({"name": "relu"}), "two variants named 'relu'"),
    (lambda r: r["axes"]["act"][0].update(skip_axes=["opt"]), "skips axis 'opt'"),
    (lambda r: r["published"]["values"][0].update(where={"activation": "relu"}),
     "published: values[0]: where: the study has no axis 'activation'"),
    (lambda r: r["published"]["values"][0].update(where={"act": "gelu"}),
     "axis 'act' has no variant 'gelu'"),
    (lambda r: r["published"]["values"][0].pop("percent"), "values[0]: percent is required"),
    (lambda r: r["published"]["values"][0].update(percent="high"),
     "percent (the published value, in percent) must be a number, got 'high'"),
    (lambda r: r.pop("study"), "study is required"),
    (lambda r: r["published"]["values"][0].update(precent=50), "unknown key 'precent'"),
    (lambda r: r.update(report=[{"plot": "table"}, {"plot": "pie"}]),
     "report[1]: plot must be one of"),
    (lambda r: r.update(report={"plot": "pie"}), "report: plot must be one of"),
    (lambda r: r.update(report={"plot": "line", "x": "size", "y": "metrics.test_top1"}),
     "field 'size' is not a cell record's"),
    (lambda r: r.update(report={"plot": "curves", "y": "accuracy"}),
     "y of a curves plot must be one of"),
])
def test_bad_recipes_name_the_file_and_the_key(tmp_path, change, message):
    recipe = tiny_recipe(tmp_path)
    change(recipe)
    path = write(tmp_path / "bad.yaml", recipe)
    with pytest.raises(ValueError) as info:  # StudyError, or ConfigBase's ConfigError
        load_study(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


@pytest.mark.parametrize("change,message", [
    (lambda r: r["axes"].update(opt=[{"name": "a", "lr": 0.1}], sched=[{"name": "b",
                                                                        "lr": 0.2}]),
     "cell 'relu-a-b-s0' sets 'lr' in both axis 'opt' and axis 'sched'"),
    (lambda r: r["axes"]["act"][0].update(epochs=5),
     "cell 'relu-s0' sets 'epochs' in both budgets: cpu and axis 'act'"),
    (lambda r: r["axes"]["act"][0].update(optimiser="sgd"), "unknown key 'optimiser'"),
    (lambda r: r["axes"]["act"][0].update(optimizer="lbfgs"), "optimizer must be one of"),
    (lambda r: r["base"].update(seed=3), "'seed' is set by the study from seeds:"),
    (lambda r: r["base"].update(out_dir="runs"), "'out_dir' is set by the study"),
])
def test_bad_cells_name_the_file_the_cell_and_the_key(tmp_path, change, message):
    recipe = tiny_recipe(tmp_path)
    change(recipe)
    path = write(tmp_path / "bad.yaml", recipe)
    with pytest.raises(ValueError) as info:
        plan_study(path, "cpu", out=tmp_path / "out")
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_a_missing_or_malformed_recipe_is_named(tmp_path):
    with pytest.raises(ValueError, match="study recipe .*nope.yaml does not exist"):
        load_study(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("study: [unclosed\n")
    with pytest.raises(ValueError, match="broken.yaml is not valid YAML at line"):
        load_study(tmp_path / "broken.yaml")


# --- running ---------------------------------------------------------------------------------

def test_a_study_writes_cell_records_and_a_complete_results_json(tmp_path, cifar_tree):
    plan = plan_study(write(tmp_path / "tiny.yaml", tiny_recipe(cifar_tree)), "smoke",
                      out=tmp_path / "out")
    lines = []
    results = run_study(plan, progress=False, log=lines.append)
    assert lines[0] == "cell 1/2 relu-s0: running (train)"
    assert lines[1].startswith("cell 1/2 relu-s0: done: top-1 ")
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == results
    assert results["schema"] == "squeezelab-study-results" and results["schema_version"] == 1
    assert (results["study"], results["budget"], results["kind"]) == ("tiny", "smoke", "train")
    assert results["source"]["where"] == "nowhere" and results["seeds"] == [0]
    assert results["counts"] == {"total": 2, "done": 2, "skipped": 0, "failed": 0,
                                 "pending": 0}
    expected_params = sum(p.numel() for p in create_model(
        "squeezenet_cifar", num_classes=10, **TINY).parameters())
    for cell in results["cells"]:
        assert cell["status"] == "done" and cell["budget"] == "smoke"
        assert json.loads((tmp_path / "out" / "cells" / f"{cell['name']}.json").read_text()) \
            == cell
        m = cell["metrics"]
        assert 0.0 <= m["test_top1"] <= m["test_top5"] <= 1.0 and m["epochs"] == 2
        assert m["best_test_top1"] >= m["test_top1"] and m["train_loss"] > 0
        assert cell["parameters"] == expected_params
        assert cell["fp32_bytes"] == 4 * expected_params and cell["macs"] > 0
        # the weights file holds the fp32 weights (and BatchNorm buffers, a small header)
        assert cell["fp32_bytes"] < cell["file_bytes"] < 1.5 * cell["fp32_bytes"]
        assert cell["config"]["model_args"]["activation"] == cell["variants"]["act"]
        assert cell["config"]["epochs"] == 2 and cell["seed"] == 0
        assert cell["train_images"] == 100 and cell["test_images"] == 50
        assert cell["seconds"] >= cell["train_seconds"] > 0
        assert cell["machine"]["cores"] >= 1 and cell["machine"]["torch"]
        assert cell["git_commit"] is None or len(cell["git_commit"]) == 40
        assert [r["epoch"] for r in cell["curves"]] == [1, 2]
        assert cell["curves"][-1]["test_top1"] == m["test_top1"]
        assert len(open(cell["metrics_path"]).read().splitlines()) == 2
        assert cell["auto_settings"] == {"precision": "fp32", "channels_last": False}
    relu, tanh = results["cells"]
    assert relu["published"] == [{
        "where": {"act": "relu"}, "percent": 50.0, "metric": "top1", "dataset": "CIFAR-10",
        "source": "a paper", "note": None, "model_size_mb": None, "compression_ratio": None,
        "ours_percent": pytest.approx(100 * relu["metrics"]["test_top1"]),
        "difference_points": pytest.approx(100 * relu["metrics"]["test_top1"] - 50.0)}]
    assert tanh["published"] == []
    group = results["groups"][0]
    assert (group["name"], group["n"], group["cells"]) == ("relu", 1, ["relu-s0"])
    assert group["metrics"]["test_top1"]["mean"] == relu["metrics"]["test_top1"]


def test_finished_cells_are_skipped_and_a_changed_recipe_is_refused(tmp_path, cifar_tree):
    recipe = tiny_recipe(cifar_tree)
    recipe["base"]["epochs"] = 1
    path = write(tmp_path / "tiny.yaml", recipe)
    plan = plan_study(path, "smoke", out=tmp_path / "out")
    first = run_study(plan, cell=2, progress=False, log=quiet)  # "--cell 2" alone
    assert [c["status"] for c in first["cells"]] == ["pending", "done"]
    lines = []
    second = run_study(plan, progress=False, log=lines.append)
    assert lines[0] == "cell 1/2 relu-s0: running (train)"
    assert lines[2] == "cell 2/2 tanh-s0: done in an earlier run, skipped"
    assert second["cells"][1] == first["cells"][1]  # the same record, not a second run
    # the recipe asks for something else now: the recorded cells are not silently mixed in
    recipe["base"]["lr"] = 0.004
    write(path, recipe)
    with pytest.raises(StudyError, match=r"cell relu-s0: its recorded result .* other settings"
                       r" .* \(lr: 0.003 != 0.004\)"):
        run_study(plan_study(path, "smoke", out=tmp_path / "out"), progress=False, log=quiet)
    # a record written before a setting existed (its config lacks the key): the same
    # experiment while the recipe leaves that setting at its default, another once it does not
    recipe["base"]["lr"] = 0.003
    write(path, recipe)
    record_path = tmp_path / "out" / "cells" / "tanh-s0.json"
    record = json.loads(record_path.read_text())
    assert record["config"].pop("ema_decay") == 0.0
    record_path.write_text(json.dumps(record))
    lines = []
    run_study(plan_study(path, "smoke", out=tmp_path / "out"), progress=False, log=lines.append)
    assert "cell 2/2 tanh-s0: done in an earlier run, skipped" in lines
    recipe["base"]["ema_decay"] = 0.99
    write(path, recipe)
    with pytest.raises(StudyError, match=r"relu-s0: .* \(ema_decay: 0.0 != 0.99\)"):
        run_study(plan_study(path, "smoke", out=tmp_path / "out"), progress=False, log=quiet)


def test_finished_cells_of_another_machine_are_imported_and_only_the_rest_runs(tmp_path,
                                                                               cifar_tree):
    recipe = tiny_recipe(cifar_tree)
    recipe["base"]["epochs"] = 1
    path = write(tmp_path / "tiny.yaml", recipe)
    elsewhere = run_study(plan_study(path, "smoke", out=tmp_path / "a"), cell=2,
                          progress=False, log=quiet)
    plan = plan_study(path, "smoke", out=tmp_path / "b")
    lines = []
    assert import_results(plan, [tmp_path / "a" / "results.json"], log=lines.append) == 1
    assert lines == [f"cell 2 tanh-s0: done, imported from {tmp_path / 'a' / 'results.json'}"]
    lines = []
    results = run_study(plan, progress=False, log=lines.append)
    assert "cell 2/2 tanh-s0: done in an earlier run, skipped" in lines
    assert lines[0] == "cell 1/2 relu-s0: running (train)"
    relu, tanh = results["cells"]
    assert relu["status"] == "done" and tanh["imported_from"].endswith("results.json")
    assert {k: v for k, v in tanh.items() if k != "imported_from"} == elsewhere["cells"][1]
    # importing again keeps what is here; another study, budget or setting is refused
    lines = []
    assert import_results(plan, [tmp_path / "a" / "results.json"], log=lines.append) == 0
    assert lines == ["cell 2 tanh-s0: finished here already, the record here is kept"]
    with pytest.raises(StudyError, match=r"holds study 'tiny' at budget 'smoke', not 'tiny' at "
                       r"'cpu'"):
        import_results(plan_study(path, "cpu", out=tmp_path / "c"),
                       [tmp_path / "a" / "results.json"])
    recipe["base"]["lr"] = 0.004
    with pytest.raises(StudyError, match=r"tanh-s0: its recorded result .* \(lr: 0.003 != "
                       r"0.004\)"):
        import_results(plan_study(write(tmp_path / "t2.yaml", recipe), "smoke",
                                  out=tmp_path / "d"), [tmp_path / "a" / "results.json"])
    # the command: --import with --merge only imports and merges
    from squeezelab.cli import main

    assert main(["study", str(path), "--budget", "smoke", "--out", str(tmp_path / "e"),
                 "--import", str(tmp_path / "a" / "results.json"), "--merge"]) == 0
    merged = json.loads((tmp_path / "e" / "results.json").read_text())
    assert [c["status"] for c in merged["cells"]] == ["pending", "done"]
    # and with --jobs: imported before the workers start, which run only the rest
    assert main(["study", str(path), "--budget", "smoke", "--out", str(tmp_path / "f"),
                 "--import", str(tmp_path / "a" / "results.json"), "--jobs", "2"]) == 0
    from squeezelab.workflows.studies.parallel import threads_per_job

    relu, tanh = json.loads((tmp_path / "f" / "results.json").read_text())["cells"]
    assert relu["status"] == "done" and relu["machine"]["threads"] == threads_per_job(2)
    assert tanh["imported_from"].endswith("results.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StudyError, match="bad.json: not a readable results JSON"):
        import_results(plan, [tmp_path / "bad.json"])


class _CtrlCAtStep(TrainHook):
    """Press Ctrl-C (SIGINT to this process) after a given optimizer step."""

    name = "ctrl_c"

    def __init__(self, step: int):
        self.step = step

    def after_step(self, state):
        if state.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupted_cell_resumes_exactly(tmp_path, cifar_tree, monkeypatch):
    path = write(tmp_path / "tiny.yaml", tiny_recipe(cifar_tree))
    reference = run_study(plan_study(path, "smoke", out=tmp_path / "ref"), cell=1,
                          progress=False, log=quiet)["cells"][0]
    real_train = train_kind.train
    # Ctrl-C in the middle of epoch 2 (steps 1-2 are epoch 1): the run saves and stops there
    monkeypatch.setattr(train_kind, "train",
                        lambda cfg, **kw: real_train(cfg, hooks=[_CtrlCAtStep(3)], **kw))
    plan = plan_study(path, "smoke", out=tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        run_study(plan, progress=False, log=quiet)
    assert not (tmp_path / "out" / "cells" / "relu-s0.json").exists()
    last = tmp_path / "out" / "runs" / "relu-s0" / "checkpoints" / "last.json"
    assert last.is_file()
    carried_cpu = load_checkpoint(last).meta["epoch_sums"]["cpu_seconds"]
    assert carried_cpu > 0  # the cut epoch's CPU time so far travels with its running sums
    merged = json.loads((tmp_path / "out" / "results.json").read_text())
    assert merged["counts"]["pending"] == 2
    monkeypatch.setattr(train_kind, "train", real_train)
    # an edited recipe does not continue a run started under the old one
    changed = tiny_recipe(cifar_tree)
    changed["base"]["lr"] = 0.004
    with pytest.raises(ValueError, match=r"the interrupted run in .*relu-s0 was started with "
                       r"other settings than the study asks for now \(lr: 0.003 != 0.004\)"):
        run_study(plan_study(write(tmp_path / "changed.yaml", changed), "smoke",
                             out=tmp_path / "out"), cell=1, progress=False, log=quiet)
    resumed = run_study(plan, cell=1, progress=False, log=quiet)["cells"][0]
    assert resumed["resumed"] is True and reference["resumed"] is False
    # the cell's CPU time is its own process's; its epochs' is summed over both processes
    assert 0 < reference["train_cpu_seconds"] <= reference["cpu_seconds"]
    assert resumed["cpu_seconds"] > 0
    epochs = [json.loads(line) for line in (tmp_path / "out" / "runs" / "relu-s0" /
                                            "metrics.jsonl").read_text().splitlines()]
    assert epochs[1]["cpu_seconds"] > carried_cpu
    assert resumed["train_cpu_seconds"] == pytest.approx(sum(e["cpu_seconds"] for e in epochs))
    # the same weights: the same test figures. (The train loss and accuracy of the epoch that
    # was cut are summed over the steps after the resume only, so they are not compared.)
    for key in ("test_top1", "test_top5", "test_loss", "best_test_top1", "epochs"):
        assert resumed["metrics"][key] == reference["metrics"][key], key
    assert resumed["curves"][0] == {**reference["curves"][0],
                                    **{k: resumed["curves"][0][k]
                                       for k in ("seconds", "images_per_s")}}


def test_a_run_resumes_under_the_settings_its_autotune_chose(tmp_path):
    planned = TrainConfig(precision="auto", channels_last=None, lr=0.1)
    saved = {**planned.to_dict(), "precision": "bf16", "channels_last": True,
             "out_dir": "elsewhere", "progress": False}
    train_kind._check_same_run(planned, saved, tmp_path)  # the autotune's choice is no change
    with pytest.raises(ValueError, match=r"\(precision: 'bf16' != 'fp32'\)"):
        train_kind._check_same_run(planned.replace(precision="fp32"), saved, tmp_path)


def test_a_cell_whose_data_is_missing_is_skipped_until_it_is_there(tmp_path, cifar_tree,
                                                                  monkeypatch):
    recipe = tiny_recipe(cifar_tree)
    recipe["base"]["epochs"] = 1
    # 100 train images are 1 of each CIFAR-100 class; the test subset needs 100 too
    recipe["axes"]["act"][1].update(data="cifar100", data_root=str(tmp_path / "archives"),
                                    limit_test=100)
    plan = plan_study(write(tmp_path / "tiny.yaml", recipe), "smoke", out=tmp_path / "out")
    lines = []
    results = run_study(plan, progress=False, log=lines.append)
    skipped = results["cells"][1]
    assert skipped["status"] == "skipped" and results["counts"]["skipped"] == 1
    archive = tmp_path / "archives" / "cifar-100-python.tar.gz"
    assert skipped["reason"] == (f"the CIFAR-100 archive cifar-100-python.tar.gz is not at "
                                 f"{archive} (place it there, or set download: true to fetch "
                                 "it)")
    assert lines[-1] == f"cell 2/2 tanh-s0: skipped: {skipped['reason']}"
    # the archive arrives (a tiny one in the official format, trusted as if official)
    archive.parent.mkdir()
    write_cifar_archive(archive, "cifar100", per_class=1)
    monkeypatch.setitem(CIFAR_SPECS, "cifar100",
                        dataclasses.replace(CIFAR_SPECS["cifar100"], md5=file_md5(archive)))
    lines.clear()
    results = run_study(plan, progress=False, log=lines.append)
    assert lines[0] == "cell 1/2 relu-s0: done in an earlier run, skipped"
    cell = results["cells"][1]
    assert cell["status"] == "done" and cell["num_classes"] == 100
    assert cell["train_images"] == 100 and results["counts"]["done"] == 2


def test_a_diverged_cell_is_recorded_as_failed_and_the_study_goes_on(tmp_path, cifar_tree,
                                                                    monkeypatch):
    recipe = tiny_recipe(cifar_tree)
    recipe["base"]["epochs"] = 1
    real_train = train_kind.train

    def diverge_relu(cfg, **kw):  # the loop's own error when the loss is not finite
        if cfg.model_args["activation"] == "relu":
            raise TrainingDiverged("loss became nan at epoch 1, step 2")
        return real_train(cfg, **kw)

    monkeypatch.setattr(train_kind, "train", diverge_relu)
    plan = plan_study(write(tmp_path / "tiny.yaml", recipe), "smoke", out=tmp_path / "out")
    results = run_study(plan, progress=False, log=quiet)
    failed, done = results["cells"]
    assert failed["status"] == "failed"
    assert failed["reason"] == "TrainingDiverged: loss became nan at epoch 1, step 2"
    assert done["status"] == "done" and results["counts"]["failed"] == 1
    lines = []
    run_study(plan, progress=False, log=lines.append)  # not retried: delete its record for that
    assert lines[0] == "cell 1/2 relu-s0: failed in an earlier run, skipped"


def test_merge_lists_pending_cells_and_files_the_plan_does_not_have(tmp_path, cifar_tree):
    path = write(tmp_path / "tiny.yaml", tiny_recipe(cifar_tree, seeds=[0, 1]))
    plan = plan_study(path, "smoke", out=tmp_path / "out", seeds=[0])
    (plan.cells_dir).mkdir(parents=True)
    (plan.cells_dir / "relu-s1.json").write_text(json.dumps({"status": "done"}))
    results = merge_study(plan)
    assert [c["status"] for c in results["cells"]] == ["pending", "pending"]
    assert results["unplanned_cells"] == ["relu-s1"] and results["seeds"] == [0]
    (plan.cells_dir / "relu-s0.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"relu-s0.json is not readable JSON .* delete it"):
        merge_study(plan)


def test_select_cells_by_number_or_name(tmp_path):
    plan = plan_study(write(tmp_path / "tiny.yaml", tiny_recipe(tmp_path)), "smoke",
                      out=tmp_path / "out")
    assert [c.name for c in plan.select("2")] == ["tanh-s0"]
    assert [c.name for c in plan.select("relu-s0")] == ["relu-s0"]
    with pytest.raises(StudyError, match=r"--cell 3: .*tiny.yaml has cells 1..2 under budget"):
        plan.select("3")
    with pytest.raises(StudyError, match=r"--cell 'gelu-s0': .* no such cell .* relu-s0"):
        plan.select("gelu-s0")


# --- a new kind is one registration ---------------------------------------------------------

def test_a_new_cell_kind_is_one_registration(tmp_path, monkeypatch):
    monkeypatch.setattr(kind_registry, "_KINDS", dict(kind_registry._KINDS))
    seen = []

    @register_cell_kind("echo", settings=EchoSettings,
                        prepare=lambda values, seed, run_dir, where: {**values, "seed": seed})
    def run_echo(settings, ctx):
        seen.append((settings.value, settings.seed, ctx.run_dir.name))
        return {"metrics": {"test_top1": settings.value}}

    with pytest.raises(ValueError, match="cell kind 'echo' is registered twice"):
        register_cell_kind("echo", settings=EchoSettings)(run_echo)
    recipe = {"study": "echo", "kind": "echo", "base": {"value": 0.25},
              "axes": {"v": [{"name": "a"}, {"name": "b", "value": 0.5}]}, "seeds": [4],
              "budgets": {"smoke": {}, "cpu": {}, "full": {}},
              "published": {"values": [{"where": {"v": "b"}, "percent": 40.0}]}}
    plan = plan_study(write(tmp_path / "echo.yaml", recipe), "smoke", out=tmp_path / "out")
    results = run_study(plan, log=quiet)
    assert seen == [(0.25, 4, "a-s4"), (0.5, 4, "b-s4")]
    assert [c["metrics"]["test_top1"] for c in results["cells"]] == [0.25, 0.5]
    assert results["cells"][1]["published"][0]["ours_percent"] == 50.0


# --- the README's table ------------------------------------------------------------------------

def test_table_of_a_study_results_json_averages_the_seeds(tmp_path, capsys):
    def cell(name, variants, top1, seconds):
        return {"name": name, "variants": variants, "status": "done",
                "metrics": {"test_top1": top1}, "seconds_per_epoch": seconds}

    results = {"cells": [cell("adam-tanh-s0", {"opt": "adam", "act": "tanh"}, 0.5, 2.0),
                         cell("adam-tanh-s1", {"opt": "adam", "act": "tanh"}, 0.6, 4.0)],
               "groups": [{"variants": {"opt": "adam", "act": "tanh"}, "n": 2,
                           "cells": ["adam-tanh-s0", "adam-tanh-s1"],
                           "metrics": {"test_top1": {"mean": 0.55}}},
                          {"variants": {"opt": "sgd", "act": "tanh"}, "n": 0, "cells": [],
                           "metrics": {"test_top1": None}}]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert TABLE.main(["--table", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "| act | adam |", "|---|---|", "| tanh | 55.00% (3.0 s) |"]


def test_table_of_the_recorded_grids_before_they_were_studies(capsys):
    assert TABLE.main(["--table", str(ROOT / "benchmarks/results/activation_study.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| activation | vanilla | residual |"
    assert lines[2] == "| relu | 10.00% (11.3 s) | 62.42% (9.6 s) |"


def test_table_of_a_file_that_is_not_a_study_is_refused(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"benchmark": "load_time"}))
    with pytest.raises(SystemExit, match=r"other.json is not a study result JSON"):
        TABLE.main(["--table", str(path)])


def test_several_recipes_run_one_after_another_each_into_its_own_folder(
        tmp_path, cifar_tree, monkeypatch, capsys):
    from squeezelab.cli import main

    monkeypatch.chdir(tmp_path)
    one = write(tmp_path / "one.yaml", tiny_recipe(cifar_tree, study="one", seeds=[0]))
    recipe = tiny_recipe(cifar_tree, study="two")
    recipe["axes"]["act"] = recipe["axes"]["act"][:1]
    two = write(tmp_path / "two.yaml", recipe)
    # a bad recipe among them stops the command before any cell runs
    bad = write(tmp_path / "bad.yaml", {**recipe, "study": "bad", "seeds": "zero"})
    assert main(["study", str(one), str(bad), "--budget", "smoke"]) != 0
    assert "bad.yaml: seeds must be a non-empty list" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert main(["study", str(one), str(two), "--budget", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "2 studies:\n  one (smoke): 2 done, 0 skipped, 0 failed, 0 pending of 2 cells: " \
        "runs/studies/one/smoke/results.json\n  two (smoke): 1 done" in out
    for study, cells in (("one", 2), ("two", 1)):
        results = json.loads((tmp_path / "runs" / "studies" / study / "smoke" /
                              "results.json").read_text())
        assert results["counts"]["done"] == cells
    # what names one study's folder, cell or results does not go with several
    assert main(["study", str(one), str(two), "--budget", "smoke", "--out", "x"]) != 0
    assert "--out belong(s) to one study: give a single recipe with it, not 2" in \
        capsys.readouterr().err

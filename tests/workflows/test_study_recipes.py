"""The study recipes of recipes/studies/: each loads and expands under every budget, builds every
model it names, carries its published numbers with their source, keeps its smoke budget tiny and
its cpu budget within the few hours recorded; the course study's smoke budget runs end to end on
real JPEGs (E5 skipped until a CIFAR-100 archive is there), and a cell of every other study's
smoke budget runs. The compression studies (cells that start from a trained cell's model:
compress, quantize, dsd, distill, sensitivity) keep their smoke budgets tiny too, fit their cpu
budgets into about two hours together, carry the papers' numbers on the right cells, and run a
cell after its source under the smoke budget."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cifar_fixtures import write_cifar_archive

from squeezelab.data.cifar import CIFAR_SPECS, file_md5
from squeezelab.metrics import count_macs
from squeezelab.models import create_model
from squeezelab.train.config import TrainConfig
from squeezelab.workflows.studies import BUDGETS, load_study, plan_study, run_study

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "recipes" / "studies"
RECIPES = sorted(STUDIES.glob("*.yaml"))
NAMES = [p.stem for p in RECIPES]
TRAIN_IMAGES, TEST_IMAGES = 50_000, 10_000  # CIFAR-10's (and CIFAR-100's) splits
#: the studies whose cells start from another cell's model (workflows/studies/kinds)
COMPRESSION = ("deep_compression", "distillation", "dsd_sweeps", "quantization", "sensitivity")


def quiet(*_):
    pass


def test_the_studies_of_the_issue_are_all_there():
    assert set(NAMES) == {"activation_grid", "bypass", "compact", "course_table1",
                          "optimizer_grid", "pct3x3", "squeeze_ratio", *COMPRESSION}


@pytest.mark.parametrize("path", RECIPES, ids=NAMES)
def test_recipe_expands_under_every_budget_and_says_how_to_run_it(path, tmp_path):
    header = path.read_text().split("\nstudy:")[0]
    assert f"squeezelab study recipes/studies/{path.name} --budget cpu" in header
    assert all(f"{b} " in header for b in BUDGETS)  # each budget explained in the header
    study = load_study(path)
    assert study.study == path.stem and study.title and study.source is not None
    for budget in BUDGETS:
        plan = plan_study(path, budget, out=tmp_path / budget)
        assert len({c.name for c in plan.cells}) == len(plan.cells) >= 3
    smoke = plan_study(path, "smoke", out=tmp_path / "smoke").cells
    for cell in smoke:  # a few hundred images, one epoch, no timing of precisions
        check_smoke_cell(cell)
    # every model of the study builds (model_args included) at the data's class count
    built = set()
    for cell in plan_study(path, "full", out=tmp_path / "full").cells:
        cfg = trained_from_scratch(cell)
        if cfg is None:
            continue  # it starts from another cell's model
        key = json.dumps([cfg.model, cfg.model_args], sort_keys=True)
        if key not in built:
            built.add(key)
            create_model(cfg.model, num_classes=100 if cfg.data == "cifar100" else 10,
                         **cfg.model_args)


def trained_from_scratch(cell) -> TrainConfig | None:
    """The TrainConfig of the model a cell trains from scratch (a train cell, a dsd cell
    without a source, a distill cell's student), else None."""
    if cell.kind == "train":
        return cell.settings
    if cell.kind == "distill" or (cell.kind == "dsd" and cell.settings.source is None):
        return TrainConfig.from_dict(cell.settings.train)
    return None


def check_smoke_cell(cell) -> None:
    """A smoke cell trains a few hundred images for an epoch (DSD: its phases) in fp32 with no
    timing of precisions, fine-tunes for an epoch or two and scores a few layers' sparsities;
    a cell that starts from another cell's model takes its images from that smoke cell."""
    s = cell.settings
    cfg = trained_from_scratch(cell)
    if cfg is not None:
        if cell.kind != "distill":  # a student trains on its teacher's images
            assert cfg.limit_train <= 500 and cfg.limit_test <= 200, cell.name
        assert (cfg.precision, cfg.channels_last) == ("fp32", False), cell.name
        assert cfg.epochs == 1 or cell.kind == "dsd", cell.name
    if cell.kind == "dsd":
        assert s.dsd.total_epochs <= 13 and (s.source is None or cell.references)
        assert s.train.get("precision", "fp32") == "fp32"
    elif cell.kind == "distill":
        assert s.stage1_epochs in (None, 1) and cell.references
    elif cell.kind == "compress":
        c = s.compress
        assert c.get("retrain_epochs", 1) <= 1 and c.get("centroid_epochs", 1) <= 1
        assert c.get("prune_rounds", 1) <= 3 and cell.references
    elif cell.kind == "quantize":
        assert s.fine_tune_epochs <= 2 and cell.references
    elif cell.kind == "sensitivity":
        assert len(s.sparsities) <= 2 and (s.limit_test or 0) <= 200 and cell.references
    else:
        assert cell.kind == "train", f"{cell.name}: no smoke check for kind {cell.kind}"


PUBLISHED = {
    # the course study's Table 1, seed 001: top-1 in percent
    "course_table1": {("e5", "top1"): 38.39, ("baseline", "top1"): 46.54,
                      ("e1", "top1"): 58.43, ("e2", "top1"): 66.17, ("e3", "top1"): 69.24,
                      ("e4", "top1"): 72.05},
    # SqueezeNet (arXiv 1602.07360) Fig. 3 and Table 3: ImageNet
    "squeeze_ratio": {("sr0.125", "top5"): 80.3, ("sr0.75", "top5"): 86.0},
    "pct3x3": {("pct0.01", "top5"): 76.3, ("pct0.5", "top5"): 85.3, ("pct0.99", "top5"): 85.3},
    "bypass": {("vanilla", "top1"): 57.5, ("simple", "top1"): 60.4, ("complex", "top1"): 58.8,
               ("vanilla", "top5"): 80.3, ("simple", "top5"): 82.5, ("complex", "top5"): 82.0},
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_numbers_sit_on_their_cells_with_their_source(name, tmp_path):
    plan = plan_study(STUDIES / f"{name}.yaml", "cpu", out=tmp_path)
    found = {}
    for cell in plan.cells:
        for p in cell.published:
            assert p["source"] and p["dataset"]
            found[(next(v for v in cell.variants.values() if v), p["metric"])] = p["percent"]
    assert found == PUBLISHED[name]
    if name != "course_table1":
        assert "arXiv 1602.07360" in plan.study.published.source
        assert plan.study.published.dataset == "ImageNet" and plan.study.source.arxiv
    else:
        e5 = [c for c in plan.cells if c.variants["model"] == "e5"][0]
        assert e5.published[0]["dataset"] == "CIFAR-100" and e5.settings.data == "cifar100"


def test_the_paper_sweeps_vary_the_metaparameter_they_name(tmp_path):
    sr = plan_study(STUDIES / "squeeze_ratio.yaml", "cpu", out=tmp_path).cells
    assert [c.settings.model_args["squeeze_ratio"] for c in sr] == [0.125, 0.25, 0.5, 0.75, 1.0]
    assert {c.settings.model_args["pct3x3"] for c in sr} == {0.5}
    pct = plan_study(STUDIES / "pct3x3.yaml", "cpu", out=tmp_path).cells
    assert [c.settings.model_args["pct3x3"] for c in pct] == [0.01, 0.25, 0.5, 0.75, 0.99]
    assert {c.settings.model_args["squeeze_ratio"] for c in pct} == {0.5}
    for cell in sr + pct:  # the paper's base_e, incr_e and freq, no bypass
        args = cell.settings.model_args
        assert (cell.settings.model, args["base_e"], args["incr_e"], args["freq"],
                args["bypass"]) == ("squeezenet", 128, 128, 2, "none")
    bypass = plan_study(STUDIES / "bypass.yaml", "cpu", out=tmp_path).cells
    assert [(c.variants["bypass"], c.seed) for c in bypass[:3]] == [
        ("vanilla", 0), ("simple", 0), ("complex", 0)]
    assert {c.seed for c in bypass} == {0, 1, 2}
    assert {c.settings.model_args["bypass"] for c in bypass} == {"none", "simple", "complex"}


def test_the_compact_study_trains_every_variant_at_one_budget(tmp_path):
    """Four expand3x3 kinds of the CIFAR SqueezeNet and three other compact models, every one
    under the same training settings, epochs and images (none left to a model's defaults)."""
    cells = plan_study(STUDIES / "compact.yaml", "cpu", out=tmp_path).cells
    assert [(c.settings.model, c.settings.model_args.get("expand3x3")) for c in cells] == [
        ("squeezenet_cifar", "standard"), ("squeezenet_cifar", "factorized"),
        ("squeezenet_cifar", "flattened"), ("squeezenet_cifar", "separable"),
        ("googlenet_cifar", None), ("mobilenet_v2_cifar", None),
        ("resnet_bottleneck_cifar", None)]
    shared = ("epochs", "limit_train", "batch_size", "optimizer", "lr", "weight_decay",
              "schedule", "warmup_epochs", "label_smoothing", "subset_seed")
    assert len({tuple(getattr(c.settings, k) for k in shared) for c in cells}) == 1
    sizes = [sum(p.numel() for p in create_model(c.settings.model, **c.settings.model_args)
                 .parameters()) for c in cells]
    assert all(200_000 < n < 1_000_000 for n in sizes)  # "about the CIFAR SqueezeNet's size"


def test_the_cpu_budgets_of_all_studies_fit_in_about_six_hours(tmp_path):
    """An estimate, from MACs, of the cpu budgets on the recording machine (2 cores, AVX-512
    BF16): there the default CIFAR SqueezeNet (51.5M MACs) trains ~1,100 img/s and course E4
    (224M) ~240 img/s, both ~55G MACs/s with the backward pass, evaluation ~3x that; the data
    path caps small models near 3,000 img/s. A guard against a budget that grows by accident,
    not the budgets' cost: that is measured, all studies at once on the 2-core machine, by
    benchmarks/study_working_day.py (9.34 h for the budgets of 2026-12-04; README)."""
    macs_cache: dict[str, int] = {}
    seconds = 0.0
    for path in RECIPES:
        if path.stem in COMPRESSION:
            continue  # estimated apart below
        for cell in plan_study(path, "cpu", out=tmp_path / path.stem).cells:
            cfg = cell.settings
            if cfg.data == "cifar100":
                continue  # E5 runs only where its archive is, and is counted apart below
            key = json.dumps([cfg.model, cfg.model_args], sort_keys=True)
            if key not in macs_cache:
                macs_cache[key] = count_macs(create_model(cfg.model, num_classes=10,
                                                          **cfg.model_args), 32)
            train_rate = min(55e9 / macs_cache[key], 3000.0)
            images = (cfg.limit_train or TRAIN_IMAGES) * cfg.epochs
            evaluations = -(-cfg.epochs // cfg.eval_every)
            seconds += images / train_rate + evaluations * TEST_IMAGES / (3 * train_rate)
    assert 3 * 3600 < seconds < 5.5 * 3600, f"{seconds / 3600:.2f} h"


#: the compression studies' published values: cell name -> (metric, percent, MB, ratio)
PUBLISHED_COMPRESSION = {
    # SqueezeNet (arXiv 1602.07360) Table 2, ImageNet
    "deep_compression": {
        "alexnet_fp32-s2": [("top1", 57.2, 240, 1)],
        "alexnet_pruned-s2": [("top1", 57.2, 27, 9)],
        "alexnet_dc-s2": [("top1", 57.2, 6.9, 35)],
        "alexnet_svd-s2": [("top1", 56.0, 48, 5)],
        "squeezenet_fp32-s2": [("top1", 57.5, 4.8, 50)],
        "squeezenet_8bit-s2": [("top1", 57.5, 0.66, 363)],
        "squeezenet_6bit-s2": [("top1", 57.5, 0.47, 510)],
        "squeezenet_6bit_ecsq-s2": [("top1", 57.5, 0.47, 510)]},
    # the authors' DSD SqueezeNet (github.com/songhan/SqueezeNet-DSD-Training), ImageNet
    "dsd_sweeps": {
        "vanilla-trained-s0": [("top1", 57.5, 4.8, None), ("top5", 80.3, None, None)],
        "vanilla-from_dsd-s0": [("top1", 61.76, 4.8, None), ("top5", 83.47, None, None)]},
    # FitNets (arXiv 1412.6550) Table 1, CIFAR-10
    "distillation": {"teacher-s4": [("top1", 90.18, None, None)],
                     "fitnets-s4": [("top1", 91.61, None, None)]},
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_COMPRESSION))
def test_compression_studies_carry_the_papers_numbers_on_their_cells(name, tmp_path):
    plan = plan_study(STUDIES / f"{name}.yaml", "cpu", out=tmp_path)
    found = {c.name: [(p["metric"], p["percent"], p["model_size_mb"], p["compression_ratio"])
                      for p in c.published] for c in plan.cells
             if c.published and c.seed == plan.cells[0].seed}  # every seed has them
    assert found == PUBLISHED_COMPRESSION[name]
    for cell in plan.cells:
        for p in cell.published:
            assert p["source"] and p["dataset"] in ("ImageNet", "CIFAR-10") and p["note"]
    assert plan.study.source.arxiv in ("1510.00149", "1607.04381", "1412.6550")


def test_the_compression_studies_start_from_the_models_they_name(tmp_path):
    """Each dependent cell reads the train cell of its own model (and seed)."""
    plans = {n: plan_study(STUDIES / f"{n}.yaml", "cpu", out=tmp_path / n).cells
             for n in COMPRESSION}
    for name, cells in plans.items():
        by_name = {c.name: c for c in cells}
        for cell in cells:
            for key, target in cell.references.items():
                source = by_name[target]
                assert source.seed == cell.seed and source.index < cell.index
                if key != "compare_with":
                    assert source.kind == "train", f"{name} {cell.name} {key}"
    dc = {c.name: c for c in plans["deep_compression"]}
    assert {c.seed for c in dc.values()} == {2, 3, 4}
    assert dc["alexnet_dc-s3"].references == {"source": "alexnet_fp32-s3"}
    assert dc["squeezenet_6bit-s4"].references == {"source": "squeezenet_fp32-s4"}
    assert dc["alexnet_fp32-s2"].settings.model == "alexnet_cifar"
    assert dc["squeezenet_fp32-s2"].settings.model == "squeezenet_cifar_baseline"
    # vanilla SqueezeNet gets its own cpu epochs (20 against AlexNet's 8), warm-up and clipping
    fp32 = dc["squeezenet_fp32-s2"].settings
    assert (fp32.epochs, fp32.warmup_epochs, fp32.grad_clip) == (20, 1, 1.0)
    assert dc["alexnet_fp32-s2"].settings.epochs == 8
    ecsq = dc["squeezenet_6bit_ecsq-s2"].settings.compress
    assert (ecsq["sharing"]["entropy_weight"], ecsq["float_dtype"], ecsq["dense_bits"]) == (
        0.005, "float16", 8)
    assert ecsq["prune"]["sparsity"] == 0.67 and ecsq["sharing"]["bits"] == {"conv": 6}
    dsd = {c.name: c for c in plans["dsd_sweeps"]}
    assert [dsd[f"vanilla-sp{s}-s0"].settings.dsd.sparsity for s in
            ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6")] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert dsd["vanilla-dense-s0"].settings.train["model"] == "squeezenet_cifar_baseline"
    assert dsd["vanilla-dense-s0"].settings.train["batch_size"] == 64
    assert dsd["residual-e8_3_2-s0"].references == {"compare_with": "vanilla-e8_3_2-s0"}
    assert dsd["residual-from_dsd-s0"].references == {"source": "residual-trained-s0",
                                                      "compare_with": "vanilla-from_dsd-s0"}
    quant = {c.settings.method for c in plans["quantization"] if c.kind == "quantize"}
    from squeezelab.compress.quantization.registry import quantizer_names

    assert quant == set(quantizer_names())  # every quantizer of the registry
    kd = [c.settings.temperature for c in plans["distillation"] if c.kind == "distill"
          and c.settings.method == "kd"]
    assert kd == [1, 2, 4, 8, 20]


def _rate(model: str, model_args: dict, cache: dict[str, float]) -> float:
    """Training images per second on the recording machine (see the test above)."""
    key = json.dumps([model, model_args], sort_keys=True)
    if key not in cache:
        macs = count_macs(create_model(model, num_classes=10, **model_args), 32)
        cache[key] = min(55e9 / macs, 3000.0)
    return cache[key]


def _cpu_seconds(cell, by_name, cache) -> float:
    """The estimated seconds of one compression-study cell under the cpu budget: its training
    images at the model's rate, its test passes at three times that, and for the cells that
    write a .sqz the size report's gzip and zstd of the fp32 file (~1.5 s a MB)."""
    s = cell.settings

    def data(cfg) -> tuple[int, int]:
        return cfg.limit_train or TRAIN_IMAGES, cfg.limit_test or TEST_IMAGES

    if cell.kind == "train":
        train, test = data(s)
        rate = _rate(s.model, s.model_args, cache)
        return s.epochs * train / rate + -(-s.epochs // s.eval_every) * test / (3 * rate)
    source = by_name[cell.references[next(k for k in ("source", "teacher")
                                          if k in cell.references)]] \
        if cell.references.keys() & {"source", "teacher"} else None
    src = source.settings if source is not None else None
    if cell.kind == "dsd":
        cfg = TrainConfig.from_dict({**({"model": src.model, "model_args": src.model_args,
                                         "limit_train": src.limit_train,
                                         "limit_test": src.limit_test} if src else {}),
                                     **s.train})
        train, test = data(cfg)
        rate = _rate(cfg.model, cfg.model_args, cache)
        epochs = s.dsd.total_epochs
        return epochs * train / rate + -(-epochs // cfg.eval_every) * test / (3 * rate)
    train, test = data(src)
    rate = _rate(src.model, src.model_args, cache)
    mb = 4 * sum(p.numel() for p in create_model(src.model, **src.model_args).parameters()) / 1e6
    if cell.kind == "distill":
        student = TrainConfig.from_dict(s.train)
        student_rate = _rate(student.model, student.model_args, cache)
        if s.method != "labels":  # the teacher's forward pass for every batch
            student_rate = 1 / (1 / student_rate + 1 / (3 * rate))
        epochs = student.epochs + (s.resolved().get("stage1_epochs", 0) or 0)
        return epochs * (train / student_rate + test / (3 * student_rate)) + test / (3 * rate)
    if cell.kind == "sensitivity":
        layers = len([p for p in create_model(src.model, **src.model_args).parameters()
                      if p.dim() > 1])
        return (1 + layers * len(s.sparsities)) * (s.limit_test or test) / (3 * rate)
    if cell.kind == "compress":
        c = s.config_for({})
        epochs = (c.prune_rounds * c.retrain_epochs if c.prune else 0) + \
            (c.centroid_epochs if c.sharing else 0)
        passes = 2 + (c.prune_rounds if c.prune else 0) + (2 if c.sharing else 0) + epochs
        return epochs * train / rate + passes * test / (3 * rate) + 1.5 * mb
    assert cell.kind == "quantize", cell.kind
    epochs = s.fine_tune_epochs
    coding = 1.5 * mb if s.method == "kmeans" else 10.0  # k-means, .sqz; pq/rq clustering
    return epochs * train / rate + (3 + epochs) * test / (3 * rate) + coding


def test_the_cpu_budgets_of_the_compression_studies_fit_in_about_two_hours(tmp_path):
    """The same estimate for the studies that start from a trained model, cell by cell (what
    each kind trains and scores): about two hours for the five together."""
    cache: dict[str, float] = {}
    seconds = {}
    for name in COMPRESSION:
        cells = plan_study(STUDIES / f"{name}.yaml", "cpu", out=tmp_path / name).cells
        by_name = {c.name: c for c in cells}
        seconds[name] = sum(_cpu_seconds(c, by_name, cache) for c in cells)
    total = sum(seconds.values())
    assert 1.25 * 3600 < total < 2.5 * 3600, {k: round(v / 60) for k, v in seconds.items()}
    assert all(v < 50 * 60 for v in seconds.values()), {k: round(v / 60) for k, v in
                                                         seconds.items()}


@pytest.fixture
def shared_jpegs_as_default(monkeypatch, cifar_tree, tmp_path):
    """The recipes' ``data: null`` resolves to the cifar_tree copy of the shared JPEGs, and
    official archives are looked for in a cache folder of this test's own."""
    monkeypatch.setenv("SQUEEZELAB_CIFAR10_DIR", str(cifar_tree))
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


COURSE_PARAMETERS = {"baseline": 740_554, "e1": 740_554, "e2": 727_594, "e3": 715_162,
                     "e4": 727_594, "e5": 773_764}  # the README's Models table


def check_course_cell(cell):
    assert cell["status"] == "done"
    assert cell["parameters"] == COURSE_PARAMETERS[cell["variants"]["model"]]
    assert 0.0 <= cell["metrics"]["test_top1"] <= 1.0 and cell["seed"] == 1
    assert cell["train_images"] == 200 and cell["test_images"] == 100
    assert len(cell["curves"]) == 1 and Path(cell["metrics_path"]).is_file()
    (published,) = cell["published"]
    assert published["ours_percent"] == pytest.approx(100 * cell["metrics"]["test_top1"])


def test_course_study_smoke_cells_run_and_e5_waits_for_its_archive(tmp_path,
                                                                   shared_jpegs_as_default):
    """The quick models of the course study (E4 and E5 are 224M MACs an image: the slow test
    below runs them), and E5 skipped without the CIFAR-100 archive."""
    plan = plan_study(STUDIES / "course_table1.yaml", "smoke", out=tmp_path / "out")
    for k in (1, 2, 3, 4, 6):
        results = run_study(plan, cell=k, progress=False, log=quiet)
    assert results["counts"] == {"total": 6, "done": 4, "skipped": 1, "failed": 0,
                                 "pending": 1}
    for cell in results["cells"][:4]:
        check_course_cell(cell)
    e5 = results["cells"][5]
    assert e5["status"] == "skipped" and e5["reason"].startswith(
        f"the CIFAR-100 archive cifar-100-python.tar.gz is not at {shared_jpegs_as_default}")
    assert e5["published"][0]["ours_percent"] is None


@pytest.mark.slow
def test_course_study_smoke_runs_end_to_end(tmp_path, shared_jpegs_as_default, monkeypatch):
    """The whole smoke budget, E5 included once a (tiny, official-format) CIFAR-100 archive is
    in place: ~30 s on one core."""
    plan = plan_study(STUDIES / "course_table1.yaml", "smoke", out=tmp_path / "out")
    results = run_study(plan, progress=False, log=quiet)
    assert [c["status"] for c in results["cells"]] == ["done"] * 5 + ["skipped"]
    archive = shared_jpegs_as_default / "cifar-100-python.tar.gz"
    archive.parent.mkdir(exist_ok=True)
    write_cifar_archive(archive, "cifar100", per_class=2)
    monkeypatch.setitem(CIFAR_SPECS, "cifar100",
                        dataclasses.replace(CIFAR_SPECS["cifar100"], md5=file_md5(archive)))
    results = run_study(plan, progress=False, log=quiet)
    assert results["counts"]["done"] == 6
    for cell in results["cells"]:
        check_course_cell(cell)
    assert results["cells"][5]["num_classes"] == 100


@pytest.mark.parametrize("name", [n for n in NAMES if n != "course_table1"
                                  and n not in COMPRESSION])
def test_a_cell_of_every_other_study_runs_under_the_smoke_budget(name, tmp_path,
                                                                  shared_jpegs_as_default):
    plan = plan_study(STUDIES / f"{name}.yaml", "smoke", out=tmp_path / "out")
    results = run_study(plan, cell=1, progress=False, log=quiet)
    cell = results["cells"][0]
    assert cell["status"] == "done" and 0.0 <= cell["metrics"]["test_top1"] <= 1.0
    assert cell["fp32_bytes"] == 4 * cell["parameters"] and cell["macs"] > 0
    assert results["counts"]["pending"] == len(plan.cells) - 1


#: per compression study, a train cell and a cell that starts from its model
CHAINS = {
    "deep_compression": ("squeezenet_fp32-s2", "squeezenet_8bit-s2"),
    "distillation": ("teacher-s4", "kd_t4-s4"),
    "dsd_sweeps": ("vanilla-trained-s0", "vanilla-from_dsd-s0"),
    "quantization": ("fp32-s4", "int8-post-s4"),
    "sensitivity": ("alexnet-trained-s4", "alexnet-sensitivity-s4"),
}


@pytest.mark.parametrize("name", COMPRESSION)
def test_a_cell_of_every_compression_study_runs_after_its_source(name, tmp_path,
                                                                  shared_jpegs_as_default):
    source, user = CHAINS[name]
    plan = plan_study(STUDIES / f"{name}.yaml", "smoke", out=tmp_path / "out")
    for cell in (source, user):
        results = run_study(plan, cell=cell, progress=False, log=quiet)
    cells = {c["name"]: c for c in results["cells"]}
    assert cells[source]["status"] == cells[user]["status"] == "done"
    assert 0.0 <= cells[user]["metrics"]["test_top1"] <= 1.0
    (reference,) = [r for k, r in cells[user]["sources"].items() if k != "compare_with"]
    assert reference["cell"] == source
    assert reference["top1"] == cells[source]["metrics"]["best_test_top1"]
    assert results["counts"]["done"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", COMPRESSION)
def test_every_cell_of_a_compression_study_runs_under_the_smoke_budget(
        name, tmp_path, shared_jpegs_as_default):
    """The whole smoke budget, every cell after its sources: 1-4 min a study on one core."""
    plan = plan_study(STUDIES / f"{name}.yaml", "smoke", out=tmp_path / "out")
    results = run_study(plan, progress=False, log=quiet)
    assert results["counts"]["done"] == len(plan.cells), [
        (c["name"], c.get("reason")) for c in results["cells"] if c["status"] != "done"]

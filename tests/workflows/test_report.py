"""The study report (squeezelab/workflows/report): one self-contained HTML page (every image a
data URI that decodes to a PNG, nothing referred to outside the page), its Markdown twin with
the same tables and the plots beside it, the published figures beside ours with disagreements
beyond the threshold marked in text, cells that are not done shown with their reason, the
recipe's report: specs drawn from any numeric field, provenance per cell, and bad input as
clear errors."""
from __future__ import annotations

import base64
import io
import json
import re
import statistics

import pytest
from PIL import Image
from report_fixtures import (
    FAIL_REASON,
    RECIPE,
    SKIP_REASON,
    TOP1,
    markdown_tables,
    read_page,
    write_toy_study,
)

from squeezelab.workflows.report import (
    Figure,
    ReportError,
    build_report,
    study_command,
    write_report,
)
from squeezelab.workflows.report.values import Stat, format_value
from squeezelab.workflows.studies.results import cell_seconds, group_records
from squeezelab.workflows.studies.runner import describe_record

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy study's folder and its report (written once: matplotlib takes a moment)."""
    root = tmp_path_factory.mktemp("toy")
    out = write_toy_study(root)
    files = write_report([out], root / "report")
    html = files.html.read_text()
    return {"out": out, "files": files, "html": html, "page": read_page(html),
            "md": files.markdown.read_text(), "root": root}


def _table(tables, first_header):
    """The table whose first column is ``first_header`` (the first such)."""
    return next(t for t in tables if t and t[0][0] == first_header)


def test_every_image_is_an_embedded_png(toy):
    images = [attrs for tag, attrs in toy["page"].tags if tag == "img"]
    assert len(images) == 4  # line, bar, curves, scatter (the two tables are tables)
    for attrs in images:
        src = attrs["src"]
        assert src.startswith("data:image/png;base64,"), src[:60]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        assert attrs["alt"]


def test_the_page_refers_to_nothing_outside_itself(toy):
    # the toy's source has a URL: the page writes it as text without a scheme, never a link
    html, page = toy["html"], toy["page"]
    assert "http://" not in html and "https://" not in html
    assert "example.org/paper.pdf" in html
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for name, value in attrs.items():
            value = (value or "").strip()
            if name in ("href", "src", "action", "srcset", "poster", "data"):
                assert value.startswith(("#", "data:")), (tag, name, value[:60])
            assert not value.startswith("//") and "url(" not in value, (tag, name, value)
    style = page.style
    assert style.strip() and "@import" not in style and "@font-face" not in style
    for url in re.findall(r"url\(([^)]*)\)", style):
        assert url.strip("'\" ").startswith("data:"), url
    # every internal link lands on an id of the page
    ids = {attrs["id"] for _, attrs in page.tags if attrs.get("id")}
    hrefs = [attrs["href"][1:] for tag, attrs in page.tags if tag == "a"]
    assert hrefs and set(hrefs) <= ids


def test_tables_are_filled_with_the_results_values(toy):
    tables = toy["page"].tables
    for table in tables:
        width = len(table[0])
        for row in table:
            assert len(row) == width and all(cell for cell in row), row
    # the comparison: group a over its two seeds, mean ± sample stdev, beside the published
    compare = _table(tables, "cells")
    a = next(r for r in compare[1:] if r[0] == "a")
    values = [100 * TOP1["a-s0"], 100 * TOP1["a-s1"]]
    mean, stdev = statistics.mean(values), statistics.stdev(values)
    assert a[compare[0].index("ours")] == f"{mean:.2f} ± {stdev:.2f}%"
    assert a[compare[0].index("published")] == "61.5%"
    assert a[compare[0].index("difference")] == f"{mean - 61.5:+.2f} pts"
    assert a[compare[0].index("from cells")] == "#1 #4"
    # the spec's table: every asked-for field, a size equal across seeds written once
    sizes = _table(tables, "sr")
    assert sizes[0][:7] == ["sr", "seeds", "parameters", "fp32 size", "test top-1",
                            "published top-1", "metrics.bits_per_weight"]
    assert sizes[1][:7] == ["a", "0, 1", "1,000", "4,000 B", f"{mean:.2f} ± {stdev:.2f}%",
                            "61.5% (CIFAR-10)", "8"]


def test_a_disagreement_beyond_the_threshold_is_marked_in_text(toy, tmp_path):
    tables = toy["page"].tables
    compare = _table(tables, "cells")
    check = compare[0].index("check")
    by_name = {r[0]: r for r in compare[1:]}
    assert by_name["b"][check] == "DIFFERS by more than 5 pts"    # 30% against 70%
    assert by_name["a"][check] == "within 5 pts"                  # 61% against 61.5%
    assert "flag" in toy["page"].cell_classes  # and coloured, besides the text
    assert "1 of 2 published figures differ from ours by more than 5" in toy["html"]
    # the threshold is the caller's
    report = build_report([toy["out"]], threshold=50)
    rows = report.studies[0].comparison.rows
    assert not any(v.flag for row in rows for v in row)
    with pytest.raises(ValueError, match="threshold must be a non-negative number"):
        build_report([toy["out"]], threshold=-1)


def test_cells_not_done_are_shown_with_their_reason(toy):
    tables = toy["page"].tables
    cells = _table(tables, "#")
    header = cells[0]
    rows = {r[header.index("cell")]: r for r in cells[1:]}
    assert len(rows) == 6  # every cell of the plan, none left out
    assert rows["c-s0"][header.index("status")] == "skipped"
    assert rows["c-s0"][header.index("reason")] == SKIP_REASON
    assert rows["b-s1"][header.index("reason")] == FAIL_REASON
    assert rows["c-s1"][header.index("status")] == "pending"
    # where a row stands for cells that are not all done, it says which and why
    compare = _table(tables, "cells")
    c = next(r for r in compare[1:] if r[0] == "c")
    assert c[compare[0].index("ours")] == \
        f"0 of 2 cells done; c-s0 skipped: {SKIP_REASON}; c-s1 pending"
    b = next(r for r in compare[1:] if r[0] == "b")
    assert f"1 of 2 cells done; b-s1 failed: {FAIL_REASON}" in b[compare[0].index("ours")]
    assert "3 of 6 cells are not done (1 skipped, 1 failed, 1 pending)" in toy["html"]
    # a plot names what it leaves out
    assert "Not drawn: c (0 of 2 cells done; c-s0 skipped" in toy["html"]
    # and the Markdown says the same
    assert SKIP_REASON in toy["md"] and FAIL_REASON in toy["md"]


def test_markdown_twin_has_the_same_tables_and_its_images_exist(toy):
    html_tables = toy["page"].tables
    md_tables = markdown_tables(toy["md"])
    assert md_tables == html_tables
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", toy["md"])
    assert len(links) == 4
    for link in links:
        assert not link.startswith(("/", "http")) and "//" not in link
        path = toy["files"].markdown.parent / link
        assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert sorted(p.name for p in toy["files"].figures) == sorted(links)


def test_every_cell_has_its_provenance(toy):
    cells = _table(toy["page"].tables, "#")
    header = cells[0]
    first = cells[1]
    recipe = str(toy["root"] / "toy.yaml")
    assert first[header.index("command")] == (
        f"squeezelab study {recipe} --budget smoke --out {toy['out']} --cell 1")
    assert first[header.index("run directory")] == str(toy["out"] / "runs" / "a-s0")
    assert first[header.index("machine")] == "Test CPU 3000, 2 cores"
    assert "Test CPU 3000, 2 cores, avx2, torch 2.13.0" in toy["html"]  # the facts, in full
    assert first[header.index("git commit")] == "0123456789ab"
    skipped = next(r for r in cells[1:] if r[1] == "c-s0")
    assert skipped[header.index("run directory")] == "—"  # a skipped cell never had one
    # the cells' anchors are what the tables' "#k" link to
    ids = {attrs.get("id") for _, attrs in toy["page"].tags}
    assert {f"toy-smoke-cell-{k}" for k in range(1, 7)} <= ids


def test_the_command_carries_seeds_and_overrides(toy):
    results = json.loads((toy["out"] / "results.json").read_text())
    # the recipe's own seeds: no --seeds; other seeds or --set values: given
    assert "--seeds" not in study_command(results)
    changed = {**results, "seeds": [5], "overrides": {"download": True, "lr": 0.01,
                                                      "schedule": "cosine"}}
    command = study_command(changed, cell=2)
    assert command.endswith("--seeds 5 --set download=true --set lr=0.01 --set "
                            "schedule=cosine --cell 2")


def test_a_recipe_path_of_the_checkout_is_found_from_anywhere(tmp_path, monkeypatch):
    # studies record the recipe as given, usually relative to the checkout's root
    monkeypatch.chdir(tmp_path)
    results = {"recipe": "recipes/studies/bypass.yaml", "budget": "smoke", "out_dir": "o",
               "seeds": [0, 1, 2], "overrides": {}}
    assert study_command(results) == \
        "squeezelab study recipes/studies/bypass.yaml --budget smoke --out o"
    assert study_command({**results, "seeds": [0]}).endswith("--out o --seeds 0")
    # a recipe that is nowhere: the seeds are given, so the command stands on its own
    assert study_command({**results, "recipe": "gone.yaml"}).endswith("--seeds 0 1 2")


def test_plots_draw_any_numeric_field_with_its_numbers(toy):
    report = build_report([toy["out"]])
    figures = {b.title: b for b in report.studies[0].blocks if isinstance(b, Figure)}
    scatter = figures["Bits per weight against size"]
    rows = [[v.full_text() for v in row] for row in scatter.data.rows]
    # one point per done cell: a-s0, b-s0, a-s1 (aggregate: cells), x in bytes, y as given
    assert rows == [["a-s0", "4,000 B", "8", "#1"], ["b-s0", "8,000 B", "4.5", "#2"],
                    ["a-s1", "4,000 B", "8", "#4"]]
    line = figures["Top-1 against file size"]
    assert line.data.columns == ["point", "file size", "test top-1", "from cells"]
    assert [r[0].text for r in line.data.rows] == ["a", "b", "a (published top-1 (CIFAR-10))",
                                                   "b (published top-1 (CIFAR-10))"]
    bar = figures["Top-1 by variant"]
    assert bar.png is not None and any("error bars" in n for n in bar.notes)
    curves = figures["Test top-1 per epoch"]
    assert [r[0].text for r in curves.data.rows] == ["a (a-s0)", "b (b-s0)", "a (a-s1)"]


def test_a_study_with_nothing_done_says_so(tmp_path):
    out = write_toy_study(tmp_path)
    results = json.loads((out / "results.json").read_text())
    for cell in results["cells"]:
        cell.update(status="pending")
        for key in ("metrics", "curves", "parameters", "fp32_bytes", "file_bytes", "reason"):
            cell.pop(key, None)
    (out / "results.json").write_text(json.dumps(results))
    report = build_report([out])
    figures = [b for b in report.studies[0].blocks if isinstance(b, Figure)]
    assert figures and all(f.png is None for f in figures)
    assert all("Nothing to draw yet" in f.notes[0] for f in figures)
    files = write_report([out], tmp_path / "r")
    assert files.figures == [] and "<img" not in files.html.read_text()


def test_format_value_units():
    assert format_value("metrics.test_top1", 0.6543) == "65.43%"
    assert format_value("metrics.test_top1", Stat((0.5, 0.7))) == "60.00 ± 14.14%"
    assert format_value("fp32_bytes", Stat((4_800_000, 4_800_000))) == "4.80 MB"
    assert format_value("file_bytes", 12_345) == "12.3 kB"
    assert format_value("macs", 62_900_000) == "62.9M"
    assert format_value("parameters", 727_594) == "727,594"
    assert format_value("metrics.bits_per_weight", 4.5) == "4.5"
    assert format_value("variants.sr", None) == "—"


def test_a_folder_of_studies_and_duplicate_inputs(tmp_path):
    write_toy_study(tmp_path / "one")
    write_toy_study(tmp_path / "two")
    report = build_report([tmp_path, tmp_path / "one" / "toy-out" / "results.json"])
    # two studies found below the folder; the file named again is read once; ids unique
    assert [s.id for s in report.studies] == ["toy-smoke", "toy-smoke-2"]


@pytest.mark.parametrize("make,error,message", [
    (lambda p: p / "missing.json", FileNotFoundError, "does not exist"),
    (lambda p: _write(p / "x.json", "not json {"), ReportError, "not readable JSON"),
    (lambda p: _write(p / "x.json", '{"a": 1}'), ReportError,
     "schema is None, expected 'squeezelab-study-results'"),
    (lambda p: _write(p / "x.json", '{"name": "a-s0", "status": "done"}'), ReportError,
     "is one cell's record"),
    (lambda p: _write(p / "x.json", "[1, 2]"), ReportError, "expected a JSON object"),
    (lambda p: (p / "empty").mkdir() or p / "empty", ReportError, "holds no results.json"),
    (lambda p: (p / "s" / "cells").mkdir(parents=True) or p / "s", ReportError,
     "holds cell results but no results.json: merge them first"),
])
def test_bad_input_gives_a_clear_error(tmp_path, make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build_report([make(tmp_path)])


def test_a_results_file_with_a_bad_report_spec_names_it(tmp_path):
    out = write_toy_study(tmp_path, report=[{"plot": "table"}, {"plot": "pie"}])
    with pytest.raises(ReportError, match=r"results\.json: report\[1\]: plot must be one of"):
        build_report([out])
    out = write_toy_study(tmp_path, schema_version=99)
    with pytest.raises(ReportError, match="schema_version 99"):
        build_report([out])


def _write(path, text):
    path.write_text(text)
    return path


def test_a_published_size_sits_beside_the_file_our_cells_wrote_else_their_fp32_size():
    from squeezelab.workflows.report.build import _our_size
    from squeezelab.workflows.report.values import group_units

    def cell(name, seed, **fields):
        return {"name": f"{name}-s{seed}", "kind": "compress", "variants": {"cell": name},
                "status": "done", "seed": seed, "fp32_bytes": 2_960_000, **fields}

    compressed, dense = group_units([
        cell("six_bit", 2, compression={"file_bytes": 243_175}),
        cell("six_bit", 3, compression={"file_bytes": 243_175}),
        {**cell("fp32", 2), "kind": "train"}])
    assert _our_size(compressed).text == "243.2 kB"
    assert _our_size(dense).text == "2.96 MB (fp32)"


def test_a_recipe_changed_since_its_results_is_flagged_but_not_a_comment_edit(tmp_path):
    from squeezelab.workflows.report.build import _recipe_fact
    from squeezelab.workflows.studies.results import file_sha256, settings_sha256

    recipe = tmp_path / "toy.yaml"
    recipe.write_text("# the toy\nstudy: toy\nseeds: [0, 1]\n")
    results = {"recipe": str(recipe), "recipe_sha256": file_sha256(recipe),
               "recipe_settings_sha256": settings_sha256(recipe)}
    older = {k: v for k, v in results.items() if k != "recipe_settings_sha256"}
    assert "has changed" not in _recipe_fact(results)
    recipe.write_text("# the toy, result recorded\nstudy: toy\nseeds:\n  - 0\n  - 1\n")
    assert "has changed" not in _recipe_fact(results)
    assert "has changed since this run" in _recipe_fact(older)  # only its bytes' hash to go by
    recipe.write_text("study: toy\nseeds: [0, 1, 2]\n")
    assert f"{recipe} has changed since this run" in _recipe_fact(results)


def test_a_change_to_another_budget_does_not_flag_a_budgets_results(tmp_path):
    from squeezelab.workflows.report.build import _recipe_fact
    from squeezelab.workflows.studies.results import settings_sha256

    recipe = tmp_path / "toy.yaml"
    recipe.write_text("study: toy\nbudgets:\n  cpu: {epochs: 15}\n  full: {epochs: 30}\n")
    full = {"recipe": str(recipe), "budget": "full",
            "recipe_settings_sha256": settings_sha256(recipe),
            "budget_settings_sha256": settings_sha256(recipe, "full")}
    cpu = {**full, "budget": "cpu", "budget_settings_sha256": settings_sha256(recipe, "cpu")}
    assert settings_sha256(recipe, "cpu") != settings_sha256(recipe, "full")
    recipe.write_text("study: toy\nbudgets:\n  cpu: {epochs: 10}\n  full: {epochs: 30}\n")
    assert "has changed" not in _recipe_fact(full)
    assert f"{recipe} has changed for the cpu budget since this run" in _recipe_fact(cpu)
    # a change every budget reads flags both
    recipe.write_text("study: toy\nlr: 0.1\nbudgets:\n  cpu: {epochs: 10}\n"
                      "  full: {epochs: 30}\n")
    assert "has changed for the full budget" in _recipe_fact(full)


def test_the_cost_table_sums_core_time_and_estimates_the_rest(tmp_path):
    out = write_toy_study(tmp_path)
    results = json.loads((out / "results.json").read_text())
    # done a-s0, b-s0, a-s1 and failed b-s1 cost time; c-s0 skipped, c-s1 pending
    for cell, seconds in zip(results["cells"], [3600, 1800, 0, 2400, 600, 0]):
        if "seconds" in cell:
            cell["seconds"] = seconds
            cell["train_seconds"] = min(seconds, 100)
            # as recorded before cells kept their CPU time: wall time is all there is
            cell.pop("cpu_seconds", None)
            cell.pop("train_cpu_seconds", None)
    results["cells"][0]["machine"] = {**results["cells"][0]["machine"], "threads": 2}
    # b-s0 was resumed: its finishing process ran 60 s, its epochs 1,800 s over both
    results["cells"][1].update(seconds=60, train_seconds=1800, resumed=True)
    (out / "results.json").write_text(json.dumps(results))
    report = build_report([out])
    rows = [[v.text for v in row] for row in report.cost.rows]
    # core-time: 2 x 3600 + 1800 + 2400 + 600 = 12,000 s over 4 finished cells; the pending
    # one is estimated at their mean, 3,000 s
    upper = "wall x threads (upper bound)"
    assert rows[0][:7] == ["toy", "smoke", "4 of 6", "3 h 20 min", upper, "1", "50 min"]
    assert rows[-1][:7] == ["all", "—", "4", "3 h 20 min", upper, "1", "50 min"]
    assert rows[0][7:] == ["—", "Test CPU 3000"]
    # a cell that trained on a GPU: the machines say so beside the host's CPU, and its
    # wall time (2,400 s) is the GPU's
    results["cells"][3]["machine"] = {**results["cells"][3]["machine"], "gpu": "NVIDIA H200"}
    (out / "results.json").write_text(json.dumps(results))
    rows = [[v.text for v in row] for row in build_report([out]).cost.rows]
    assert rows[0][7:] == ["40 min", "Test CPU 3000; Test CPU 3000 + GPU NVIDIA H200"]
    assert rows[-1][7] == "40 min"
    files = write_report([out], tmp_path / "r")
    assert "What the studies cost" in files.html.read_text()
    assert "| toy | smoke | 4 of 6 | 3 h 20 min |" in files.markdown.read_text().replace("`", "")


def test_a_resumed_cell_is_shown_with_its_whole_time_not_its_last_process(tmp_path):
    out = write_toy_study(tmp_path)
    results = json.loads((out / "results.json").read_text())
    # a-s0 was cut and resumed: the process that finished it ran 66 s, its 30 epochs 464 s
    results["cells"][0].update(seconds=66.0, train_seconds=464.0, resumed=True)
    results["cells"][3].update(seconds=500.0, train_seconds=480.0)  # one process: its wall
    assert cell_seconds(results["cells"][0]) == 464.0
    assert cell_seconds(results["cells"][3]) == 500.0
    assert cell_seconds({"status": "pending"}) is None
    group = next(g for g in group_records(results["cells"]) if g["name"] == "a")
    assert group["seconds"]["min"] == 464.0 and group["seconds"]["max"] == 500.0
    assert ", 464 s," in describe_record(results["cells"][0])
    (out / "results.json").write_text(json.dumps(results))
    cells = _table(read_page(write_report([out], tmp_path / "r").html.read_text()).tables, "#")
    header = cells[0]
    resumed = next(r for r in cells[1:] if r[1] == "a-s0")
    assert resumed[header.index("seconds")] == format_value("seconds", 464.0)


def test_the_cost_table_counts_recorded_cpu_time_not_the_wait(tmp_path):
    out = write_toy_study(tmp_path)
    results = json.loads((out / "results.json").read_text())
    finished = [c for c in results["cells"] if c["status"] in ("done", "failed")]
    for cell, (wall, cpu) in zip(finished, [(3600, 1200), (60, 30), (2400, 2300), (600, None)]):
        cell.update(seconds=wall, train_seconds=min(wall, 100), cpu_seconds=cpu,
                    train_cpu_seconds=None)
        if cpu is None:
            del cell["cpu_seconds"]
    # two threads do not multiply CPU time: it already counts every thread
    finished[0]["machine"] = {**finished[0]["machine"], "threads": 2}
    # b-s0 was resumed: 30 s of CPU in its last process, 1,500 s in its epochs over both
    finished[1].update(train_cpu_seconds=1500, resumed=True)
    (out / "results.json").write_text(json.dumps(results))
    rows = [[v.text for v in row] for row in build_report([out]).cost.rows]
    # 1,200 + 1,500 + 2,300 + 600 (wall, the one without CPU time) = 5,600 s = 1 h 33 min
    assert rows[0][:5] == ["toy", "smoke", "4 of 6", "1 h 33 min",
                           "CPU time for 3, wall x threads for 1"]
    for cell in finished[3:]:
        cell["cpu_seconds"] = 600
    (out / "results.json").write_text(json.dumps(results))
    assert build_report([out]).cost.rows[-1][4].text == "CPU time"


def _with_histograms(out, report):
    """The toy study with weight histograms in its done cells but a-s1 (as a DSD cell records
    them: per phase the counts over [-limit, limit]) and ``report`` as its specs."""
    results = json.loads((out / "results.json").read_text())
    for cell in results["cells"]:
        if cell["status"] == "done" and cell["name"] != "a-s1":
            sparse = 400 if cell["name"] == "b-s0" else 100
            cell["histograms"] = {"layer": "features.0.weight", "phases": [
                {"phase": "dense", "epoch": 5, "limit": 0.5, "zeros": 0, "numel": 1000,
                 "counts": [100, 200, 400, 200, 100]},
                {"phase": "sparse", "epoch": 8, "limit": 0.5, "zeros": sparse, "numel": 1000,
                 "counts": [150, 50, 600, 50, 150]}]}
    results["report"] = report
    (out / "results.json").write_text(json.dumps(results))
    return out


def test_histograms_draw_each_phase_and_where_keeps_the_cells_it_names(tmp_path):
    out = _with_histograms(write_toy_study(tmp_path), [
        {"plot": "histograms", "title": "conv1 by phase", "series": ["variants.sr"],
         "where": {"sr": ["a", "b"]}},
        {"plot": "table", "title": "only a", "rows": ["seed"], "y": "metrics.test_top1",
         "where": {"sr": "a"}}])
    blocks = {b.title: b for b in build_report([out]).studies[0].blocks}
    hist = blocks["conv1 by phase"]
    assert hist.png is not None and hist.png.startswith(PNG_SIGNATURE)
    assert hist.data.columns == ["cell", "layer", "zeros at the end of dense",
                                 "zeros at the end of sparse", "from cells"]
    assert [[v.full_text() for v in r] for r in hist.data.rows] == [
        ["a", "features.0.weight", "0.0% (epoch 5)", "10.0% (epoch 8)", "#1"],
        ["b", "features.0.weight", "0.0% (epoch 5)", "40.0% (epoch 8)", "#2"]]
    # a-s1 is done but has no histograms: named as left out, not drawn
    assert any("a-s1 (no weight histograms" in n for n in hist.notes)
    assert [r[0].text for r in blocks["only a"].rows] == ["0", "1"]
    files = write_report([out], tmp_path / "r")
    assert "conv1 by phase" in files.html.read_text()


def test_a_where_naming_no_axis_or_variant_of_the_study_is_refused():
    from squeezelab.workflows.studies.recipe import StudyConfig, StudyError

    recipe = json.loads(json.dumps(RECIPE))
    for where, message in (({"seed": 0}, "report\\[0\\]: where: the study has no axis 'seed'"),
                           ({"sr": ["a", "z"]}, "axis 'sr' has no variant 'z'")):
        recipe["report"] = [{"plot": "histograms", "where": where}]
        with pytest.raises(StudyError, match=message):
            StudyConfig.from_dict(recipe)


def test_a_histograms_plot_with_x_or_another_y_is_refused():
    from squeezelab.workflows.studies.errors import StudyError
    from squeezelab.workflows.studies.report_spec import ReportSpec

    with pytest.raises(StudyError, match="a histograms plot draws the cells' recorded"):
        ReportSpec(plot="histograms", x="epoch")
    with pytest.raises(StudyError, match="where must map axes to a variant or a list"):
        ReportSpec(plot="table", where=["sr"])
    assert ReportSpec(plot="histograms").y == ["histograms"]


def _rerun_folder(root, results, **changes):
    """``root/toy/smoke/cells/*.json``: another run's records of ``results``' finished cells,
    as a working day's --keep copy holds them, with CPU time and other places for its files;
    ``changes`` (cell name -> keys) alter single records."""
    cells = root / "toy" / "smoke" / "cells"
    cells.mkdir(parents=True)
    for cell in results["cells"]:
        if cell["status"] in ("done", "failed"):
            rerun = json.loads(json.dumps(cell))
            rerun["config"]["out_dir"] = "/elsewhere/runs"
            rerun.update(cpu_seconds=100.0 * cell["index"], **changes.get(cell["name"], {}))
            (cells / f"{cell['name']}.json").write_text(json.dumps(rerun))
    return root


def test_the_cost_table_takes_a_reruns_cpu_time_for_the_same_cells_only(tmp_path):
    out = write_toy_study(tmp_path / "s")
    results = json.loads((out / "results.json").read_text())
    for cell in results["cells"]:  # recorded with wall time only, 1,000 s each
        if "seconds" in cell:
            cell.update(seconds=1000.0, train_seconds=1000.0)
    # a setting squeezelab gained after this run: in the rerun's record only, and off
    (out / "results.json").write_text(json.dumps(results))
    gpu = {**results["cells"][3]["machine"], "gpu": "NVIDIA H200"}
    reruns = _rerun_folder(tmp_path / "day", results, **{
        "a-s0": {"config": {**results["cells"][0]["config"], "out_dir": "/x", "cutout": 0}},
        "b-s0": {"config": {**results["cells"][1]["config"], "epochs": 2}},  # other work
        "a-s1": {"machine": gpu},  # a GPU's seconds are not a CPU's cost
    })
    without = [[v.text for v in row] for row in build_report([out]).cost.rows]
    assert without[0][3:5] == ["1 h 07 min", "wall x threads (upper bound)"]
    rows = [[v.text for v in row] for row in
            build_report([out], costs_from=[reruns]).cost.rows]
    # a-s0 (index 1) and b-s1 (index 5) take the rerun's 100 s and 500 s; b-s0 and a-s1
    # keep their 1,000 s of wall time: 2,600 s
    assert rows[0][3:5] == ["43 min", "a rerun's CPU time for 2, wall x threads for 2"]
    assert rows[0][8] == "Test CPU 3000; Test CPU 3000 (rerun)"
    assert rows[-1][4] == "a rerun's CPU time for 2, wall x threads for 2"
    assert "--costs-from" in build_report([out], costs_from=[reruns]).cost.notes[0]
    # a cell that recorded its own CPU time keeps it
    results["cells"][0]["cpu_seconds"] = 60.0
    (out / "results.json").write_text(json.dumps(results))
    rows = [[v.text for v in row] for row in
            build_report([out], costs_from=[reruns]).cost.rows]
    assert rows[0][4] == "CPU time for 1, a rerun's CPU time for 1, wall x threads for 2"
    assert rows[0][3] == "43 min"  # 60 + 500 + 2 x 1,000 = 2,560 s


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "missing", "not a folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no cell records"),
    (lambda p: (p / "d" / "cells").mkdir(parents=True)
     or (p / "d" / "cells" / "x.json").write_text("{no") and p / "d",
     "x.json is not a cell record: it is not readable JSON"),
    (lambda p: (p / "d" / "cells").mkdir(parents=True)
     or (p / "d" / "cells" / "x.json").write_text('{"name": "a"}') and p / "d",
     "x.json is not a cell record: expected a JSON object with a name and a status"),
])
def test_costs_from_refuses_what_is_not_cell_records(tmp_path, make, message):
    out = write_toy_study(tmp_path / "s")
    with pytest.raises(ReportError, match=re.escape(message)):
        build_report([out], costs_from=[make(tmp_path)])

"""``squeezelab report``: the page and its Markdown twin from a study that really ran (the
results JSON as ``squeezelab study`` writes it today), from a folder, the threshold passed
through, and bad input as one ``error:`` line with exit status 2."""
from __future__ import annotations

import json
import re

import pytest
import yaml
from model_configs import TINY
from report_fixtures import read_page, write_toy_study

from squeezelab.cli import build_parser, main
from squeezelab.cli.report_commands import THRESHOLD_HELP_POINTS
from squeezelab.workflows.report import DEFAULT_THRESHOLD_POINTS
from squeezelab.workflows.report.cost import core_hours_text


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, cifar_tree):
    """A two-cell study of a tiny model, really run (one epoch on 100 images), and its
    output folder; one published value, far from what one epoch reaches."""
    root = tmp_path_factory.mktemp("tiny-study")
    recipe = {
        "study": "report_tiny",
        "title": "Two activations of a tiny SqueezeNet",
        "source": {"paper": "A test", "arxiv": "0000.00000", "where": "Table 0"},
        "base": {"data": str(cifar_tree), "model": "squeezenet_cifar",
                 "model_args": dict(TINY), "epochs": 1, "batch_size": 50,
                 "optimizer": "adamw", "lr": 0.003, "limit_train": 100, "limit_test": 50,
                 "precision": "fp32", "channels_last": False, "progress": False},
        "axes": {"act": [{"name": "relu", "model_args": {"activation": "relu"}},
                         {"name": "tanh", "model_args": {"activation": "tanh"}}]},
        "budgets": {"smoke": {}, "cpu": {"epochs": 2}, "full": {"epochs": 3}},
        "published": {"values": [{"where": {"act": "tanh"}, "percent": 99.0}]},
        "report": [{"plot": "table", "rows": ["variants.act"],
                    "y": ["parameters", "file_bytes", "metrics.test_top1"]},
                   {"plot": "curves", "y": "train_loss", "series": ["variants.act"]}],
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = root / "out"
    assert main(["study", str(path), "--budget", "smoke", "--out", str(out)]) == 0
    return path, out


def test_report_of_a_study_that_ran(tiny_study, tmp_path, capsys):
    recipe, out = tiny_study
    capsys.readouterr()
    assert main(["report", str(out), "-o", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "study: Two activations of a tiny SqueezeNet" in printed
    assert f"html: {tmp_path / 'r' / 'report.html'}" in printed
    html = (tmp_path / "r" / "report.html").read_text()
    page = read_page(html)
    assert sum(tag == "img" for tag, _ in page.tags) == 1  # the curves
    for table in page.tables:
        assert all(cell for row in table for cell in row)
    # one epoch is far from 99%: marked; the command of each cell reproduces it
    assert "DIFFERS by more than 5 pts" in html
    assert f"squeezelab study {recipe} --budget smoke --out {out} --cell 2" in html
    md = (tmp_path / "r" / "report.md").read_text()
    assert "![curves plot: train loss against epoch](report_tiny-smoke-2.png)" in md
    assert (tmp_path / "r" / "report_tiny-smoke-2.png").is_file()


def test_threshold_is_passed_through(tmp_path, capsys):
    out = write_toy_study(tmp_path)
    assert main(["report", str(out / "results.json"), "-o", str(tmp_path / "r"),
                 "--threshold", "50"]) == 0
    html = (tmp_path / "r" / "report.html").read_text()
    assert "DIFFERS by more than" not in html and "within 50 pts" in html
    assert "more than 50 percentage points are marked DIFFERS" in re.sub(r"\s+", " ", html)


def test_the_help_names_the_library_default():
    assert THRESHOLD_HELP_POINTS == DEFAULT_THRESHOLD_POINTS
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert f"(unset: {DEFAULT_THRESHOLD_POINTS:g})" in sub.choices["report"].format_help()


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "x.json").write_text("{not json") and p / "x.json", "not readable JSON"),
    (lambda p: (p / "x.json").write_text('{"schema": "other"}') and p / "x.json",
     "its schema is 'other', expected 'squeezelab-study-results'"),
    (lambda p: (p / "d").mkdir() or p / "d", "holds no results.json"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, make, message):
    assert main(["report", str(make(tmp_path)), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "r" / "report.html").exists()


def test_costs_from_counts_a_rerun_of_a_study_that_ran(tiny_study, tmp_path, capsys):
    """A study's results recorded with wall time only (as before cells kept their CPU time),
    and the same study's cell records as the rerun: the cost table counts their CPU time."""
    _, out = tiny_study
    results = json.loads((out / "results.json").read_text())
    cpu = sum(c["cpu_seconds"] for c in results["cells"])
    for cell in results["cells"]:
        del cell["cpu_seconds"]
        cell.pop("train_cpu_seconds", None)
    wall_only = tmp_path / "wall_only.json"
    wall_only.write_text(json.dumps(results))
    assert main(["report", str(wall_only), "-o", str(tmp_path / "r"),
                 "--costs-from", str(out)]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| `report_tiny`"))
    assert f"| 2 of 2 | {core_hours_text(cpu)} | a rerun's CPU time |" in row, row
    assert main(["report", str(wall_only), "-o", str(tmp_path / "r2"),
                 "--costs-from", str(tmp_path / "nowhere")]) == 2
    assert "--costs-from" in capsys.readouterr().err

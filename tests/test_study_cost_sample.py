"""benchmarks/study_cost_sample.py: rerun cells set beside their recorded results, ratios exact."""
import json

import pytest
from benchmark_scripts import load_benchmark

EPYC = {"cpu": "AMD EPYC", "cpu_flags": ["avx2", "avx512f", "avx512_bf16"]}
XEON = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_flags": ["avx2", "amx_bf16"]}


def cell(name, seconds, machine, top1, status="done"):
    return {"name": name, "kind": "train", "status": status, "seconds": seconds,
            "cpu_seconds": seconds - 2, "machine": machine, "metrics": {"test_top1": top1}}


def write_study(tmp_path, study, recorded_cells, rerun_cells):
    recorded = tmp_path / "recorded"
    recorded.mkdir(exist_ok=True)
    (recorded / f"{study}_cpu.json").write_text(json.dumps({"study": study,
                                                            "cells": recorded_cells}))
    rerun = tmp_path / "sample" / study
    (rerun / "cells").mkdir(parents=True)
    (rerun / "results.json").write_text(json.dumps({"study": study}))
    for c in rerun_cells:
        (rerun / "cells" / f"{c['name']}.json").write_text(json.dumps(c))
    return recorded, rerun


def test_rerun_cells_are_set_beside_their_records(tmp_path):
    compare = load_benchmark("study_cost_sample").compare
    recorded, bypass = write_study(
        tmp_path, "bypass",
        [cell("simple-s0", 1200.0, EPYC, 0.57), cell("vanilla-s0", 99, EPYC, 0.5)],
        [cell("simple-s0", 600.0, EPYC, 0.56), cell("vanilla-s0", 50, EPYC, 0.5, "running")])
    _, course = write_study(tmp_path, "course_table1", [cell("e2-s1", 4000.0, XEON, 0.68)],
                            [cell("e2-s1", 1600.0, EPYC, 0.67)])
    result = compare([bypass, course], recorded)
    rows = {r["cell"]: r for r in result["cells"]}
    assert set(rows) == {"simple-s0", "e2-s1"}  # the unfinished rerun is left out
    assert rows["simple-s0"]["ratio"] == 0.5 and rows["simple-s0"]["same_cpu"]
    assert rows["e2-s1"]["ratio"] == 0.4 and not rows["e2-s1"]["same_cpu"]
    assert rows["e2-s1"]["rerun_cpu_seconds"] == 1598.0 and rows["e2-s1"]["recorded_top1"] == 0.68
    assert result["all"] == {"cells": 2, "recorded_seconds": 5200.0, "rerun_seconds": 2200.0,
                             "ratio": 2200.0 / 5200.0}
    assert result["same_cpu"]["ratio"] == 0.5 and result["other_cpu"]["ratio"] == 0.4


def test_a_rerun_without_its_record_is_refused(tmp_path):
    compare = load_benchmark("study_cost_sample").compare
    recorded, rerun = write_study(tmp_path, "bypass", [cell("vanilla-s0", 99, EPYC, 0.5)],
                                  [cell("complex-s0", 600.0, EPYC, 0.6)])
    with pytest.raises(SystemExit, match="has no finished cell 'complex-s0'"):
        compare([rerun], recorded)
    with pytest.raises(SystemExit, match="no recorded results"):
        compare([rerun], tmp_path / "elsewhere")

"""benchmarks/study_working_day.py: pieces of one study command summed into the machine time
the studies took, top-1 set beside the recorded cells, and an account only once all have ended."""
import json

import pytest
from benchmark_scripts import load_benchmark
from study_fixtures import tiny_recipe, write

EPYC = {"cpu": "AMD EPYC", "cpu_flags": ["avx2", "avx512f", "avx512_bf16"]}
XEON = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_flags": ["avx2", "amx_bf16"]}


def _cell(name, top1, machine, seconds=100.0, cpu=90.0, status="done"):
    return {"name": name, "status": status, "metrics": {"test_top1": top1},
            "machine": machine, "seconds": seconds, "cpu_seconds": cpu}


def _results(path, study, cells):
    path.mkdir(parents=True)
    counts = {"total": len(cells), "done": sum(c["status"] == "done" for c in cells),
              "skipped": sum(c["status"] == "skipped" for c in cells), "failed": 0,
              "pending": sum(c["status"] == "pending" for c in cells)}
    (path / "results.json").write_text(json.dumps({"study": study, "counts": counts,
                                                   "cells": cells}))


def test_the_account_sums_the_pieces_and_sets_top1_beside_the_records(tmp_path):
    day = load_benchmark("study_working_day")
    root, recorded = tmp_path / "day", tmp_path / "recorded"
    _results(root / "bypass" / "cpu", "bypass",
             [_cell("simple-s0", 0.57, EPYC), _cell("vanilla-s0", 0.51, EPYC),
              _cell("e5-s1", None, EPYC, status="skipped")])
    resumed = {**_cell("e3-s1", 0.69, EPYC, seconds=50.0, cpu=45.0), "train_seconds": 250.0,
               "train_cpu_seconds": 240.0}
    _results(root / "course" / "cpu", "course", [_cell("e2-s1", 0.67, EPYC, cpu=None), resumed])
    recorded.mkdir()
    (recorded / "bypass_cpu.json").write_text(json.dumps({"cells": [
        _cell("simple-s0", 0.57, EPYC, seconds=300), _cell("vanilla-s0", 0.50, EPYC)]}))
    (recorded / "course_cpu.json").write_text(json.dumps({"cells": [
        _cell("e2-s1", 0.68, XEON)]}))
    (root / day.PIECES_FILE).write_text(json.dumps([{"wall_seconds": 5 * 3600.0},
                                                     {"wall_seconds": 3 * 3600.0 + 1}]))
    result = day.account(root, "cpu", recorded)
    assert result["wall_seconds"] == 8 * 3600 + 1 and not result["met"]
    # a resumed cell counts the seconds its epochs took in every process, not its last one's
    assert result["cells_seconds"] == 300.0 + 250.0
    assert result["cells_cpu_seconds"] is None  # one cell without CPU time: unknown, not low
    bypass = next(s for s in result["studies"] if s["study"] == "bypass")
    assert bypass["cpu_seconds"] == 180.0 and bypass["counts"]["skipped"] == 1
    top1 = result["top1_against_recorded"]
    assert [(r["cell"], r["same_cpu"]) for r in top1["cells"]] == [
        ("simple-s0", True), ("vanilla-s0", True), ("e2-s1", False)]
    # only cells recorded on the same kind of CPU are expected to score the same
    assert top1["same_cpu_cells"] == 2 and top1["same_cpu_equal"] == 1
    assert abs(top1["same_cpu_max_difference"] - 0.01) < 1e-12


def test_pieces_are_recorded_and_the_account_waits_for_every_cell(tmp_path, cifar_tree,
                                                                    capsys):
    day = load_benchmark("study_working_day")
    recipe = write(tmp_path / "tiny.yaml", tiny_recipe(cifar_tree))
    root, recorded, output = tmp_path / "day", tmp_path / "recorded", tmp_path / "day.json"
    common = ["--out-root", str(root), "--budget", "smoke", "--jobs", "1",
              "--recorded", str(recorded), "--output", str(output)]
    # a piece that fails is recorded with its status, and no account is written
    assert day.main([str(tmp_path / "missing.yaml"), *common]) == 1
    (failed,) = json.loads((root / day.PIECES_FILE).read_text())
    assert failed["exit_code"] == 2 and failed["cells_ended_after"] == 0
    assert "not finished" in capsys.readouterr().out and not output.exists()
    # the study run to its end: the account, with this run's cells as the recorded ones; a
    # study folder of another run under the same root, unfinished, is not this run's
    recorded.mkdir()
    _results(root / "stale" / "smoke", "stale", [_cell("x-s0", None, EPYC, status="pending")])
    assert day.main([str(recipe), *common]) == 0
    first = json.loads(output.read_text())
    assert [s["study"] for s in first["studies"]] == ["tiny"]
    assert [p["exit_code"] for p in first["pieces"]] == [2, 0]
    assert first["pieces"][1]["cells_ended_before"] == 0
    assert first["pieces"][1]["cells_ended_after"] == first["pieces"][1]["cells_total"] == 2
    assert first["wall_seconds"] == sum(p["wall_seconds"] for p in first["pieces"]) > 0
    assert first["met"] and first["studies"][0]["counts"]["done"] == 2
    assert first["cells_cpu_seconds"] > 0
    (recorded / "tiny_smoke.json").write_text((root / "tiny" / "smoke" / "results.json")
                                              .read_text())
    # a second call finds every cell done: one more (short) piece, the same top-1 exactly
    assert day.main([str(recipe), *common]) == 0
    again = json.loads(output.read_text())
    assert len(again["pieces"]) == 3
    assert again["top1_against_recorded"]["same_cpu_equal"] == 2
    assert again["top1_against_recorded"]["same_cpu_max_difference"] == 0


def test_a_ctrl_c_reaches_the_study_once_and_the_piece_is_kept(tmp_path):
    """The study runs in a session of its own: this script's SIGINT is passed on exactly once
    (a second one would stop a cell without saving), and the interrupted piece is recorded."""
    import os
    import signal
    import sys
    import threading
    import time

    day = load_benchmark("study_working_day")
    ready, got = tmp_path / "ready", tmp_path / "got"
    child = ("import os, signal, sys, time\n"
             "n = []\n"
             "signal.signal(signal.SIGINT, lambda *_: n.append(1))\n"
             f"open({str(ready)!r}, 'w').write(str(os.getsid(0) == os.getpid()))\n"
             "deadline = time.monotonic() + 30\n"
             "while not n and time.monotonic() < deadline:\n"
             "    time.sleep(0.01)\n"
             "time.sleep(0.5)\n"
             f"open({str(got)!r}, 'w').write(str(len(n)))\n"
             "sys.exit(130)\n")

    pieces = tmp_path / "day" / day.PIECES_FILE
    running = []

    def press_ctrl_c():
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        # while it runs, the piece is on file with the time so far (a kill loses no more)
        while time.monotonic() < deadline:
            (piece,) = json.loads(pieces.read_text())
            if piece["wall_seconds"] > 0:
                running.append(piece)
                break
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)  # pressed twice: the study still gets one

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=press_ctrl_c, daemon=True).start()
        piece = day.run_piece([sys.executable, "-c", child], tmp_path / "day", "cpu",
                              heartbeat_seconds=0.05)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert ready.read_text() == "True" and got.read_text() == "1"
    assert running[0]["ended_at"] is None and running[0]["exit_code"] is None
    assert piece["exit_code"] == 130 and piece["wall_seconds"] > running[0]["wall_seconds"]
    assert json.loads(pieces.read_text()) == [piece]


def test_schedules_one_study_after_another_and_as_one_pool():
    day = load_benchmark("study_working_day")
    # study a: a model (100 s) two cells start from (50 s each); study b: one 100 s cell
    a = [("a/model", 100.0, []), ("a/q1", 50.0, ["a/model"]), ("a/q2", 50.0, ["a/model"])]
    b = [("b/only", 100.0, [])]
    # one after another: a's cells wait for its model while a core idles, then b runs alone
    assert day.schedule_seconds([a], 2) + day.schedule_seconds([b], 2) == 150.0 + 100.0
    # one pool: b runs beside a's model, then a's two cells side by side
    assert day.schedule_seconds([a, b], 2) == 150.0
    assert day.schedule_seconds([a, b], 1) == 300.0
    with pytest.raises(ValueError, match="cells wait for sources that never run: c/x"):
        day.schedule_seconds([[("c/x", 1.0, ["c/never"])]], 2)


def test_the_estimate_scales_each_cell_by_its_cpu_kinds_sample(tmp_path):
    day = load_benchmark("study_working_day")
    recorded = tmp_path / "recorded"
    recorded.mkdir()

    def cell(index, name, seconds, machine, sources=None):
        c = {"index": index, "name": name, "status": "done", "seconds": seconds,
             "machine": {**machine, "threads": 1}}
        if sources:
            c["sources"] = {"init_from": {"cell": sources}}
        return c

    avx2 = {"cpu": "AMD EPYC", "cpu_flags": ["avx2"]}
    failed = {**cell(4, "q3", 250.0, EPYC, "model"), "status": "failed"}  # its time counts
    (recorded / "q_cpu.json").write_text(json.dumps({
        "schema": "squeezelab-study-results", "study": "q",
        "cells": [cell(1, "model", 1000.0, EPYC), cell(2, "q1", 500.0, XEON, "model"),
                  cell(3, "q2", 9999.0, avx2, "model"), failed,
                  {**cell(5, "q4", 0.0, EPYC, "model"), "status": "pending"}]}))
    # a study none of whose cells the sample covers: the mean of every covered cell
    (recorded / "r_cpu.json").write_text(json.dumps({
        "schema": "squeezelab-study-results", "study": "r",
        "cells": [cell(1, "alone", 5000.0, avx2)]}))
    (recorded / "cost_sample_b.json").write_text(json.dumps({"cells": []}))  # not a study
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps({"cells": [
        {"recorded_machine": EPYC, "rerun_machine": EPYC, "recorded_seconds": 100.0,
         "rerun_seconds": 80.0},
        {"recorded_machine": XEON, "rerun_machine": EPYC, "recorded_seconds": 100.0,
         "rerun_seconds": 40.0}]}))
    result = day.estimate(recorded, "cpu", sample, 2)
    # model 800 s, q1 200 s, q3 200 s, q2 (a CPU kind never rerun) the mean of its study's
    # others: 400 s; r's only cell the mean of those three: 400 s
    assert result["counted_as_their_studys_mean"] == ["q/q2", "r/alone"]
    assert result["cells"] == 5
    assert abs(result["one_core_hours"] * 3600 - 2000.0) < 1e-9
    # one pool: the model beside r's cell, then q1, q2, q3 on the two workers (800 + 400)
    assert abs(result["one_pool_hours"] * 3600 - 1200.0) < 1e-9
    assert abs(result["one_study_after_another_hours"] * 3600 - 1600.0) < 1e-9


def test_the_replay_schedules_the_cells_measured_and_a_rerun_study_replaces_its_first(
        tmp_path, capsys):
    day = load_benchmark("study_working_day")

    def keep(folder, study, cells):
        (folder / study / "cpu" / "cells").mkdir(parents=True)
        for c in cells:
            (folder / study / "cpu" / "cells" / f"{c['name']}.json").write_text(json.dumps(c))

    def cell(index, name, seconds, status="done", **extra):
        return {"index": index, "name": name, "status": status, "seconds": seconds, **extra}

    first, rerun = tmp_path / "day", tmp_path / "rerun"
    # a: a model (resumed: its epochs' 300 s over two processes count, not the last one's
    # 100) that two cells read; a failed cell took its time too; a skipped one none
    keep(first, "a", [cell(1, "model", 100.0, train_seconds=300.0),
                      cell(2, "q1", 100.0, sources={"source": {"cell": "model"}}),
                      cell(3, "q2", 100.0, "failed", sources={"source": {"cell": "model"}}),
                      cell(4, "e5", None, "skipped")])
    keep(first, "b", [cell(1, "only", 1000.0)])
    keep(rerun, "b", [cell(1, "only", 200.0)])  # b at a smaller budget
    result = day.replay([first], "cpu", 2)
    assert result["cells"] == 4 and result["one_core_hours"] * 3600 == 1500.0
    # b's 1000 s beside a's model then q1 and q2 one after the other: b's cell ends last
    assert result["one_pool_hours"] * 3600 == 1000.0
    result = day.replay([first, rerun], "cpu", 2)
    assert result["studies_from"] == {"a": str(first / "a"), "b": str(rerun / "b")}
    # b's 200 s beside the model; then q1 and q2 side by side: 300 + 100
    assert result["one_pool_hours"] * 3600 == 400.0
    assert result["per_study_one_core_hours"] == {"a": 500.0 / 3600, "b": 200.0 / 3600}
    assert result["met"] is True
    out = tmp_path / "replay.json"
    assert day.main(["--replay", str(first), "--replay", str(rerun), "--output", str(out)]) == 0
    assert json.loads(out.read_text())["one_pool_hours"] * 3600 == 400.0
    assert "4 measured cells" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        day.main(["--replay", str(tmp_path / "nothing_here")])
    err = capsys.readouterr().err
    assert "--replay" in err and "no <study>/cpu/cells/ folder" in err


def _chained(data, study="tiny"):
    """The tiny study with its tanh cell starting from the relu cell's model."""
    recipe = tiny_recipe(data, study=study)
    recipe["axes"]["act"][1]["init_from"] = {"cell": {"act": "relu"}}
    return recipe


def test_a_cell_another_still_reads_is_not_kept(tmp_path):
    """Run folders are not kept, so a record stands for its cell only where no cell that will
    run again reads that cell's model."""
    from squeezelab.workflows.studies import plan_study

    day = load_benchmark("study_working_day")
    plan = plan_study(write(tmp_path / "tiny.yaml", _chained(tmp_path / "data")), "smoke",
                      out_root=tmp_path / "day")
    relu, tanh = plan.cells
    plan.cells_dir.mkdir(parents=True)
    assert day.durable_records(plan) == []
    plan.cell_file(relu).write_text(json.dumps({"name": relu.name, "status": "done"}))
    assert day.durable_records(plan) == []  # tanh has not run: it will read relu's checkpoint
    plan.cell_file(tanh).write_text(json.dumps({"name": tanh.name, "status": "failed"}))
    assert day.durable_records(plan) == [plan.cell_file(relu), plan.cell_file(tanh)]
    # kept, then the reader reset: the kept source goes too
    keep = tmp_path / "keep"
    assert day.keep_state([plan], tmp_path / "day", keep) == 2
    plan.cell_file(tanh).unlink()
    assert day.keep_state([plan], tmp_path / "day", keep) == 0
    assert list((keep / "tiny" / "smoke" / "cells").glob("*.json")) == []


def test_a_day_kept_in_a_folder_survives_a_lost_machine(tmp_path, cifar_tree, capsys):
    """Two studies of one day run as two pieces (--only); between them the out-root is lost
    (a fresh machine): --keep brings back the first piece's time and cells, which do not run
    again, and the account covers both studies."""
    day = load_benchmark("study_working_day")
    tiny = write(tmp_path / "tiny.yaml", _chained(cifar_tree))
    other = write(tmp_path / "other.yaml", tiny_recipe(cifar_tree, study="other"))
    root, keep, output = tmp_path / "day", tmp_path / "keep", tmp_path / "day.json"
    common = [str(tiny), str(other), "--out-root", str(root), "--budget", "smoke",
              "--jobs", "1", "--recorded", str(tmp_path / "recorded"), "--output", str(output),
              "--keep", str(keep)]
    with pytest.raises(SystemExit):
        day.main([*common, "--only", str(tmp_path / "missing.yaml")])
    assert "--only" in capsys.readouterr().err and not root.exists()
    assert day.main([*common, "--only", str(tiny)]) == 1
    assert "not finished" in capsys.readouterr().out and not output.exists()
    (first,) = json.loads((keep / day.PIECES_FILE).read_text())
    # the account's totals count the study this piece left for later
    assert (first["cells_ended_before"], first["cells_ended_after"], first["cells_total"]) == \
        (0, 2, 4)
    assert first["machine"]["cpu_flags"] is not None and first["machine"]["cores"] >= 1
    assert sorted(p.name for p in (keep / "tiny" / "smoke" / "cells").iterdir()) == [
        "relu-s0.json", "tanh-s0.json"]
    assert not (keep / "other" / "smoke" / "cells").exists()

    import shutil

    shutil.rmtree(root)  # the machine is gone; the kept folder is not
    assert day.main([*common, "--only", str(other)]) == 0
    assert "restored 2 ended cell(s)" in capsys.readouterr().out
    account = json.loads(output.read_text())
    assert [s["study"] for s in account["studies"]] == ["other", "tiny"]
    assert all(s["counts"]["done"] == 2 for s in account["studies"])
    assert [p["cells_ended_before"] for p in account["pieces"]] == [0, 2]
    assert account["wall_seconds"] == first["wall_seconds"] + account["pieces"][1][
        "wall_seconds"]
    assert account["one_machine_kind"] and len(account["machine_kinds"]) == 1
    assert not (root / "tiny" / "smoke" / "runs").exists()  # its cells did not run again
    assert json.loads((keep / day.PIECES_FILE).read_text()) == account["pieces"]

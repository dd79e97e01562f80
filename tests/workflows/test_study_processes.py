"""Studies run by several processes at once and on a busy machine: a cell claimed by another
live process is not run twice (a dead process's claim is taken over, another host's named),
a crash releases its claim, and the first cell that autotunes pins the study's precision and
memory layout for the rest."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from study_fixtures import EchoSettings, quiet, tiny_recipe, write

from squeezelab.workflows.studies import StudyError, plan_study, register_cell_kind, run_study
from squeezelab.workflows.studies import registry as kind_registry


def _echo_plan(tmp_path, monkeypatch, run):
    """A two-cell study of a kind that runs ``run`` (no training)."""
    monkeypatch.setattr(kind_registry, "_KINDS", dict(kind_registry._KINDS))
    register_cell_kind("echo", settings=EchoSettings,
                       prepare=lambda values, seed, run_dir, where: {**values, "seed": seed})(run)
    recipe = {"study": "echo", "kind": "echo", "base": {"value": 0.25},
              "axes": {"v": [{"name": "a"}, {"name": "b", "value": 0.5}]}, "seeds": [0],
              "budgets": {"smoke": {}, "cpu": {}, "full": {}}}
    return plan_study(write(tmp_path / "echo.yaml", recipe), "smoke", out=tmp_path / "out")


def test_a_cell_another_process_is_running_is_not_run_twice(tmp_path, monkeypatch):
    ran = []
    plan = _echo_plan(tmp_path, monkeypatch, lambda settings, ctx: ran.append(ctx.run_dir.name)
                      or {"metrics": {"test_top1": settings.value}})
    a, b = plan.cells
    plan.cells_dir.mkdir(parents=True)
    # a live process on this host holds cell a (our parent, the test runner's shell or pytest)
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "since": "then"}
    plan.claim_file(a).write_text(json.dumps(holder))
    lines = []
    results = run_study(plan, log=lines.append)
    assert ran == ["b-s0"]
    assert [c["status"] for c in results["cells"]] == ["pending", "done"]
    assert any(f"being run by process {os.getppid()} on this host" in line for line in lines)
    assert plan.claim_file(a).exists() and not plan.claim_file(b).exists()
    # --cell of it skips it too, without an error
    run_study(plan, cell="a-s0", log=quiet)
    assert ran == ["b-s0"]

    # a claim from another host is left alone, and the message says how to clear it
    plan.claim_file(a).write_text(json.dumps({**holder, "host": "elsewhere"}))
    lines.clear()
    run_study(plan, log=lines.append)
    assert ran == ["b-s0"]
    assert any("on host elsewhere" in line and f"delete {plan.claim_file(a)}" in line
               for line in lines)

    # a claim whose process has died on this host is taken over (a killed run)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    plan.claim_file(a).write_text(json.dumps({**holder, "pid": dead.pid}))
    results = run_study(plan, log=quiet)
    assert ran == ["b-s0", "a-s0"]
    assert [c["status"] for c in results["cells"]] == ["done", "done"]
    assert not list(plan.cells_dir.glob("*.lock"))


def test_a_damaged_claim_is_taken_over_and_a_crash_releases_the_claim(tmp_path, monkeypatch):
    def crash(settings, ctx):
        raise RuntimeError("out of memory")

    plan = _echo_plan(tmp_path, monkeypatch, crash)
    a = plan.cells[0]
    plan.cells_dir.mkdir(parents=True)
    plan.claim_file(a).write_text("{half writ")
    # written this instant (its creator may still be writing it): left alone
    lines = []
    run_study(plan, cell="a-s0", log=lines.append)
    assert any("claiming it this instant" in line for line in lines)
    old = time.time() - 120  # unreadable for two minutes: stale, taken over
    os.utime(plan.claim_file(a), (old, old))
    with pytest.raises(RuntimeError, match="out of memory"):
        run_study(plan, log=quiet)
    assert not plan.claim_file(a).exists()


def test_the_first_autotuned_cell_pins_the_studys_speed_settings(tmp_path, cifar_tree,
                                                                  monkeypatch):
    import squeezelab.train.autotune as autotune

    # an autotune whose choice flips with the machine's load: the first timing picks bf16,
    # every later one fp32 channels_last
    calls = []

    def flipping(model, images, labels, precision="auto", channels_last=None, steps=2):
        if precision != "auto" and channels_last is not None:
            return {"precision": precision, "channels_last": channels_last, "timings": {}}
        calls.append(len(calls))
        choice = ("bf16", False) if len(calls) == 1 else ("fp32", True)
        return {"precision": choice[0], "channels_last": choice[1],
                "timings": {f"{choice[0]}/nchw": 0.1, "other": 0.2}}

    monkeypatch.setattr(autotune, "choose_speed_settings", flipping)
    recipe = tiny_recipe(cifar_tree)
    recipe["base"].update(epochs=1, precision="auto", channels_last=None)
    plan = plan_study(write(tmp_path / "tiny.yaml", recipe), "smoke", out=tmp_path / "out")
    results = run_study(plan, progress=False, log=quiet)
    assert calls == [0]  # the second cell did not time anything
    assert [c["auto_settings"] for c in results["cells"]] == [
        {"precision": "bf16", "channels_last": False}] * 2
    pins = json.loads((tmp_path / "out" / "speed.json").read_text())
    (pin,) = pins.values()
    assert pin["precision"] == "bf16" and pin["chosen_by"] == "relu-s0"
    # another study folder chooses afresh (fp32 now), and a cell that sets its own precision
    # keeps it
    recipe["axes"]["act"][1]["precision"] = "bf16"
    plan = plan_study(write(tmp_path / "tiny2.yaml", recipe), "smoke", out=tmp_path / "out2")
    results = run_study(plan, progress=False, log=quiet)
    assert [c["auto_settings"]["precision"] for c in results["cells"]] == ["fp32", "bf16"]
    # a damaged pin file is named, not guessed around
    (tmp_path / "out" / "speed.json").write_text("{nope")
    (tmp_path / "out" / "cells" / "tanh-s0.json").unlink()
    with pytest.raises(StudyError, match=r"speed.json is not readable JSON .* delete it"):
        run_study(plan_study(tmp_path / "tiny.yaml", "smoke", out=tmp_path / "out"),
                  progress=False, log=quiet)


def _chained_recipe(data) -> dict:
    """The tiny study with its tanh cell starting from the relu cell's model."""
    recipe = tiny_recipe(data)
    recipe["axes"]["act"][1]["init_from"] = {"cell": {"act": "relu"}}
    return recipe


def test_a_cell_waits_for_the_source_another_process_is_running(tmp_path, cifar_tree,
                                                                monkeypatch):
    """The wait of --jobs' workers, in one process: thread A runs the relu cell (held until
    the test lets it go), thread B, waiting for sources, defers the tanh cell that starts
    from it, then runs it once it is done, without recording it skipped meanwhile."""
    import threading

    from squeezelab.workflows.studies.kinds import train as train_kind

    plan = plan_study(write(tmp_path / "chain.yaml", _chained_recipe(cifar_tree)), "smoke",
                      out=tmp_path / "out")
    relu, tanh = plan.cells
    go = threading.Event()
    real_train = train_kind.train

    def held(cfg, **kw):
        if kw["run_dir"].name == "relu-s0":
            assert go.wait(60)
        return real_train(cfg, **kw)

    monkeypatch.setattr(train_kind, "train", held)
    lines: list[str] = []
    a = threading.Thread(target=run_study, args=(plan, "relu-s0"),
                         kwargs=dict(progress=False, log=quiet))
    a.start()
    deadline = time.monotonic() + 60
    while not plan.claim_file(relu).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    b = threading.Thread(target=run_study, args=(plan,),
                         kwargs=dict(progress=False, log=lines.append, wait_for_sources=True,
                                     poll_seconds=0.05))
    b.start()
    while not any("wait for sources" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not plan.cell_file(tanh).exists()  # deferred, not recorded as skipped
    go.set()
    a.join(60)
    b.join(60)
    assert not a.is_alive() and not b.is_alive()
    results = json.loads(plan.results_path.read_text())
    assert [c["status"] for c in results["cells"]] == ["done", "done"]
    assert results["cells"][1]["sources"]["init_from"]["cell"] == "relu-s0"
    assert any("1 cell(s) wait for sources another process is running: tanh-s0" in line
               for line in lines)
    assert any(line.startswith("cell 1/2 relu-s0: being run by process") for line in lines)
    # each cell trained once: two epochs each, no second run in either folder
    for name in ("relu-s0", "tanh-s0"):
        assert len((plan.runs_dir / name / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_waiting_cell_is_skipped_once_its_source_cannot_finish(tmp_path, cifar_tree):
    """Waiting is for a source a live process runs: a source that failed, or that nobody
    runs or waits to run, leaves its dependants skipped with the reason, not waiting."""
    plan = plan_study(write(tmp_path / "chain.yaml", _chained_recipe(cifar_tree)), "smoke",
                      out=tmp_path / "out")
    from squeezelab.workflows.studies.runner import _base_record, _stamp

    relu, tanh = plan.cells
    plan.cells_dir.mkdir(parents=True)
    plan.cell_file(relu).write_text(json.dumps(_stamp(
        {**_base_record(plan, relu, "failed"), "reason": "diverged"}, plan)))
    results = run_study(plan, progress=False, log=quiet, wait_for_sources=True,
                        poll_seconds=0.05)
    assert [c["status"] for c in results["cells"]] == ["failed", "skipped"]
    assert "waits for its source" in results["cells"][1]["reason"]
    assert "failed (diverged)" in results["cells"][1]["reason"]


def test_a_pool_of_studies_goes_on_to_the_next_study_while_a_source_is_being_run(
        tmp_path, cifar_tree, monkeypatch):
    """run_studies, as one --jobs worker of several recipes runs it: while another process
    trains study A's relu cell (held until the test lets it go), A's tanh cell waits for it,
    and this process runs study B's cells meanwhile instead of idling; then A's tanh."""
    import threading

    from squeezelab.workflows.studies import run_studies
    from squeezelab.workflows.studies.kinds import train as train_kind

    a = plan_study(write(tmp_path / "a.yaml", _chained_recipe(cifar_tree)), "smoke",
                   out_root=tmp_path / "root")
    b = plan_study(write(tmp_path / "b.yaml", tiny_recipe(cifar_tree, study="other")), "smoke",
                   out_root=tmp_path / "root")
    assert (a.out_dir, b.out_dir) == (tmp_path / "root" / "tiny" / "smoke",
                                      tmp_path / "root" / "other" / "smoke")
    go = threading.Event()
    real_train = train_kind.train

    def held(cfg, **kw):
        if kw["run_dir"] == a.runs_dir / "relu-s0":
            assert go.wait(60)
        return real_train(cfg, **kw)

    monkeypatch.setattr(train_kind, "train", held)
    first = threading.Thread(target=run_study, args=(a, "relu-s0"),
                             kwargs=dict(progress=False, log=quiet))
    first.start()
    deadline = time.monotonic() + 60
    while not a.claim_file(a.cells[0]).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    lines: list[str] = []
    pool = threading.Thread(target=run_studies, args=([a, b],),
                            kwargs=dict(progress=False, log=lines.append,
                                        wait_for_sources=True, poll_seconds=0.05))
    pool.start()
    while not all(b.cell_file(c).exists() for c in b.cells) and time.monotonic() < deadline:
        time.sleep(0.01)
    # study B is done while A's source is still held, and A's tanh is not recorded skipped
    assert [json.loads(b.cell_file(c).read_text())["status"] for c in b.cells] == \
        ["done", "done"]
    assert not a.cell_file(a.cells[0]).exists() and not a.cell_file(a.cells[1]).exists()
    go.set()
    first.join(60)
    pool.join(60)
    assert not first.is_alive() and not pool.is_alive()
    results = json.loads(a.results_path.read_text())
    assert [c["status"] for c in results["cells"]] == ["done", "done"]
    assert results["cells"][1]["sources"]["init_from"]["cell"] == "relu-s0"
    # the wait is said once, not at every poll
    assert lines.count("tiny: 1 cell(s) wait for sources another process is running: "
                       "tanh-s0") == 1
    # each line of a pool names its study
    assert [line for line in lines if line.endswith(": running (train)")] == [
        "other: cell 1/2 relu-s0: running (train)", "other: cell 2/2 tanh-s0: running (train)",
        "tiny: cell 2/2 tanh-s0: running (train)"]
    for plan in (a, b):
        for c in plan.cells:
            runs = (plan.runs_dir / c.name / "metrics.jsonl").read_text().splitlines()
            assert len(runs) == 2  # each cell trained once


def test_jobs_run_every_cell_of_several_studies_once_with_the_cores_shared_out(
        tmp_path, cifar_tree, monkeypatch):
    from squeezelab.workflows.studies import parallel, run_studies_jobs, run_study_jobs

    root = tmp_path / "root"
    a = plan_study(write(tmp_path / "chain.yaml", _chained_recipe(cifar_tree)), "smoke",
                   out_root=root)
    other = tiny_recipe(cifar_tree, study="other")
    other["base"].update(precision="auto", channels_last=None)  # pinned before the workers
    b = plan_study(write(tmp_path / "b.yaml", other), "smoke", out_root=root)
    lines: list[str] = []
    results = run_studies_jobs([a, b], 2, cores=2, log=lines.append)
    (pin,) = json.loads((b.out_dir / "speed.json").read_text()).values()
    assert pin["chosen_by"] == "relu-s0" and pin["timed"] == "before the workers started"
    assert lines[1].startswith("other: speed settings ")
    # the workers trained every cell of that study under the pinned choice, timing nothing
    assert [c["auto_settings"] for c in results[1]["cells"]] == [
        {"precision": pin["precision"], "channels_last": pin["channels_last"]}] * 2
    for c in b.cells:
        env = json.loads((b.runs_dir / c.name / "environment.json").read_text())
        assert not env["speed_autotune"].get("timings")
    assert [[c["status"] for c in r["cells"]] for r in results] == [["done", "done"]] * 2
    assert results[0]["cells"][1]["sources"]["init_from"]["cell"] == "relu-s0"
    # two cores shared by two workers: one intra-op thread each, recorded in every cell
    assert [c["machine"]["threads"] for r in results for c in r["cells"]] == [1, 1, 1, 1]
    assert lines[0] == "tiny, other: 4 cells, 2 worker(s) of 1 thread(s) each"
    assert {line[:3] for line in lines[2:]} == {"[1]", "[2]"}
    # a worker has no line for a cell its sibling runs or finished: only its own cells
    assert not [line for line in lines if "being run by" in line or "already" in line]
    started = [line for line in lines if line.endswith(": running (train)")]
    assert len(started) == 4
    for plan in (a, b):
        assert json.loads(plan.results_path.read_text())["counts"]["done"] == 2
        for c in plan.cells:
            assert len((plan.runs_dir / c.name / "metrics.jsonl").read_text().splitlines()) == 2
        assert not list(plan.cells_dir.glob("*.lock"))
    # finished cells are skipped by a second run, as without --jobs, and said so once
    lines.clear()
    again = run_study_jobs(a, 2, cores=2, log=lines.append)
    assert lines[1:] == ["tiny: 2 of 2 cells ended in an earlier run (skipped): relu-s0, tanh-s0"]
    # past MAX_NAMED cells the count alone
    monkeypatch.setattr(parallel, "MAX_NAMED", 1)
    lines.clear()
    run_study_jobs(a, 2, cores=2, log=lines.append)
    assert lines[1:] == ["tiny: 2 of 2 cells ended in an earlier run (skipped)"]
    assert [c["finished_at"] for c in again["cells"]] == \
        [c["finished_at"] for c in results[0]["cells"]]


def test_jobs_time_each_studys_speed_settings_before_the_workers_start(tmp_path, cifar_tree,
                                                                        monkeypatch):
    """--jobs pins every study's autotuned settings in its own process, alone, on a worker's
    threads: the first cell that leaves them to the autotune is timed; a study that fixes them,
    has one pinned already, or whose data is missing times nothing."""
    import torch

    import squeezelab.train.autotune as autotune
    from squeezelab.workflows.studies.parallel import pin_speeds

    timed = []

    def fake(model, images, labels, precision="auto", channels_last=None, steps=2):
        timed.append((tuple(images.shape), torch.get_num_threads()))
        return {"precision": "bf16", "channels_last": True,
                "timings": {"bf16/channels_last": 0.1, "fp32/nchw": 0.2}}

    monkeypatch.setattr(autotune, "choose_speed_settings", fake)
    fixed = plan_study(write(tmp_path / "tiny.yaml", tiny_recipe(cifar_tree)), "smoke",
                       out=tmp_path / "fixed")
    recipe = tiny_recipe(cifar_tree, study="auto")
    recipe["axes"]["act"][0].update(precision="fp32", channels_last=False)  # relu fixes them
    recipe["base"].update(precision="auto", channels_last=None)
    auto = plan_study(write(tmp_path / "auto.yaml", recipe), "smoke", out=tmp_path / "auto")
    gone = tiny_recipe(tmp_path / "no-data", study="gone")
    gone["base"].update(precision="auto", channels_last=None)
    missing = plan_study(write(tmp_path / "gone.yaml", gone), "smoke", out=tmp_path / "gone")
    before = torch.get_num_threads()
    lines: list[str] = []
    pin_speeds([fixed, auto, missing], 1, lines.append)
    assert timed == [((50, 3, 32, 32), 1)]  # one batch of the tanh cell, on one thread
    assert torch.get_num_threads() == before
    assert lines == ["auto: speed settings bf16, channels_last (timed on tanh-s0, 1 thread(s))"]
    (pin,) = json.loads((auto.out_dir / "speed.json").read_text()).values()
    assert pin["precision"] == "bf16" and pin["channels_last"] is True
    assert pin["chosen_by"] == "tanh-s0" and pin["timed"] == "before the workers started"
    assert not (fixed.out_dir / "speed.json").exists()
    assert not (missing.out_dir / "speed.json").exists()
    pin_speeds([auto], 1, lines.append)  # pinned already: nothing timed again
    assert len(timed) == 1
    # a cell interrupted before any pin resumes with its own run's choice: that is the pin
    again = plan_study(tmp_path / "auto.yaml", "smoke", out=tmp_path / "again")
    run = again.runs_dir / "tanh-s0"
    run.mkdir(parents=True)
    (run / "environment.json").write_text(json.dumps({"speed_autotune": {
        "precision": "fp32", "channels_last": False, "timings": {"fp32/nchw": 0.3}}}))
    pin_speeds([again], 1, lines.append)
    assert len(timed) == 1
    (pin,) = json.loads((again.out_dir / "speed.json").read_text()).values()
    assert (pin["precision"], pin["channels_last"], pin["chosen_by"]) == ("fp32", False,
                                                                          "tanh-s0")


def test_jobs_refuse_a_bad_count_and_a_single_cell(tmp_path, cifar_tree, capsys):
    from squeezelab.cli import main
    from squeezelab.workflows.studies import run_study_jobs

    path = write(tmp_path / "tiny.yaml", tiny_recipe(cifar_tree))
    plan = plan_study(path, "smoke", out=tmp_path / "out")
    with pytest.raises(StudyError, match="--jobs must be a whole number >= 1, got 0"):
        run_study_jobs(plan, 0)
    assert main(["study", str(path), "--budget", "smoke", "--out", str(tmp_path / "out"),
                 "--jobs", "2", "--cell", "1"]) != 0
    assert "error: --jobs runs the whole study; it does not go with --cell" in \
        capsys.readouterr().err
    assert not plan.cells_dir.exists()  # nothing ran


def test_a_worker_that_fails_is_named_after_the_others_have_ended(tmp_path, cifar_tree):
    from squeezelab.workflows.studies import run_study_jobs

    plan = plan_study(write(tmp_path / "tiny.yaml", tiny_recipe(cifar_tree)), "smoke",
                      out=tmp_path / "out")
    lines: list[str] = []
    failing = [sys.executable, "-c", "import sys; print('out of memory'); sys.exit(3)"]
    with pytest.raises(StudyError, match=r"worker 1 with exit status 3, worker 2 with exit "
                       r"status 3 ended early .* the same command runs the rest"):
        run_study_jobs(plan, 2, cores=2, log=lines.append, program=failing)
    assert sorted(lines[1:]) == ["[1] out of memory", "[2] out of memory"]
    assert json.loads(plan.results_path.read_text())["counts"]["pending"] == 2


def test_ctrl_c_is_passed_on_once_to_every_worker(tmp_path, cifar_tree):
    """The workers run in sessions of their own; this process's Ctrl-C reaches each of them
    once (a second SIGINT would stop a training run without saving)."""
    import signal
    import threading

    from squeezelab.workflows.studies import run_study_jobs

    plan = plan_study(write(tmp_path / "tiny.yaml", tiny_recipe(cifar_tree)), "smoke",
                      out=tmp_path / "out")
    worker = ("import os, signal, sys, time\n"
              "got = []\n"
              "def stop(*_):\n"
              "    got.append(1)\n"
              "signal.signal(signal.SIGINT, stop)\n"
              "print('ready', os.getsid(0) == os.getpid(), flush=True)\n"
              "deadline = time.monotonic() + 30\n"
              "while not got and time.monotonic() < deadline:\n"
              "    time.sleep(0.01)\n"
              "time.sleep(0.5)\n"
              "print('saved after', len(got), 'signal(s)', flush=True)\n")
    lines: list[str] = []

    def press_ctrl_c():
        deadline = time.monotonic() + 30
        while sum("ready" in line for line in lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    # Python's own Ctrl-C handler, whatever an earlier test (or torch) left installed
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=press_ctrl_c, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            run_study_jobs(plan, 2, cores=2, log=lines.append,
                           program=[sys.executable, "-c", worker])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sorted(lines[1:]) == ["[1] ready True", "[1] saved after 1 signal(s)",
                                 "[2] ready True", "[2] saved after 1 signal(s)"]
    assert plan.results_path.is_file()  # what was done is merged before the interrupt

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

"""Every ``squeezelab ...`` command line in README.md's code blocks runs, at a tiny size.

The command lines are read from the README itself (continuations joined, ``&&`` chains split,
comments dropped), and each must have an entry in ``EXAMPLES`` below: a README example with
no entry fails ``test_every_readme_command_is_mapped``, so a new example cannot go untested,
and an entry whose command left the README fails too. The entries run the README's own words
through ``squeezelab.cli.main``, in the README's order, in one working directory (so
``runs/cifar10_fast``, ``model.sqz`` ... are the files the earlier examples wrote), with flags
appended that make them tiny (later flags win in argparse): the real-image ``cifar_tree``,
100 training and 50 test images, a 4k-parameter SqueezeNet. Each entry asserts what its
command must produce. Placeholders (``CKPT``, ``...``, ``int8|binary|...``) are filled in by
the entry.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from model_configs import TINY

from squeezelab.cli import main
from squeezelab.config import read_yaml_mapping
from squeezelab.models import get_entry

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def readme_commands(text: str) -> list[str]:
    """Every ``squeezelab`` command in the code blocks (indented or fenced) of ``text``, in
    order, without the leading ``squeezelab``, quoted and spaced as ``shlex.join`` does."""
    code: list[str] = []
    fenced = indented = False
    previous_blank = True
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            code.append(line)
        elif line.startswith("    ") and (indented or previous_blank):
            indented = True
            code.append(line[4:])
        elif line.strip():
            indented = False
        previous_blank = not line.strip()
    joined = "\n".join(code).replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        for part in line.split("&&"):
            if part.split()[:1] == ["squeezelab"]:  # a shell command (not Python, not prose)
                commands.append(shlex.join(shlex.split(part, comments=True)[1:]))
    return commands


def test_readme_commands_are_extracted():
    text = ("Intro\n\n    pip install x && squeezelab eval a  # why\n"
            "    squeezelab train --a 1 \\\n        --b 'x*' # c\n\nprose squeezelab no\n\n"
            "```\nsqueezelab models\n```\n")
    assert readme_commands(text) == ["eval a", "train --a 1 --b 'x*'", "models"]


# ------------------------------------------------------------------------------------------
# what each README command becomes at tiny size, and what it must produce
# ------------------------------------------------------------------------------------------
MODEL_ARGS = [f"--model-arg=fire_config={json.dumps(TINY['fire_config'])}",
              f"--model-arg=stem_channels={TINY['stem_channels']}"]
FAST = ["--precision", "fp32", "--channels-last", "false", "--progress", "false"]


@dataclass
class Run:
    """One README command being run: its words, and how to run them with flags appended."""

    words: list[str]
    tree: Path  # the tiny real-image class-folder tree
    capsys: pytest.CaptureFixture
    seen: dict  # what earlier examples measured, for later ones to compare with

    def __call__(self, *extra: str, words: list[str] | None = None) -> str:
        argv = [*(self.words if words is None else words), *extra]
        code = main(argv)
        captured = self.capsys.readouterr()
        assert code == 0, f"squeezelab {shlex.join(argv)} exited {code}:\n{captured.err}"
        return captured.out

    def tiny_train(self) -> list[str]:
        """Flags that make a training run tiny: 100 images, one epoch, a tiny model."""
        return ["--data", str(self.tree), "--limit-train", "100", "--limit-test", "50",
                "--batch-size", "50", "--epochs", "1", *FAST, *MODEL_ARGS]


def metrics(run_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text()
            .splitlines() if line]


def best_top1(run_dir: str | Path) -> float:
    return max(m["test_top1"] for m in metrics(run_dir) if "test_top1" in m)


def run_dir_printed(out: str) -> Path:
    return Path(re.search(r"^run: (.+)$", out, re.M).group(1))


def train_fast_recipe(run: Run) -> None:
    out = run(*run.tiny_train())
    assert "run: runs/cifar10_fast" in out and "final test top-1" in out
    config = (Path("runs/cifar10_fast/config.yaml")).read_text()
    # the recipe was read (its optimizer and model argument), the flags won over it
    assert "optimizer: adamw" in config and "pool_after:" in config
    assert [m["epoch"] for m in metrics("runs/cifar10_fast")] == [1]
    assert Path("runs/cifar10_fast/checkpoints/best.json").is_file()


def eval_run(run: Run) -> None:
    # the run's own 50 test images: eval prints the top-1 the run recorded for its best
    out = run("--limit", "50")
    assert f"top-1 {best_top1('runs/cifar10_fast'):.4f}" in out
    assert "airplane" in out and "truck" in out  # per-class lines


def models_counts(run: Run) -> None:
    out = run()
    names = [line.split()[0] for line in out.splitlines()]
    assert "squeezenet1_0" in names and "squeezenet_cifar" in names
    assert all(n.startswith("squeezenet") for n in names)
    assert re.search(r"squeezenet1_0 .* 1,248,424 params +819M MACs", out)


def info(run: Run) -> None:
    out = run()
    assert "features.3.squeeze" in out and "1,248,424 parameters, 819M MACs at 224x224" in out


def info_variant(run: Run) -> None:
    out = run()  # the wider model the best recipe was tried with
    assert "965,856 parameters, 74.8M MACs at 32x32" in out


def train_fast_recipe_short(run: Run) -> None:
    out = run(*run.tiny_train(), "--epochs", "3")  # the README's 3 epochs, of 100 images
    path = run_dir_printed(out)
    assert path.name != "cifar10_fast"  # a run of its own beside the first
    assert [m["epoch"] for m in metrics(path)] == [1, 2, 3]


def train_e4_adam(run: Run) -> None:
    out = run(*run.tiny_train(), "--run-name", "readme_e4")
    config = Path("runs/readme_e4/config.yaml").read_text()
    assert "model: squeezenet_cifar_e4" in config and "optimizer: adam\n" in config
    assert "lr: 0.001" in config and "final test top-1" in out
    # the model's registered warm-up, which a run with another optimizer keeps (issue 16, item
    # 16: without one, this family under Adam at 1e-3 stays at 10%)
    warmup = get_entry("squeezenet_cifar_e4").train_defaults["warmup_epochs"]
    assert warmup > 0
    assert read_yaml_mapping("runs/readme_e4/config.yaml")["warmup_epochs"] == warmup


def resume(run: Run) -> None:
    out = run("--epochs", "2", *FAST)  # one more epoch than the run had
    assert "run: runs/cifar10_fast" in out
    assert [m["epoch"] for m in metrics("runs/cifar10_fast")] == [1, 2]


def fine_tune_torchvision(run: Run) -> None:
    # the .pth holds a 1000-class squeezenet1_1 in torchvision's layout; my_photos/ 2 classes
    out = run("--epochs", "1", "--batch-size", "4", "--precision", "fp32", "--channels-last",
              "false", "--run-name", "readme_fine_tune")
    assert "initial weights from squeezenet1_1-b8a52dc0.pth; classifier.1.weight, " \
           "classifier.1.bias start fresh (shape differs)" in out
    assert "model: squeezenet1_1" in Path("runs/readme_fine_tune/config.yaml").read_text()
    assert [m["epoch"] for m in metrics("runs/readme_fine_tune")] == [1]


def plot(run: Run) -> None:
    for name in ("a", "b"):  # two runs to draw: copies of the first one
        shutil.copytree("runs/cifar10_fast", f"runs/{name}", dirs_exist_ok=True)
    out = run()
    assert "curves.png" in out
    assert Path("curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def plot_fraction(run: Run) -> None:
    out = run()  # the runs the example above copied
    assert "wrote curves.png" in out
    assert Path("curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def sensitivity(run: Run) -> None:
    run("--sparsities", "0.5", "0.9")  # 2 of the 9 default levels: 4x faster
    table = json.loads(Path("sens/sensitivity.json").read_text())
    assert "classifier.1.weight" in json.dumps(table)
    assert Path("sens/sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    assert Path("sens/suggested.json").is_file()


def prune_weights(run: Run) -> None:
    from squeezelab.compress import load_compressible

    out = run()
    assert "overall sparsity" in out
    assert load_compressible("pruned").masks.sparsity() == pytest.approx(0.6, abs=0.02)


def prune_channels(run: Run) -> None:
    from squeezelab.inference import load_model

    out = run()  # as written: 2 epochs of fine-tuning on the run's 100 images
    assert "-1 channels" in out and "after:  top-1" in out
    slim, _ = load_model("slim")
    dense, _ = load_model("runs/cifar10_fast")
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in dense.parameters())


def prune_channels_distilled(run: Run) -> None:
    out = run()  # as written: 2 epochs, each step also learning from the uncut model
    assert "distilling from the dense model in every fine-tuning run (kd, T=4, alpha=0.9)" in out
    assert "-1 channels" in out and "after:  top-1" in out
    saved = json.loads(Path("runs/slim-channels/channels/checkpoints/last.json").read_text())
    assert saved["hooks"]["distill"]["teacher"] == "dense"


def train_group_lasso(run: Run) -> None:
    run.words = [w for w in run.words if w != "..."]  # "...": the tiny run's flags
    run(*run.tiny_train(), "--run-name", "readme_group_lasso")
    assert "group_lasso_weight: 0.0001" in Path(
        "runs/readme_group_lasso/config.yaml").read_text()


def compress(run: Run) -> None:
    from squeezelab.compress import read_sqz

    # the recipe's rounds and epochs, on the checkpoint's 100 images (the recipe's batch of
    # 128 is more than that)
    out = run("--batch-size", "50")
    assert "smaller than fp32" in out
    assert read_sqz("model.sqz").meta["compress_config"]["prune"]["sparsity"] == 0.72
    run.seen["sqz_top1"] = json.loads(Path("model.summary.json").read_text())["final_top1"]


def inspect(run: Run) -> None:
    out = run()
    assert "features.0.weight" in out and f"file size {Path('model.sqz').stat().st_size:,} B" \
        in out


def eval_sqz(run: Run) -> None:
    out = run("--limit", "50", "--json", "eval_sqz.json")  # the images compress scored
    assert f"top-1 {run.seen['sqz_top1']:.4f}" in out


def compare(run: Run) -> None:
    out = run("--limit", "50", "--json", "compare.json")
    result = json.loads(Path("compare.json").read_text())
    assert result["baseline_top1"] == pytest.approx(best_top1("runs/cifar10_fast"))
    assert result["candidate_top1"] == pytest.approx(run.seen["sqz_top1"])
    assert "B - A" in out


def export(run: Run) -> None:
    out = run()
    assert "max abs diff" in out and Path("model.onnx").stat().st_size > 1000


def predict(run: Run) -> None:
    out = run()
    lines = [line for line in out.splitlines() if ".jpg" in line]
    assert len(lines) == 1 + 3  # photo.jpg and the 3 images in photos/
    assert all(re.search(r"\d+\.\d%", line) for line in lines)


def eval_onnx(run: Run) -> None:
    # an .onnx file does not record its training data (the default would be all of CIFAR-10):
    # the .sqz's 50 images, on which onnxruntime must score what PyTorch scored
    run("--data", str(run.tree), "--limit", "50", "--json", "eval_onnx.json")
    onnx, sqz = (json.loads(Path(f"eval_{k}.json").read_text()) for k in ("onnx", "sqz"))
    assert (onnx["count"], onnx["top1"], onnx["per_class"]) == (
        sqz["count"], sqz["top1"], sqz["per_class"])
    assert onnx["loss"] == pytest.approx(sqz["loss"], rel=1e-4)


def quantize(run: Run) -> None:
    methods = run.words[run.words.index("--method") + 1].split("|")
    assert "kmeans" in methods and "int8" in methods
    for method in methods:
        words = [("runs/cifar10_fast/checkpoints/best.json" if w == "CKPT" else
                  method if "|" in w else w) for w in run.words]
        out = run("--limit-test", "50", words=words)
        assert "after:  top-1" in out, method
        assert list(Path(".").glob("out*")), method


def train_dsd_recipe(run: Run) -> None:
    # the recipe's dsd: section, with the phases made 1 epoch each
    run("--dsd", "sparsity=0.4,epochs=1-1-1", "--data", str(run.tree), "--limit-train", "100",
        "--limit-test", "50", "--batch-size", "50", *FAST, *MODEL_ARGS)
    assert [m["phase"] for m in metrics("runs/dsd_squeezenet_cifar")] == [
        "dense", "sparse", "redense"]


def dsd_from_run(run: Run) -> None:
    out = run("--epochs", "1-1", "--run-name", "readme_dsd", *FAST)
    assert "after DSD (sparsity 0.4, 1-1)" in out
    assert [m["phase"] for m in metrics("runs/readme_dsd")] == ["sparse", "redense"]


def train_distill(run: Run) -> None:
    out = run(*run.tiny_train(), "--run-name", "readme_distill")
    assert "final test top-1" in out
    saved = json.loads(Path("runs/readme_distill/checkpoints/last.json").read_text())
    assert "runs/teacher" in json.dumps(saved)  # the hook recorded its teacher


def train_fitnets(run: Run) -> None:
    out = run(*run.tiny_train(), "--run-name", "readme_fitnets")
    assert "final test top-1" in out


def train_ddp(run: Run) -> None:
    run.words = [w for w in run.words if w != "..."]
    run(*run.tiny_train(), "--run-name", "readme_ddp")
    assert [m["epoch"] for m in metrics("runs/readme_ddp")] == [1]


def study_smoke(run: Run) -> None:
    # the smoke budget on the tiny tree, one seed of the recipe's three: three cells
    out = run("--seeds", "0", "--set", f"data={run.tree}")
    results = json.loads(Path("runs/studies/bypass/smoke/results.json").read_text())
    assert results["counts"]["done"] == 3 and results["budget"] == "smoke"
    assert all(0 <= c["metrics"]["test_top1"] <= 1 for c in results["cells"])
    assert "cell 3/3" in out


def study_list(run: Run) -> None:
    out = run()
    commands = [line for line in out.splitlines() if line.startswith("squeezelab study")]
    assert len(commands) == 9 and all("--cell" in c for c in commands)  # 3 variants x 3 seeds


def study_every_recipe(run: Run) -> None:
    # the command's shape on two of the studies (the glob names all twelve), one seed each, at
    # the smoke budget on the tiny tree: two worker processes, the studies' cells one pool
    out = run(words=["study", "recipes/studies/bypass.yaml", "recipes/studies/squeeze_ratio.yaml",
                     "--budget", "smoke", "--jobs", "2", "--seeds", "0",
                     "--set", f"data={run.tree}"])
    assert "bypass, squeeze_ratio: 8 cells, 2 worker(s)" in out and "2 studies:" in out
    for study in ("bypass", "squeeze_ratio"):
        counts = json.loads(Path(f"runs/studies/{study}/smoke/results.json").read_text())[
            "counts"]
        assert counts["done"] == counts["total"] > 0


def report_every_study(run: Run) -> None:
    out = run(words=["report", *map(str, sorted(Path("runs/studies").glob("*/smoke"))),
                     "-o", "report_all/"])
    page = Path("report_all/report.html").read_text()
    assert "Squeeze ratio" in page and "bypass" in page.lower() and "report_all" in out


def report(run: Run) -> None:
    run()
    page = Path("report/report.html").read_text()
    assert "bypass" in page.lower() and "data:image/png;base64," in page
    assert Path("report/report.md").is_file()


#: README command (as ``readme_commands`` gives it) -> its tiny run and checks, called in the
#: README's order; those in ``SLOW`` run only in the slow suite (-m slow).
EXAMPLES: dict[str, Callable[[Run], None]] = {
    "train recipes/cifar10_fast.yaml --run-name cifar10_fast --download true": train_fast_recipe,
    "eval runs/cifar10_fast": eval_run,
    "models 'squeezenet*' --counts": models_counts,
    "info squeezenet1_0": info,
    "info fire_groups_cifar --model-arg 'widths=[128,256,368]'": info_variant,
    "train recipes/cifar10_fast.yaml --epochs 3 --limit-train 5000 --run-name quick":
        train_fast_recipe_short,
    "train --model squeezenet_cifar_e4 --optimizer adam --lr 0.001 --epochs 20": train_e4_adam,
    "train --resume runs/cifar10_fast": resume,
    "train --model squeezenet1_1 --init-from squeezenet1_1-b8a52dc0.pth --data my_photos/ "
    "--image-size 224": fine_tune_torchvision,
    "plot runs/a runs/b -o curves.png": plot,
    "plot runs/a runs/b --x fraction -o curves.png": plot_fraction,
    "sensitivity runs/cifar10_fast/checkpoints/best.json -o sens/": sensitivity,
    "prune runs/cifar10_fast/checkpoints/best.json --sparsity 0.6 -o pruned": prune_weights,
    "prune runs/cifar10_fast --channels 0.25 --retrain-epochs 2 -o slim": prune_channels,
    "prune runs/cifar10_fast --channels 0.25 --retrain-epochs 2 --distill dense -o slim":
        prune_channels_distilled,
    "train --group-lasso-weight 1e-4 ...": train_group_lasso,
    "compress runs/cifar10_fast/checkpoints/best.json -o model.sqz --recipe "
    "recipes/compress_cifar10_fast.yaml": compress,
    "inspect model.sqz": inspect,
    "eval model.sqz": eval_sqz,
    "compare runs/cifar10_fast model.sqz": compare,
    "export model.sqz --onnx model.onnx": export,
    "predict model.sqz photo.jpg photos/": predict,
    "eval model.onnx": eval_onnx,
    "quantize CKPT --method 'int8|binary|xnor|fixed|pq|rq|lowrank|kmeans' -o out": quantize,
    "train recipes/dsd_squeezenet_cifar.yaml": train_dsd_recipe,
    "dsd runs/cifar10_fast --sparsity 0.4 --epochs 3-5": dsd_from_run,
    "train --distill teacher=runs/teacher,T=4,alpha=0.9": train_distill,
    "train --fitnets teacher=runs/teacher,hint=layer3,guided=features.6": train_fitnets,
    "train --nproc 2 ...": train_ddp,
    "study recipes/studies/bypass.yaml --budget smoke": study_smoke,
    "study recipes/studies/bypass.yaml --list": study_list,
    "report runs/studies/bypass/smoke -o report/": report,
    "study 'recipes/studies/*.yaml' --budget cpu --jobs 2": study_every_recipe,
    "report 'runs/studies/*/cpu' -o report/": report_every_study,
}
SLOW = {"train --nproc 2 ..."}  # two torchrun processes: tens of seconds


def test_every_readme_command_is_mapped():
    commands = readme_commands(README.read_text())
    assert "eval runs/cifar10_fast" in commands and len(commands) > 20
    unmapped = [c for c in commands if c not in EXAMPLES]
    assert not unmapped, ("README commands with no tiny run in tests/cli/"
                          f"test_readme_examples.py EXAMPLES: {unmapped}")
    stale = [c for c in EXAMPLES if c not in commands]
    assert not stale, f"EXAMPLES entries whose command is no longer in the README: {stale}"


@pytest.fixture
def workdir(tmp_path, monkeypatch, cifar_tree):
    """The working directory the README's examples run in, with the files they name that no
    earlier example writes: the recipes, photos, a torchvision-layout .pth and a teacher."""
    from cifar_fixtures import copy_tree

    from squeezelab.checkpoint import save_checkpoint
    from squeezelab.models import create_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    images = sorted((cifar_tree / "test" / "cat").iterdir())
    shutil.copy(images[0], "photo.jpg")
    Path("photos").mkdir()
    for image in images[1:4]:
        shutil.copy(image, Path("photos") / image.name)
    photos = copy_tree(tmp_path / "all_photos", 4, 2)  # my_photos/: two of its classes
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            shutil.copytree(photos / split / name, Path("my_photos") / split / name)
    torch.manual_seed(0)
    torch.save(create_model("squeezenet1_1").state_dict(), "squeezenet1_1-b8a52dc0.pth")
    teacher = create_model("resnet18_cifar", num_classes=10, width=8)
    save_checkpoint("runs/teacher/checkpoints/best", teacher)
    return tmp_path


def _run_examples(capsys, cifar_tree, which: Callable[[str], bool]) -> None:
    seen: dict = {}
    for command in readme_commands(README.read_text()):
        if which(command):
            EXAMPLES[command](Run(shlex.split(command), cifar_tree, capsys, seen))


def test_readme_examples_run(workdir, cifar_tree, capsys):
    _run_examples(capsys, cifar_tree, lambda c: c in EXAMPLES and c not in SLOW)


@pytest.mark.slow
def test_readme_slow_examples_run(workdir, cifar_tree, capsys):
    _run_examples(capsys, cifar_tree, lambda c: c in SLOW)


def test_nproc_reruns_the_command_main_was_given(monkeypatch):
    """``main([... "--nproc", "2", ...])`` (as the DDP example runs) relaunches those words
    under torchrun, not the words of whatever process called main (pytest's here)."""
    import subprocess
    import sys

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert main(["train", "--nproc", "2", "--epochs", "1"]) == 0
    assert calls == [[sys.executable, "-m", "torch.distributed.run", "--standalone",
                      "--nproc_per_node", "2", "-m", "squeezelab", "train", "--epochs", "1"]]

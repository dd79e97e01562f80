"""What a user who gets something wrong sees: one ``error:`` line and exit status 2 for a
missing optional extra, a bad recipe file or a flag value, hints that name the command-line
flag, and a traceback only for a genuine bug."""
import sys
import urllib.error

import pytest
import torch
from model_configs import TINY

from squeezelab.checkpoint import save_checkpoint
from squeezelab.cli import main
from squeezelab.data import cifar
from squeezelab.extras import MissingExtraError, import_extra
from squeezelab.models import create_model

EXPORT_HINT = ("install it with pip install 'squeezelab[export]' (in a source checkout: "
               "pip install -e '.[export]')")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An untrained tiny 10-class SqueezeNet checkpoint: enough for commands that fail early."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    return str(save_checkpoint(path, create_model("squeezenet_cifar", num_classes=10, **TINY)))


def one_error_line(capsys) -> str:
    """The one ``error:`` line on stderr (after any progress bar), which must end it."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and "img/s]" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def hide(monkeypatch, *modules):
    """Make ``import module`` fail as it does when the module is not installed."""
    for name in modules:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setitem(sys.modules, name, None)


# ------------------------------------------------------------------------------------------
# missing extras
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_export_without_the_export_extra(tmp_path, ckpt, capsys, monkeypatch, missing):
    hide(monkeypatch, missing)
    out = tmp_path / "m.onnx"
    assert main(["export", ckpt, "--onnx", str(out)]) == 2
    assert one_error_line(capsys) == (
        f"error: squeezelab export needs the [export] extra: {missing} is not installed; "
        f"{EXPORT_HINT}")
    assert not out.exists()  # checked before anything is written


def test_export_dynamo_needs_onnxscript(tmp_path, ckpt, capsys, monkeypatch):
    hide(monkeypatch, "onnxscript")
    assert main(["export", ckpt, "--onnx", str(tmp_path / "m.onnx"), "--dynamo"]) == 2
    assert "squeezelab export --dynamo needs the [export] extra: onnxscript is not " \
           "installed" in one_error_line(capsys)


def test_library_export_without_onnx_is_a_missing_extra_error(tmp_path, monkeypatch):
    from squeezelab.export import export_onnx

    hide(monkeypatch, "onnx")
    model = create_model("squeezenet_cifar", num_classes=10, **TINY)
    with pytest.raises(MissingExtraError, match=r"ONNX export needs the \[export\] extra"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_running_an_onnx_file_without_onnxruntime(tmp_path, capsys, monkeypatch, command):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"never read: the missing runtime is reported first")
    hide(monkeypatch, "onnxruntime")
    argv = [command, str(model)] + ([str(tmp_path)] if command == "predict" else [])
    assert main(argv) == 2
    assert one_error_line(capsys) == (
        f"error: running {model} needs the [export] extra: onnxruntime is not installed; "
        f"{EXPORT_HINT}")


def test_inspect_fp32_without_zstandard(tmp_path, ckpt, capsys, monkeypatch):
    from squeezelab.compress import save_compressed
    from squeezelab.compress.format.size_report import size_report

    sqz = tmp_path / "m.sqz"
    model = create_model("squeezenet_cifar", num_classes=10, **TINY)
    save_compressed(model, sqz)
    hide(monkeypatch, "zstandard")
    assert main(["inspect", str(sqz), "--fp32", ckpt]) == 2
    assert one_error_line(capsys) == (
        "error: squeezelab inspect --fp32 needs the [zstd] extra: zstandard is not installed; "
        "install it with pip install 'squeezelab[zstd]' (in a source checkout: "
        "pip install -e '.[zstd]')")
    assert main(["inspect", str(sqz)]) == 0  # only the fp32 baselines need it
    with pytest.raises(ImportError):  # what the pipeline catches to leave the baselines out
        size_report(sqz, fp32=model)


def test_import_extra_tells_a_broken_install_from_a_missing_one(monkeypatch):
    import importlib

    def broken(name, *args, **kwargs):
        raise ImportError("libonnxruntime.so: cannot open shared object file")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(MissingExtraError, match="onnxruntime does not import "
                       r"\(libonnxruntime.so: .*\); install it with"):
        import_extra("onnxruntime", "x")
    with pytest.raises(ValueError, match="'numpy' is not in an optional extra"):
        import_extra("numpy", "x")


# ------------------------------------------------------------------------------------------
# bad recipe files and flag values
# ------------------------------------------------------------------------------------------
@pytest.fixture
def bad_recipes(tmp_path):
    (tmp_path / "malformed.yaml").write_text("model: squeezenet_cifar\nepochs: [1, 2\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "list.yaml").write_text("- model: squeezenet_cifar\n- epochs: 1\n")
    return {
        "malformed": (tmp_path / "malformed.yaml",
                      ("is not valid YAML at line 3, column 1: expected ',' or ']', but got "
                       "'<stream end>'")),
        "directory": (tmp_path / "folder", "is a directory; expected a YAML file"),
        "missing": (tmp_path / "absent.yaml", "does not exist"),
        "list": (tmp_path / "list.yaml", "must hold a mapping of keys, got list"),
    }


@pytest.mark.parametrize("kind", ["malformed", "directory", "missing", "list"])
@pytest.mark.parametrize("command", ["train", "compress", "dsd"])
def test_bad_recipe_file_is_one_error_line(tmp_path, ckpt, bad_recipes, capsys, command, kind):
    path, message = bad_recipes[kind]
    argv = {"train": ["train", str(path), "--epochs", "1"],
            "compress": ["compress", ckpt, "-o", str(tmp_path / "m.sqz"), "--recipe", str(path)],
            "dsd": ["dsd", ckpt, "--recipe", str(path)]}[command]
    assert main(argv) == 2
    assert one_error_line(capsys) == f"error: recipe {path} {message}"


@pytest.mark.parametrize("kind", ["malformed", "directory", "missing", "list"])
def test_bad_study_recipe_file(bad_recipes, kind, capsys):
    path, message = bad_recipes[kind]
    assert main(["study", str(path), "--budget", "smoke"]) == 2
    assert one_error_line(capsys) == f"error: study recipe {path} {message}"


def test_malformed_model_arg_names_the_flag(capsys):
    assert main(["train", "--model-arg", "fire_config=[[4,8,8]", "--epochs", "1"]) == 2
    assert one_error_line(capsys) == (
        "error: --model-arg fire_config: '[[4,8,8]' is not a valid YAML value (expected ',' "
        "or ']', but got '<stream end>')")


def test_misspelled_model_arg_is_one_error_line_before_training(tmp_path, cifar_tree, capsys):
    assert main(["train", "--data", str(cifar_tree), "--model", "fire_groups_cifar",
                 "--model-arg", "widht=[8,16,32]", "--epochs", "1", "--limit-train", "20",
                 "--limit-test", "20", "--progress", "false", "--out-dir", str(tmp_path)]) == 2
    assert one_error_line(capsys).startswith(
        "error: model 'fire_groups_cifar' got unknown argument(s) ['widht']; it accepts [")
    assert not any(tmp_path.glob("**/*.safetensors"))  # it stopped before training


@pytest.mark.parametrize("error", [KeyError("a bug"), ModuleNotFoundError("no module 'x'"),
                                   RuntimeError("a bug")])
def test_a_genuine_bug_keeps_its_traceback(monkeypatch, error):
    from squeezelab.cli import eval_commands

    def buggy(args):
        raise error

    monkeypatch.setattr(eval_commands, "cmd_eval", buggy)
    with pytest.raises(type(error)):
        main(["eval", "anything.json"])


@pytest.mark.parametrize("error", [IsADirectoryError(21, "Is a directory", "out"),
                                   PermissionError(13, "Permission denied", "out")])
def test_a_path_the_user_named_wrongly_is_bad_input(monkeypatch, capsys, error):
    from squeezelab.cli import eval_commands

    def fails(args):
        raise error

    monkeypatch.setattr(eval_commands, "cmd_eval", fails)
    assert main(["eval", "anything.json"]) == 2
    assert one_error_line(capsys) == f"error: {error}"


# ------------------------------------------------------------------------------------------
# data hints name the flag, and every command that loads data takes it
# ------------------------------------------------------------------------------------------
DATA_COMMANDS = {
    "eval": ["eval", "CKPT"],
    "compare": ["compare", "CKPT", "CKPT"],
    "prune": ["prune", "CKPT", "--sparsity", "0.5", "--retrain-epochs", "1", "-o", "OUT/p"],
    "prune --channels": ["prune", "CKPT", "--channels", "0.5", "-o", "OUT/c"],
    "quantize": ["quantize", "CKPT", "--method", "int8", "-o", "OUT/q.json"],
    "compress": ["compress", "CKPT", "-o", "OUT/m.sqz"],
    "sensitivity": ["sensitivity", "CKPT", "-o", "OUT/sens"],
}


@pytest.mark.parametrize("command", list(DATA_COMMANDS))
def test_data_commands_take_download(tmp_path, ckpt, capsys, monkeypatch, command):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cifar.urllib.request, "urlopen", offline)
    argv = [ckpt if a == "CKPT" else a.replace("OUT", str(tmp_path))
            for a in DATA_COMMANDS[command]]
    argv += ["--data", "cifar10", "--data-root", str(tmp_path / "archives")]
    assert main(argv) == 2
    err = one_error_line(capsys)
    # without the flag: the hint names it, in the command line's words first
    assert "or let squeezelab fetch it: --download true on the command line (download: " \
           "true in a recipe, download=True in Python)" in err
    # with it: the download is tried (and fails here, offline)
    assert main([*argv, "--download", "true"]) == 2
    assert "could not download CIFAR-10 (<urlopen error no network>)" in one_error_line(capsys)


def test_eval_takes_skip_bad_images(tmp_path, ckpt, capsys):
    from cifar_fixtures import copy_tree

    tree = copy_tree(tmp_path / "tree", 1, 2)
    bad = tree / "test" / "cat" / "zz_broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    argv = ["eval", ckpt, "--data", str(tree), "--json", str(tmp_path / "eval.json")]
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert f"cannot decode image {bad}" in err
    assert "to leave out unreadable files: --skip-bad-images true on the command line " \
           "(skip_bad_images: true in a recipe, skip_bad=True in Python)" in err
    assert main([*argv, "--skip-bad-images", "true"]) == 0
    import json

    assert json.loads((tmp_path / "eval.json").read_text())["count"] == 20  # the good ones

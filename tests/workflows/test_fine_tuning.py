"""The fine-tuning settings every workflow shares (``workflows/fine_tuning.py``): a ``train:``
section is refused when its settings are read, before any pruning or training, whether it names
a field the workflow sets itself, a key TrainConfig does not have, or is not a mapping; the
run's TrainConfig and the measurements of the model before and after."""
import re

import pytest
from noise_data import noise_split

from squeezelab.config import ConfigError
from squeezelab.metrics import count_parameters
from squeezelab.models import create_model
from squeezelab.train.evaluate import EvalProtocol
from squeezelab.workflows.architecture_learning import ArchitectureLearningConfig
from squeezelab.workflows.channel_pruning import ChannelPruneConfig
from squeezelab.workflows.compress_config import CompressConfig
from squeezelab.workflows.fine_tuning import (
    RUN_FIELDS,
    check_retraining,
    check_train_section,
    default_work_dir,
    fine_tune_train_section,
    fine_tuning_config,
    fresh_run_dir,
    measure_model,
)
from squeezelab.workflows.layer_pruning import LayerPruneConfig

WORKFLOW_CONFIGS = {
    "compress": lambda train: CompressConfig(train=train),
    "channels": lambda train: ChannelPruneConfig(fraction=0.25, retrain_epochs=1, train=train),
    "fires": lambda train: LayerPruneConfig(retrain_epochs=1, train=train),
    "architecture": lambda train: ArchitectureLearningConfig(train=train),
}


@pytest.mark.parametrize("workflow", sorted(WORKFLOW_CONFIGS))
def test_model_args_in_the_train_section_is_refused(workflow):
    # the model is the checkpoint's: model_args there would be ignored without a word
    with pytest.raises(ConfigError, match=r"train section may not set \['model_args'\]"):
        WORKFLOW_CONFIGS[workflow]({"model_args": {"widths": [8, 16, 32]}})


@pytest.mark.parametrize("workflow", sorted(WORKFLOW_CONFIGS))
def test_an_unknown_train_key_fails_when_the_settings_are_read(workflow):
    with pytest.raises(ConfigError, match="unknown key 'batchsize'"):
        WORKFLOW_CONFIGS[workflow]({"batchsize": 32})


@pytest.mark.parametrize("workflow", sorted(WORKFLOW_CONFIGS))
def test_a_train_section_that_is_not_a_mapping_is_refused(workflow):
    with pytest.raises(ConfigError, match="train must be a mapping of TrainConfig fields, got"):
        WORKFLOW_CONFIGS[workflow](["batch_size", 32])


@pytest.mark.parametrize("workflow", sorted(WORKFLOW_CONFIGS))
def test_a_good_train_section_is_kept(workflow):
    config = WORKFLOW_CONFIGS[workflow]({"batch_size": 32, "weight_decay": 1e-4})
    assert config.train == {"batch_size": 32, "weight_decay": 1e-4}


def test_check_train_section_names_the_workflow_and_what_sets_the_fields():
    with pytest.raises(ConfigError, match=r"may not set \['epochs', 'lr'\]: "
                                          r"prune_x sets them \(its own epochs\)"):
        check_train_section({"lr": 0.1, "epochs": 3, "batch_size": 8}, "prune_x",
                            "its own epochs")
    # architecture learning lets lr through: it is learn_lr's and finetune_lr's default
    assert check_train_section({"lr": 0.1}, "x", "y",
                               fields=[f for f in RUN_FIELDS if f != "lr"]) == {"lr": 0.1}
    assert ArchitectureLearningConfig(train={"lr": 0.1}).run_config("learn", "m").lr == 0.1


def test_fine_tune_train_section_inherits_the_checkpoints_settings():
    meta = {"config": {"data": "cifar10", "batch_size": 64, "optimizer": "nesterov",
                       "lr": 0.1, "epochs": 200, "warmup_epochs": 2, "model": "m"}}
    section = fine_tune_train_section(meta, {"limit_test": 100, "batch_size": None})
    # the data and optimiser come along; epochs, lr and the model do not; no warm-up
    assert section == {"data": "cifar10", "batch_size": 64, "optimizer": "nesterov",
                       "schedule": "cosine", "warmup_epochs": 0.0, "limit_test": 100}


def test_default_work_dir_is_under_the_runs_folder():
    assert default_work_dir("out/model.sqz", "prune").as_posix() == "runs/model-prune"


def test_fresh_run_dir_replaces_an_earlier_run_and_says_so(tmp_path):
    earlier = tmp_path / "runs" / "slim-channels" / "channels"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "metrics.jsonl").write_text("{}\n")
    logged = []
    assert fresh_run_dir(earlier, logged.append) == earlier
    assert not earlier.exists() and earlier.parent.is_dir()  # only the run goes
    assert logged == [f"replacing the earlier run {earlier}"]
    # nothing there: nothing removed, nothing said
    assert fresh_run_dir(tmp_path / "new", logged.append) == tmp_path / "new"
    assert len(logged) == 1


@pytest.mark.parametrize("epochs, lr, message", [
    (-1, 0.01, "retrain_epochs must be an integer >= 0, got -1"),
    (1.5, 0.01, "retrain_epochs must be an integer >= 0, got 1.5"),
    (True, 0.01, "retrain_epochs must be an integer >= 0, got True"),
    (1, 0, "retrain_lr must be > 0, got 0"),
    (1, "0.1", "retrain_lr must be > 0, got '0.1'"),
    (1, True, "retrain_lr must be > 0, got True"),
])
def test_check_retraining_refuses_bad_values(epochs, lr, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_retraining(epochs, lr)


@pytest.mark.parametrize("workflow", ["channels", "fires"])
def test_the_pruning_configs_check_their_retraining(workflow):
    build = {"channels": lambda: ChannelPruneConfig(fraction=0.25, retrain_lr=-1.0),
             "fires": lambda: LayerPruneConfig(retrain_lr=-1.0)}[workflow]
    with pytest.raises(ConfigError, match="retrain_lr must be > 0, got -1.0"):
        build()


def test_fine_tuning_config_sets_the_runs_fields_over_the_section():
    cfg = fine_tuning_config({"batch_size": 32, "lr": 0.5}, epochs=3, lr=0.01,
                             run_name="fires", model="squeezenet_cifar", source="test")
    assert (cfg.epochs, cfg.lr, cfg.run_name, cfg.model, cfg.batch_size) == (
        3, 0.01, "fires", "squeezenet_cifar", 32)
    assert cfg.warmup_epochs == 0.0  # the model is trained already


def test_fine_tuning_config_keeps_the_sections_lr_and_warmup_and_runs_one_epoch_at_least():
    cfg = fine_tuning_config({"lr": 0.5, "warmup_epochs": 1.0}, epochs=0, lr=None,
                             run_name="finetune", model="squeezenet_cifar", source="test")
    assert (cfg.epochs, cfg.lr, cfg.warmup_epochs) == (1, 0.5, 1.0)


def test_fine_tuning_config_names_its_source_in_an_error():
    with pytest.raises(ConfigError, match="layer pruning 'train' section"):
        fine_tuning_config({"batchsize": 32}, epochs=1, lr=0.01, run_name="fires",
                           model="squeezenet_cifar", source="layer pruning 'train' section")


#: a SqueezeNet small enough to score in a blink
TINY = {"num_classes": 2, "fire_config": [[4, 8, 8]] * 8, "stem_channels": 8}


def test_measure_model_reports_top1_size_and_cost_in_eval_mode():
    model = create_model("squeezenet_cifar", **TINY).train()
    protocol = EvalProtocol()
    out = measure_model(model, noise_split(12), protocol, (8, 8))
    assert not model.training
    assert set(out) == {"top1", "protocol", "parameters", "macs"}
    correct = out["top1"] * 12  # a count of the 12 images
    assert 0 <= round(correct) <= 12 and abs(correct - round(correct)) < 1e-9
    assert out["parameters"] == count_parameters(model)
    assert out["protocol"] == protocol.to_dict()
    assert out["macs"] > 0


def test_measure_model_without_test_data_has_no_top1_and_times_on_request():
    model = create_model("squeezenet_cifar", **TINY)
    out = measure_model(model, None, EvalProtocol(), (8, 8), speed=True)
    assert out["top1"] is None
    assert out["images_per_s"] > 0

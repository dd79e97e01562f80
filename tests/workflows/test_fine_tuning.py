"""The fine-tuning settings every workflow shares (``workflows/fine_tuning.py``): a ``train:``
section is refused when its settings are read, before any pruning or training, whether it names
a field the workflow sets itself, a key TrainConfig does not have, or is not a mapping."""
import pytest

from squeezelab.config import ConfigError
from squeezelab.workflows.architecture_learning import ArchitectureLearningConfig
from squeezelab.workflows.channel_pruning import ChannelPruneConfig
from squeezelab.workflows.compress_config import CompressConfig
from squeezelab.workflows.fine_tuning import (
    RUN_FIELDS,
    check_train_section,
    default_work_dir,
    fine_tune_train_section,
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

"""Training: the typed config, the one loop with hooks, optimizers and schedules, evaluation."""
from squeezelab.hooks import TrainHook, TrainState
from squeezelab.train.config import ConfigError, TrainConfig
from squeezelab.train.evaluate import evaluate, paired_difference, top1_correct
from squeezelab.train.loop import RunResult, TrainingDiverged, train

__all__ = ["ConfigError", "TrainConfig", "evaluate", "paired_difference", "top1_correct",
           "TrainHook", "TrainState", "RunResult", "TrainingDiverged", "train"]

"""Training: the typed config, the one loop with hooks, optimizers and schedules, evaluation."""
from squeezelab.train.config import ConfigError, TrainConfig
from squeezelab.train.evaluate import evaluate
from squeezelab.train.hooks import TrainHook, TrainState
from squeezelab.train.loop import RunResult, TrainingDiverged, train

__all__ = ["ConfigError", "TrainConfig", "evaluate", "TrainHook", "TrainState", "RunResult",
           "TrainingDiverged", "train"]

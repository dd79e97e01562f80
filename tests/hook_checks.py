"""Checks every weight-swapping training hook (the weight average, Lookahead) must pass: under a
fixed pruning mask the model stays exactly sparse, and a run cut and resumed ends where an
uncut run does, bit for bit. ``InterruptAt`` cuts a run as Ctrl-C does."""
import os
import signal

import torch
from model_configs import SMALL

from squeezelab.hooks import TrainHook
from squeezelab.models import create_model
from squeezelab.train import train


class InterruptAt(TrainHook):
    """Delivers a real SIGINT (as Ctrl-C does) after the given optimizer step: the loop saves
    a checkpoint mid-epoch and returns ``interrupted``. It keeps no state, so the run resumes
    without it."""

    name = "interrupt"

    def __init__(self, step):
        self.at = step

    def after_step(self, state):
        if state.step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def assert_masked_run_stays_sparse(config, tmp_path, data) -> None:
    """``config(tmp_path, **changes)`` makes the run's TrainConfig."""
    from squeezelab.compress.pruning.masks import MaskHook

    model = create_model("squeezenet_cifar", **SMALL)
    weight = model.features[0].weight
    mask = torch.rand(weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    result = train(config(tmp_path, epochs=1), hooks=[MaskHook({"features.0.weight": mask})],
                   data=data, model=model)
    final = result.model.features[0].weight.detach()
    assert (final[~mask] == 0).all() and (final[mask] != 0).any()


def assert_resume_is_exact(config, tmp_path, data, what: str) -> None:
    """Two epochs straight against one epoch, then a resume for the second."""
    straight = train(config(tmp_path, run_name="straight"), data=data)
    first = train(config(tmp_path, run_name="cut", epochs=1), data=data)
    resumed = train(config(tmp_path, run_name="cut", epochs=2), resume=True,
                    run_dir=first.run_dir, data=data)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), f"the resumed {what} diverged"

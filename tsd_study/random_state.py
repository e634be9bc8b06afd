"""Random states that travel with each checkpoint, so that a resumed run trains on as an uninterrupted one would.

mmengine's checkpoints hold the model, the optimizer, the schedulers and the message hub, but not the random
generators of the training processes. The RoI sampler draws its positives and negatives from torch's global
generator, so without them a run resumed at iteration N samples other RoIs from N + 1 on than the run that was never
stopped, and ends at another AP. The hook stores the states (python, numpy, torch, and CUDA where there is one) when
a checkpoint is saved, and restores them right before the first batch after a resume is loaded:
after mmengine has skipped the dataloader past the iterations already trained (loading those batches draws from the
generators too, in the main process when the dataloader has no workers), before the batch whose augmentation the
uninterrupted run drew right after it saved the checkpoint.

Between its checkpoint at N and that batch, the uninterrupted run validated when N is a validation iteration, and a
validation draws from torch's generator too (each pass over a dataloader draws its base seed). The resumed run
validates at N again, right after restoring the states, so that the batch after it sees the same generators; a
checkpoint saved during a validation (when SLURM stops the job there) holds the states from before it.

mmengine saves checkpoints from rank 0 alone, so a distributed run's checkpoint holds rank 0's states: rank 0 resumes
exactly, the other ranks keep the states their restart gives them (as without this hook).
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook

CHECKPOINT_KEY = "random_states"


def capture() -> dict[str, Any]:
    """This process's random states."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore(states: dict[str, Any]) -> None:
    """Set this process's random states to ``states`` (the CUDA ones where this process has as many devices)."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class _ResumeBeforeBatch:
    """The training loop's batch iterator, calling ``resume`` once right before batch number ``skip`` (from 0) is
    requested."""

    def __init__(self, batches: Iterator[Any], skip: int, resume: Callable[[], None]) -> None:
        self._batches, self._skip, self._resume = batches, skip, resume

    def __iter__(self) -> _ResumeBeforeBatch:
        return self

    def __next__(self) -> Any:
        if self._skip == 0:
            self._resume()
        self._skip -= 1
        return next(self._batches)


class RandomStateHook(Hook):
    """Saves the random states in each checkpoint; when an iteration-based run resumes, restores them (rank 0's, on
    rank 0, in a distributed run) right before its first batch, after replaying the validation due at the resumed
    iteration (on every rank)."""

    priority = "VERY_HIGH"

    def __init__(self) -> None:
        self._loaded: dict[str, Any] | None = None
        self._before_validation: dict[str, Any] | None = None
        self._training = False

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # rank 0 only: mmengine's save_checkpoint is master_only
        checkpoint[CHECKPOINT_KEY] = self._before_validation or capture()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        states = checkpoint.get(CHECKPOINT_KEY)
        if isinstance(states, dict) and is_main_process():
            self._loaded = states

    def before_train(self, runner) -> None:
        self._training = True
        loop = runner.train_loop
        states, self._loaded = self._loaded, None
        if runner.iter == 0 or not hasattr(loop, "dataloader_iterator"):
            return
        validate = (runner.val_loop is not None and runner.iter >= loop.val_begin
                    and runner.iter % loop.val_interval == 0)

        def resume() -> None:
            if states is not None:
                restore(states)
            if validate:
                runner.val_loop.run()
                runner.model.train()  # as the loop sets it before each batch

        loop.dataloader_iterator = _ResumeBeforeBatch(loop.dataloader_iterator, runner.iter, resume)

    def before_val(self, runner) -> None:
        if self._training:
            self._before_validation = capture()

    def after_val(self, runner) -> None:
        self._before_validation = None

    def after_train(self, runner) -> None:
        self._training = False

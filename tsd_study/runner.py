"""mmengine from a loaded config (``tsd_study.config_loading``): build its model, train it with a Runner, test a
checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mmengine.config import Config

if TYPE_CHECKING:  # importing this module needs neither torch nor mmdetection: they load when used
    from mmengine.runner import Runner
    from torch import nn


def build_model(cfg: Config) -> nn.Module:
    """The model a loaded config describes, built in its registry scope (weights as its init leaves them: call
    ``init_weights`` to initialise as in training); device and meta-device contexts apply."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.get("default_scope", "mmdet"))
    return MODELS.build(cfg.model)


def train(cfg: Config, resume: bool = False) -> Runner:
    """Train with mmengine's Runner (``resume`` continues from the work dir's last checkpoint, random states
    included); every validation of a TSD model also logs its offset health."""
    from mmengine.runner import Runner

    from tsd_study import checkpoint_compat  # noqa: F401  (checkpoints load under torch's weights_only default)
    from tsd_study.models.offset_health import OffsetHealthHook
    from tsd_study.random_state import RandomStateHook

    cfg.resume = resume
    runner = Runner.from_cfg(cfg)
    runner.register_hook(OffsetHealthHook())
    runner.register_hook(RandomStateHook())
    runner.train()
    return runner


def test(cfg: Config, checkpoint: str | Path) -> dict[str, float]:
    """Evaluate ``checkpoint`` on the config's test split; returns the evaluator's metrics."""
    from mmengine.runner import Runner

    from tsd_study import checkpoint_compat  # noqa: F401  (checkpoints load under torch's weights_only default)

    cfg.load_from = str(checkpoint)
    return Runner.from_cfg(cfg).test()

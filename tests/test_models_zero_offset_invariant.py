"""The derived-proposal path, checked against the model it must reduce to: TSD w/o PC whose offsets are held at zero
is D_head (every derived proposal is P, the localization target is encoded relative to P). Starting from D_head's
weights it must train with D_head's losses, step after step, and predict D_head's detections. A port error anywhere
in the derived-proposal path (pooling, translation, targets, decoding) breaks one of the two.

Training is compared step by step from equal weights: before each step TSD takes D_head's weights again, then both
compute their losses and gradients on the same batch with the same sampler draws, and D_head takes an SGD step. Two
models that only differ in the order of their floating-point sums drift apart by rounding, and a drift of 1e-7 in
the weights eventually flips a discrete choice (an RPN proposal kept by NMS, a RoI matched at IoU 0.5) and with it the
losses: without the re-synchronisation the test would measure that chaos, not the port.

Uses the CPU profile's real configs (ImageNet EfficientNet-Lite0, the shapes data). Runtime about 25 s.
"""
from __future__ import annotations

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from torch import nn

from tsd_study.config_loading import load_config

DATASET = "shapes:48"
STEPS = 4
LOSS_TOLERANCE = 1e-5
LEARNING_RATE = 0.01


def _build(config: str, **overrides: object) -> tuple[nn.Module, object]:
    cfg = load_config(config, dataset=DATASET, cfg_options=overrides)
    init_default_scope("mmdet")
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model, cfg


def _hold_offsets_at_zero(model: nn.Module) -> None:
    predictor = model.roi_head.bbox_head.offset_predictor
    for head in predictor.task_heads.values():
        nn.init.zeros_(head[-1].weight)
        nn.init.zeros_(head[-1].bias)
    predictor.requires_grad_(False)


@pytest.fixture
def models() -> tuple[nn.Module, nn.Module, object]:
    """D_head and TSD w/o PC (offsets held at zero) with D_head's weights, and D_head's config."""
    dhead, cfg = _build("cpu/dhead")
    tsd, _ = _build("cpu/tsd_nopc")
    missing, unexpected = tsd.load_state_dict(dhead.state_dict(), strict=False)
    assert not unexpected and missing and all(".offset_predictor." in key for key in missing)
    _hold_offsets_at_zero(tsd)
    return dhead, tsd, cfg


def _batches(cfg, split: str, count: int) -> list[dict]:
    loader = Runner.build_dataloader(cfg[f"{split}_dataloader"], seed=0)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            return batches
    return batches


def _losses(model: nn.Module, batch: dict, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # the RPN's and the R-CNN's samplers draw the same RoIs for both models
    data = model.data_preprocessor(batch, True)
    return model(**data, mode="loss")


def test_tsd_with_zero_offsets_trains_exactly_like_dhead(models) -> None:
    dhead, tsd, cfg = models
    optimizer = torch.optim.SGD(dhead.parameters(), lr=LEARNING_RATE)
    for model in (dhead, tsd):
        model.train()
    for step, batch in enumerate(_batches(cfg, "train", STEPS)):
        tsd.load_state_dict(dhead.state_dict(), strict=False)
        losses = [_losses(model, batch, seed=step) for model in (dhead, tsd)]
        assert set(losses[0]) == set(losses[1])
        for name in losses[0]:
            for ours, reference in zip(_as_list(losses[1][name]), _as_list(losses[0][name])):
                torch.testing.assert_close(ours, reference, rtol=0, atol=LOSS_TOLERANCE,
                                           msg=lambda text, name=name: f"step {step}, {name}: {text}")
        for model, model_losses in zip((dhead, tsd), losses):
            model.zero_grad()
            model.parse_losses(model_losses)[0].backward()
        gradients = dict(tsd.named_parameters())
        for name, parameter in dhead.named_parameters():
            if parameter.grad is not None:
                torch.testing.assert_close(gradients[name].grad, parameter.grad, rtol=1e-4, atol=1e-6,
                                           msg=lambda text, name=name: f"step {step}, gradient of {name}: {text}")
        optimizer.step()
    predictor = tsd.roi_head.bbox_head.offset_predictor
    assert all(parameter.grad is None for parameter in predictor.parameters())  # held at zero throughout


def test_tsd_with_zero_offsets_predicts_exactly_like_dhead(models) -> None:
    dhead, tsd, cfg = models
    tsd.load_state_dict(dhead.state_dict(), strict=False)
    for model in (dhead, tsd):
        model.eval()
    (batch,) = _batches(cfg, "val", 1)
    with torch.no_grad():
        predictions = [model.test_step(batch) for model in (dhead, tsd)]
    detections = 0
    for reference, ours in zip(*predictions):
        reference, ours = reference.pred_instances, ours.pred_instances
        detections += len(reference)
        torch.testing.assert_close(ours.bboxes, reference.bboxes, rtol=0, atol=1e-4)
        torch.testing.assert_close(ours.scores, reference.scores, rtol=0, atol=1e-6)
        assert torch.equal(ours.labels, reference.labels)
    assert detections > 0


def _as_list(value: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return list(value) if isinstance(value, (list, tuple)) else [value]

"""Tests for the backbone disentanglement D_s8 / D_s16 / D_s32 (TaskSplitBackbone, TaskSplitNeck, TaskFeatures)."""
from __future__ import annotations

import re

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.registry import init_default_scope
from torch import Tensor, nn

from model_fixtures import (IMAGE_SIZE, branch_features, build_detector, build_roi_head, demo_features,
                                  fixed_rois, record_calls, tiny_detector_cfg)
from tsd_study.models import TaskFeatures, TaskSplitBackbone

RESNET = dict(type="ResNet", depth=18, base_channels=8, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=-1)
EFFICIENTNET = dict(type="EfficientNetLite", pretrained=False)
BACKBONES = {"resnet18": RESNET, "efficientnet_lite0": EFFICIENTNET}
STAGE_STRIDES = (4, 8, 16, 32)  # output stride of each backbone stage, for both backbones
SPLIT_STRIDES = (8, 16, 32)


def stages(body: nn.Module) -> list[nn.Module]:
    """The four stages of the wrapped backbone, ending at strides 4, 8, 16 and 32."""
    if hasattr(body, "res_layers"):
        return [getattr(body, name) for name in body.res_layers]
    return list(body.stages)


def split_backbone(name: str, split_stride: int) -> TaskSplitBackbone:
    init_default_scope("mmdet")
    backbone = TaskSplitBackbone(BACKBONES[name], split_stride)
    backbone.init_weights()
    return backbone


def copied_indices(split_stride: int) -> list[int]:
    """Stages whose output stride is above the split exist once per task."""
    return [index for index, stride in enumerate(STAGE_STRIDES) if stride > split_stride]


def assert_same_weights(first: nn.Module, second: nn.Module) -> None:
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    for key in first_state:
        assert torch.equal(first_state[key], second_state[key]), key


def same_tensors(first: tuple[Tensor, ...], second: tuple[Tensor, ...]) -> bool:
    """Whether two tuples hold the very same tensor objects (not merely equal values)."""
    return len(first) == len(second) and all(a is b for a, b in zip(first, second))


def storages(module: nn.Module) -> set[int]:
    return {parameter.data_ptr() for parameter in module.parameters()}


@pytest.mark.parametrize("split_stride", SPLIT_STRIDES)
@pytest.mark.parametrize("name", BACKBONES)
def test_localization_stages_are_initialised_copies(name: str, split_stride: int) -> None:
    """Above the split each stage has a localization copy with the same weights and its own parameters."""
    backbone = split_backbone(name, split_stride)
    sources = [stages(backbone.body)[index] for index in copied_indices(split_stride)]
    assert len(backbone.reg_stages) == len(sources)
    for source, copied in zip(sources, backbone.reg_stages):
        assert_same_weights(source, copied)
        assert storages(source).isdisjoint(storages(copied))
    body_parameters = sum(parameter.numel() for parameter in backbone.body.parameters())
    copied_parameters = sum(parameter.numel() for stage in sources for parameter in stage.parameters())
    assert sum(parameter.numel() for parameter in backbone.parameters()) == body_parameters + copied_parameters


@pytest.mark.parametrize("split_stride", SPLIT_STRIDES)
@pytest.mark.parametrize("name", BACKBONES)
def test_both_branches_agree_after_init_and_share_the_lower_stages(name: str, split_stride: int) -> None:
    """Levels up to the split are the very same tensors in both branches (one computation); the copied levels
    are distinct tensors, equal right after init; the localization output trains the shared stages and its own
    copies, never the classification stages above the split."""
    backbone = split_backbone(name, split_stride).eval()
    cls_levels, reg_levels = backbone(torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    for index, stride in enumerate(STAGE_STRIDES):
        assert (reg_levels[index] is cls_levels[index]) == (stride <= split_stride)
        assert torch.equal(reg_levels[index], cls_levels[index])

    sum(level.sum() for level in reg_levels).backward()
    body_stages = stages(backbone.body)
    copied = copied_indices(split_stride)
    for index, stage in enumerate(body_stages):
        trained = any(parameter.grad is not None for parameter in stage.parameters())
        assert trained == (index not in copied), f"stage {index}"
    assert all(parameter.grad is not None for parameter in backbone.reg_stages.parameters())


def test_norm_eval_reaches_the_copies() -> None:
    """EfficientNetLite keeps its BatchNorm statistics (norm_eval): in the localization copies as well."""
    backbone = split_backbone("efficientnet_lite0", 8).train()
    batch_norms = [module for module in backbone.modules() if isinstance(module, nn.BatchNorm2d)]
    assert any(norm in set(backbone.reg_stages.modules()) for norm in batch_norms)
    assert not any(norm.training for norm in batch_norms)


@pytest.mark.parametrize("split_stride", [2, 12, 64])
def test_bad_split_stride_names_the_key(split_stride: int) -> None:
    init_default_scope("mmdet")
    with pytest.raises(ValueError, match=re.escape(f"model.backbone.split_stride: {split_stride}")):
        TaskSplitBackbone(RESNET, split_stride)
    cfg = tiny_detector_cfg("ds8")
    cfg.backbone.split_stride = split_stride
    with pytest.raises(ValueError, match=re.escape("model.backbone.split_stride")):
        MODELS.build(cfg)


def test_unsupported_backbone_is_named() -> None:
    """A backbone without ResNet stages or ``stages``/``stage_strides`` is refused as such, not as a bad stride."""
    init_default_scope("mmdet")
    with pytest.raises(ValueError, match=re.escape("model.backbone.backbone")):
        TaskSplitBackbone(dict(type="MobileNetV2", out_indices=(1, 2, 4, 7)), 8)


def test_detector_copies_and_branches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny D_s8 detector: init_weights copies the stages; in inference the RPN reads the classification levels,
    the RoI head pools its classification branch from them and its localization branch from ``.reg``."""
    model = build_detector("ds8")
    body_stages = stages(model.backbone.body)
    for index, copied in zip(copied_indices(8), model.backbone.reg_stages, strict=True):
        assert_same_weights(body_stages[index], copied)
    with torch.no_grad():
        for parameter in model.neck.reg_neck.parameters():
            parameter.add_(0.5)  # make the two branches' features differ whatever the init

    outputs: dict[nn.Module, tuple[Tensor, ...]] = {}
    for module in (model.neck, model.neck.cls_neck, model.neck.reg_neck):
        module.register_forward_hook(lambda module, _, output: outputs.update({module: output}))
    rpn_inputs: list[TaskFeatures] = []
    model.rpn_head.register_forward_pre_hook(lambda _, args: rpn_inputs.append(args[0]))
    head_inputs: list[tuple[Tensor, Tensor]] = []
    model.roi_head.bbox_head.register_forward_pre_hook(lambda _, args: head_inputs.append(args))
    bbox_forward_calls = record_calls(model.roi_head, "_bbox_forward", monkeypatch)
    data = demo_mm_inputs(batch_size=1, image_shapes=(3, IMAGE_SIZE, IMAGE_SIZE),
                          num_classes=model.roi_head.bbox_head.num_classes)
    model.eval()
    with torch.no_grad():
        model.test_step(data)
        features = outputs[model.neck]
        rois = bbox_forward_calls[0][0][1]
        expected_cls = model.roi_head.bbox_roi_extractor(features, rois)
        expected_reg = model.roi_head.bbox_roi_extractor(features.reg, rois)

    assert isinstance(features, TaskFeatures)
    assert same_tensors(features, outputs[model.neck.cls_neck])
    assert same_tensors(features.reg, outputs[model.neck.reg_neck])
    assert len(rpn_inputs) == 1 and same_tensors(rpn_inputs[0], outputs[model.neck.cls_neck])
    assert not torch.allclose(expected_cls, expected_reg)
    cls_feats, reg_feats = head_inputs[0]
    torch.testing.assert_close(cls_feats, expected_cls)
    torch.testing.assert_close(reg_feats, expected_reg)


def test_tsd_derived_proposals_pool_from_their_task_branch(monkeypatch: pytest.MonkeyPatch) -> None:
    """TSD on a split backbone: offsets come from P on the classification levels; P_c is pooled from the
    classification levels and P_r from the localization levels."""
    roi_head = build_roi_head().eval()
    cls_levels = demo_features(roi_head)
    reg_levels = tuple(1.0 - level for level in cls_levels)
    rois = fixed_rois()
    predictor_inputs = record_calls(roi_head.bbox_head.offset_predictor, "forward", monkeypatch)
    with torch.no_grad():
        seen = branch_features(roi_head, TaskFeatures(cls_levels, reg_levels), rois)
        extractor = roi_head.derived_roi_extractor
        torch.testing.assert_close(predictor_inputs[0][0][0], roi_head.bbox_roi_extractor(cls_levels, rois))
        torch.testing.assert_close(seen["cls_feats"], extractor(cls_levels, rois, seen["cls_offsets"]))
        torch.testing.assert_close(seen["reg_feats"], extractor(reg_levels, rois, seen["reg_offsets"]))
        assert not torch.allclose(seen["reg_feats"], extractor(cls_levels, rois, seen["reg_offsets"]))

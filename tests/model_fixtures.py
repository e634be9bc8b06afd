"""Tiny models for the plugin tests, in mmdetection's test style: the packaged CPU configs with thin layers, a
random backbone, few RoIs and 64 px images."""
from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import pytest
import torch
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.testing import demo_mm_inputs, demo_mm_proposals
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch import Tensor, nn

from tsd_study.models import TSDRoIHead
from tsd_study.config_loading import read_config

CHANNELS = 8  # FPN and RoI feature channels
FC_CHANNELS = 32  # fc width of every box branch and of the offset predictor
NUM_PROPOSALS = 64  # RPN proposals per image, in training and in testing
NUM_SAMPLED = 32  # RoIs sampled per image for the R-CNN losses
IMAGE_SIZE = 64
GAMMA = 0.1  # the released code's offset scale


@functools.cache
def _parsed_config(name: str) -> Config:
    return read_config(name)


def packaged_config(name: str) -> Config:
    """A packaged config such as ``"cpu/tsd_pc"``, parsed once per session; each call returns a fresh copy."""
    return copy.deepcopy(_parsed_config(name))


def tiny_detector_cfg(config: str) -> ConfigDict:
    """The model of the packaged CPU config ``config`` (e.g. ``"tsd_pc"``), shrunk so that a step takes a second."""
    init_default_scope("mmdet")
    model = packaged_config(f"cpu/{config}").model
    task_split = model.backbone.type == "TaskSplitBackbone"
    (model.backbone.backbone if task_split else model.backbone).pretrained = False
    (model.neck.neck if task_split else model.neck).out_channels = CHANNELS
    model.rpn_head.update(in_channels=CHANNELS, feat_channels=CHANNELS)
    roi_head = model.roi_head
    roi_head.bbox_roi_extractor.out_channels = CHANNELS
    roi_head.bbox_head.update(in_channels=CHANNELS, fc_out_channels=FC_CHANNELS)
    if roi_head.bbox_head.type == "TSDBBoxHead":
        roi_head.bbox_head.offset_channels = FC_CHANNELS
    if "mask_head" in roi_head:
        roi_head.mask_roi_extractor.out_channels = CHANNELS
        roi_head.mask_head.update(in_channels=CHANNELS, conv_out_channels=CHANNELS)
    model.train_cfg.rpn_proposal.update(nms_pre=NUM_PROPOSALS, max_per_img=NUM_PROPOSALS)
    model.train_cfg.rcnn.sampler.num = NUM_SAMPLED
    model.test_cfg.rpn.update(nms_pre=NUM_PROPOSALS, max_per_img=NUM_PROPOSALS)
    return model


def build_detector(config: str) -> nn.Module:
    """A tiny detector of a packaged CPU config, initialised as in training."""
    model = MODELS.build(tiny_detector_cfg(config))
    model.init_weights()
    return model


def tiny_roi_head_cfg(config: str = "tsd_pc", **switches: object) -> ConfigDict:
    """The RoI head of a tiny CPU config with its R-CNN train/test settings and ``switches`` set under ``tsd``."""
    model = tiny_detector_cfg(config)
    roi_head = model.roi_head
    roi_head.update(train_cfg=model.train_cfg.rcnn, test_cfg=model.test_cfg.rcnn)
    if switches:
        roi_head.tsd = dict(roi_head.get("tsd", {}), **switches)
    return roi_head


def build_roi_head(config: str = "tsd_pc", **switches: object) -> TSDRoIHead:
    """A tiny TSD RoI head, initialised as in training."""
    roi_head = MODELS.build(tiny_roi_head_cfg(config, **switches))
    roi_head.init_weights()
    return roi_head


def demo_features(roi_head: TSDRoIHead, batch: int = 1, fill: float | None = None) -> tuple[Tensor, ...]:
    """Random (or constant ``fill``) FPN features of ``batch`` images at the strides the RoI head pools from."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(batch, CHANNELS, IMAGE_SIZE // stride, IMAGE_SIZE // stride)
              for stride in roi_head.bbox_roi_extractor.featmap_strides]
    if fill is not None:
        return tuple(torch.full(shape, fill) for shape in shapes)
    return tuple(torch.rand(shape, generator=generator) for shape in shapes)


def demo_samples(num_gt: list[int], num_classes: int) -> list[DetDataSample]:
    """Data samples of len(num_gt) images of IMAGE_SIZE px holding the given numbers of ground-truth boxes."""
    return demo_mm_inputs(batch_size=len(num_gt), image_shapes=(3, IMAGE_SIZE, IMAGE_SIZE), num_items=num_gt,
                          num_classes=num_classes)["data_samples"]


def demo_proposals(num_per_image: list[int]) -> list[InstanceData]:
    """mmdetection's random proposals, ``num_per_image[i]`` for image i."""
    return [demo_mm_proposals([(3, IMAGE_SIZE, IMAGE_SIZE)], num)[0] for num in num_per_image]


def count_calls(module: nn.Module) -> list[int]:
    """A one-element counter that every forward call of ``module`` increments."""
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


def record_calls(obj: object, name: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple, object]]:
    """Wrap method ``name`` of ``obj`` so that each call's (args, result) is recorded; it still runs unchanged."""
    calls: list[tuple[tuple, object]] = []
    method: Callable = getattr(obj, name)

    def recorded(*args: object, **kwargs: object) -> object:
        result = method(*args, **kwargs)
        calls.append((args, result))
        return result

    monkeypatch.setattr(obj, name, recorded)
    return calls


def zero_offsets(roi_head: TSDRoIHead) -> None:
    """Make the offset predictor output exactly zero offsets (last layer of each task head zeroed)."""
    for task_head in roi_head.bbox_head.offset_predictor.task_heads.values():
        nn.init.zeros_(task_head[-1].weight)
        nn.init.zeros_(task_head[-1].bias)


def reference_roi_align(roi_head: TSDRoIHead) -> SingleRoIExtractor:
    """mmcv's RoIAlign (aligned, the same levels and sample grid) as an independent reference for the features."""
    extractor = roi_head.derived_roi_extractor
    return SingleRoIExtractor(
        roi_layer=dict(type="RoIAlign", output_size=extractor.roi_layers[0].output_size,
                       sampling_ratio=extractor.roi_layers[0].sampling_ratio, aligned=True),
        out_channels=CHANNELS, featmap_strides=extractor.featmap_strides, finest_scale=extractor.finest_scale)


def branch_features(roi_head: TSDRoIHead, feats: tuple[Tensor, ...], rois: Tensor) -> dict:
    """Run ``_bbox_forward`` and return its results with the features the two TSD branches read and the offsets."""
    seen: dict = {}
    head = roi_head.bbox_head
    hooks = [head.register_forward_pre_hook(lambda _, args: seen.update(cls_feats=args[0], reg_feats=args[1]))]
    if head.offset_predictor is not None:
        hooks.append(head.offset_predictor.register_forward_hook(
            lambda _, __, output: seen.update(cls_offsets=output[0], reg_offsets=output[1])))
    results = roi_head._bbox_forward(feats, rois)
    for hook in hooks:
        hook.remove()
    return {**results, **seen}


def fixed_rois() -> Tensor:
    """Proposals inside a 64 px image: two small ones pooled from FPN level 0, a large one (scale >= 56) from level 1."""
    return torch.tensor([[0, 4.0, 6.0, 30.0, 28.0], [0, 2.0, 4.0, 62.0, 60.0], [0, 8.0, 30.0, 20.0, 40.0]])

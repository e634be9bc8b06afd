"""Backbone disentanglement D_s8 / D_s16 / D_s32 (the paper's Fig. 3 (a)-(c)).

From the split stride on, classification and localization get their own copy of the backbone stages and of the FPN,
so every layer above the split is duplicated. The RPN runs on the classification copy (the paper leaves this open);
the RoI head pools its localization branch from ``TaskFeatures.reg``.
"""
from __future__ import annotations

import copy

from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


class TaskFeatures(tuple):
    """Multi-level features of the classification branch (the tuple itself, what the RPN reads) carrying the
    localization branch's levels in ``reg``."""

    reg: tuple[Tensor, ...]

    def __new__(cls, cls_levels: tuple[Tensor, ...], reg_levels: tuple[Tensor, ...]) -> TaskFeatures:
        features = super().__new__(cls, cls_levels)
        features.reg = tuple(reg_levels)
        return features


@MODELS.register_module()
class TaskSplitBackbone(BaseModule):
    """A backbone whose stages with output stride above ``split_stride`` exist twice, one copy per task.

    Works with mmdetection's ResNet family (ResNet, ResNeXt, DCN variants) and with any backbone that exposes
    ``stem``, ``stages``, ``stage_strides``, ``out_indices`` and ``norm_eval`` (e.g. :class:`EfficientNetLite`).
    ``forward`` returns (classification outputs, localization outputs). Both copies start from the same weights
    (pretrained ones included): the localization stages are copied from the classification ones after init.
    """

    def __init__(self, backbone: dict, split_stride: int) -> None:
        super().__init__()
        self.body = MODELS.build(backbone)
        stages = _stages(self.body)
        stage_strides = _stage_strides(self.body)
        if split_stride not in stage_strides:
            raise ValueError(f"model.backbone.split_stride: {split_stride} is not a stage stride of "
                             f"{backbone.get('type')} {stage_strides}")
        self.split_stride = split_stride
        self.split_index = stage_strides.index(split_stride) + 1
        self.reg_stages = nn.ModuleList(copy.deepcopy(stage) for stage in stages[self.split_index:])

    def init_weights(self) -> None:
        """Initialise the backbone as configured, then give the localization stages the same weights."""
        self.body.init_weights()
        for source, copied in zip(_stages(self.body)[self.split_index:], self.reg_stages):
            copied.load_state_dict(source.state_dict())

    def forward(self, x: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        x = _stem(self.body, x)
        cls_outs: list[Tensor] = []
        reg_outs: list[Tensor] = []
        reg_x = None
        for index, stage in enumerate(_stages(self.body)):
            if index == self.split_index:
                reg_x = x
            x = stage(x)
            if reg_x is not None:
                reg_x = self.reg_stages[index - self.split_index](reg_x)
            if index in self.body.out_indices:
                cls_outs.append(x)
                reg_outs.append(x if reg_x is None else reg_x)
        return tuple(cls_outs), tuple(reg_outs)

    def train(self, mode: bool = True) -> TaskSplitBackbone:
        """Train mode that keeps the backbone's frozen stages and, with ``norm_eval``, BatchNorm statistics fixed."""
        super().train(mode)
        self.body.train(mode)
        if mode and self.body.norm_eval:
            for module in self.reg_stages.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self


def _is_resnet(body: nn.Module) -> bool:
    return hasattr(body, "res_layers")


def _stages(body: nn.Module) -> list[nn.Module]:
    if _is_resnet(body):
        return [getattr(body, name) for name in body.res_layers]
    if hasattr(body, "stages"):
        return list(body.stages)
    raise ValueError(f"model.backbone.backbone: {type(body).__name__} is neither a ResNet-family backbone nor "
                     "exposes stem/stages/stage_strides")


def _stage_strides(body: nn.Module) -> list[int]:
    if _is_resnet(body):
        strides = [4]
        for stride in body.strides:
            strides.append(strides[-1] * stride)
        return strides[1:]
    return list(getattr(body, "stage_strides", ()))


def _stem(body: nn.Module, x: Tensor) -> Tensor:
    if _is_resnet(body):
        x = body.stem(x) if body.deep_stem else body.relu(body.norm1(body.conv1(x)))
        return body.maxpool(x)
    return body.stem(x)


@MODELS.register_module()
class TaskSplitNeck(BaseModule):
    """Two copies of a neck (e.g. FPN), one per task, on the outputs of :class:`TaskSplitBackbone`; like the
    duplicated backbone stages, both start from the same weights."""

    def __init__(self, neck: dict) -> None:
        super().__init__()
        self.cls_neck = MODELS.build(neck)
        self.reg_neck = MODELS.build(neck)

    def init_weights(self) -> None:
        """Initialise the classification neck as configured and copy it into the localization neck."""
        self.cls_neck.init_weights()
        self.reg_neck.load_state_dict(self.cls_neck.state_dict())

    def forward(self, inputs: tuple[tuple[Tensor, ...], tuple[Tensor, ...]]) -> TaskFeatures:
        cls_levels, reg_levels = inputs
        return TaskFeatures(self.cls_neck(cls_levels), self.reg_neck(reg_levels))

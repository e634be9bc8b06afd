"""The TSD offset predictor: one shared fc on the RoI feature of P, then one small head per task (F_c, F_r)."""
from __future__ import annotations

from torch import Tensor, nn

from tsd_study.switches import Manner, OffsetInit


def offset_outputs(manner: Manner, roi_feat_size: int) -> int:
    """Number of offset values a task's head predicts: k*k*2 (pointwise), 2 (proposal-wise) or 0 (none)."""
    return {"point": roi_feat_size * roi_feat_size * 2, "prop": 2, "none": 0}[manner]


class TSDOffsetPredictor(nn.Module):
    """Predicts the derived-proposal offsets of both tasks from the flattened RoI feature F of P.

    Layout as in the released code: fc(C*k*k -> hidden) + ReLU shared, then per task fc(hidden -> hidden) + ReLU and
    fc(hidden -> outputs). Offsets come back shaped for :func:`deform_roi_pool`: (n, 2, k, k) pointwise (x first) or
    (n, 2) proposal-wise; a task whose manner is ``none`` gets ``None``.
    """

    def __init__(self, in_channels: int, roi_feat_size: int, cls_manner: Manner, reg_manner: Manner,
                 hidden_channels: int = 256, offset_init: OffsetInit = "released") -> None:
        super().__init__()
        self.roi_feat_size = roi_feat_size
        self.offset_init = offset_init
        self.manners = {"cls": cls_manner, "reg": reg_manner}
        self.shared_fc = nn.Linear(in_channels * roi_feat_size * roi_feat_size, hidden_channels)
        self.task_heads = nn.ModuleDict()
        for task, manner in self.manners.items():
            outputs = offset_outputs(manner, roi_feat_size)
            if outputs:
                self.task_heads[task] = nn.Sequential(
                    nn.Linear(hidden_channels, hidden_channels), nn.ReLU(inplace=True),
                    nn.Linear(hidden_channels, outputs))
        self.relu = nn.ReLU(inplace=True)

    def init_weights(self) -> None:
        """Kaiming normal (a=1) weights and zero biases (released code); with ``offset_init='zero'`` the last layer
        of each task starts at zero, so that every derived proposal starts at P."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, a=1)
                nn.init.zeros_(module.bias)
        if self.offset_init == "zero":
            for head in self.task_heads.values():
                nn.init.zeros_(head[-1].weight)

    def forward(self, roi_feats: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Return (classification offsets, localization offsets) for RoI features of shape (n, C, k, k)."""
        hidden = self.relu(self.shared_fc(roi_feats.flatten(1)))
        return self._task_offsets("cls", hidden), self._task_offsets("reg", hidden)

    def _task_offsets(self, task: str, hidden: Tensor) -> Tensor | None:
        if task not in self.task_heads:
            return None
        raw = self.task_heads[task](hidden)
        if self.manners[task] == "prop":
            return raw
        return raw.view(-1, 2, self.roi_feat_size, self.roi_feat_size)

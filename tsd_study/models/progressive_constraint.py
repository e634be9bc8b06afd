"""The progressive constraint (PC): the TSD branches must beat the sibling head H* by a margin.

The sibling side is detached (PC only pushes the TSD side up); the TSD IoU stays differentiable through the box
regression and the translated proposal P_r. With ``clamp`` the margin becomes min(1 - sibling value, m), detached, as in
the released code (not in the paper).
"""
from __future__ import annotations

import torch
from mmdet.structures.bbox import bbox_overlaps
from torch import Tensor


def _margin_hinge(sibling_value: Tensor, tsd_value: Tensor, margin: float, clamp: bool) -> Tensor:
    sibling_value = sibling_value.detach()
    margins = torch.clamp(1.0 - sibling_value, max=margin) if clamp else torch.full_like(sibling_value, margin)
    hinge = torch.relu(sibling_value - tsd_value + margins)
    return hinge.sum() / max(hinge.numel(), 1)  # 0, not NaN, when no RoI was sampled


def classification_constraint(sibling_scores: Tensor, tsd_scores: Tensor, labels: Tensor, margin: float,
                              clamp: bool = True) -> Tensor:
    """M_cls: mean over all sampled RoIs of relu(p_sib(y) - p_tsd(y) + m_c), y the target class (background too).

    Args:
        sibling_scores, tsd_scores: class logits (n, num_classes + 1).
        labels: targets (n,), background = num_classes.
    """
    rows = torch.arange(labels.numel(), device=labels.device)
    p_sibling = sibling_scores.softmax(dim=1)[rows, labels]
    p_tsd = tsd_scores.softmax(dim=1)[rows, labels]
    return _margin_hinge(p_sibling, p_tsd, margin, clamp)


def localization_constraint(sibling_boxes: Tensor, tsd_boxes: Tensor, gt_boxes: Tensor, margin: float,
                            clamp: bool = True) -> Tensor:
    """M_loc: mean over positive RoIs of relu(IoU(B_sib, B) - IoU(B_tsd, B) + m_r).

    Args:
        sibling_boxes, tsd_boxes, gt_boxes: decoded (x1, y1, x2, y2) boxes of the positive RoIs, (p, 4) each.
    """
    if gt_boxes.numel() == 0:
        return tsd_boxes.sum() * 0.0
    iou_sibling = bbox_overlaps(sibling_boxes, gt_boxes, is_aligned=True)
    iou_tsd = bbox_overlaps(tsd_boxes, gt_boxes, is_aligned=True)
    return _margin_hinge(iou_sibling, iou_tsd, margin, clamp)

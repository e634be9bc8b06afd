"""Tests for the progressive constraint: hand-computed values, the margin clamp, and where its gradients go."""
from __future__ import annotations

import pytest
import torch
from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
from torch import Tensor, nn

from model_fixtures import (NUM_PROPOSALS, build_roi_head, demo_features, demo_proposals, demo_samples,
                                  fixed_rois)
from tsd_study.models import TSDRoIHead, classification_constraint, localization_constraint, translate_rois

MARGIN = 0.3
BACKGROUND = 2  # two object classes, so background is index 2 (mmdetection >= 2)

# Class probabilities written so that softmax(log p) = p: (sibling, TSD, label).
# Row 0: p_sib(y) = 0.5, p_tsd(y) = 0.4; row 1 (background): 0.8 and 0.6; row 2: TSD already wins, 0.2 and 0.9.
SIBLING_PROBS = [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.3, 0.2, 0.5]]
TSD_PROBS = [[0.4, 0.4, 0.2], [0.2, 0.2, 0.6], [0.05, 0.9, 0.05]]
LABELS = [0, BACKGROUND, 1]
# Hinges with m = 0.3: 0.5 - 0.4 + 0.3 = 0.4, 0.8 - 0.6 + 0.3 = 0.5, relu(0.2 - 0.9 + 0.3) = 0.
M_CLS = (0.4 + 0.5 + 0.0) / 3
# Clamped margins min(1 - p_sib, 0.3) = 0.3, 0.2, 0.3: hinges 0.4, 0.4, 0.
M_CLS_CLAMPED = (0.4 + 0.4 + 0.0) / 3
# d M_cls / d TSD logits = -(1/3) p_tsd(y) (onehot(y) - p_tsd) on the active rows, 0 on row 2.
M_CLS_TSD_GRAD = [[-0.08, 0.16 / 3, 0.08 / 3], [0.04, 0.04, -0.08], [0.0, 0.0, 0.0]]

# Boxes against the ground truth (0, 0, 10, 10): IoU = height / 10.
GT_BOXES = [[0.0, 0.0, 10.0, 10.0]] * 3
SIBLING_BOXES = [[0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 9.0], [0.0, 0.0, 10.0, 2.0]]  # IoU 0.5, 0.9, 0.2
TSD_BOXES = [[0.0, 0.0, 10.0, 4.0], [0.0, 0.0, 10.0, 8.0], [0.0, 0.0, 10.0, 10.0]]  # IoU 0.4, 0.8, 1.0
# Hinges with m = 0.3: 0.5 - 0.4 + 0.3 = 0.4, 0.9 - 0.8 + 0.3 = 0.4, relu(0.2 - 1.0 + 0.3) = 0.
M_LOC = (0.4 + 0.4 + 0.0) / 3
# Clamped margins min(1 - IoU_sib, 0.3) = 0.3, 0.1, 0.3: hinges 0.4, 0.2, 0.
M_LOC_CLAMPED = (0.4 + 0.2 + 0.0) / 3

# Parameters of each TSD branch (classification reads P_c, localization reads P_r) and of the sibling head.
CLS_BRANCH = ("bbox_head.cls_fcs.", "bbox_head.fc_cls.", "bbox_head.offset_predictor.task_heads.cls.")
REG_BRANCH = ("bbox_head.reg_fcs.", "bbox_head.fc_reg.", "bbox_head.offset_predictor.task_heads.reg.")
SHARED_OFFSET_FC = ("bbox_head.offset_predictor.shared_fc.",)
# The gradient-path tests use the released offset init: with the last offset layers at zero (the CPU profile's init)
# no gradient reaches the layers behind them in the first step, which says nothing about the paths.
NONZERO_OFFSETS = dict(offset_init="released")
SIBLING_HEAD = ("bbox_head.sibling_head.",)
TRANSLATION_HEAD = "bbox_head.offset_predictor.task_heads.reg."


def logits(probabilities: list[list[float]]) -> Tensor:
    return torch.tensor(probabilities, dtype=torch.float64).log().requires_grad_()


def boxes(values: list[list[float]]) -> Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def parameter_grads(module: nn.Module, loss: Tensor) -> dict[str, Tensor | None]:
    """d loss / d parameter for every parameter of ``module`` (None where the loss does not depend on it)."""
    names, parameters = zip(*module.named_parameters())
    grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    return dict(zip(names, grads))


def select(grads: dict[str, Tensor | None], prefixes: tuple[str, ...]) -> dict[str, Tensor | None]:
    selected = {name: grad for name, grad in grads.items() if name.startswith(prefixes)}
    assert selected, f"no parameters under {prefixes}"
    return selected


def is_zero(grad: Tensor | None) -> bool:
    return grad is None or torch.count_nonzero(grad) == 0


def training_losses(roi_head: TSDRoIHead, fill: float | None = None) -> dict[str, Tensor]:
    """The RoI head's losses on one image with three ground-truth boxes (constant features when ``fill``)."""
    torch.manual_seed(0)
    return roi_head.loss(demo_features(roi_head, fill=fill), demo_proposals([NUM_PROPOSALS]),
                         demo_samples([3], roi_head.bbox_head.num_classes))


@pytest.mark.parametrize(("clamp", "expected"), [(False, M_CLS), (True, M_CLS_CLAMPED)])
def test_classification_constraint_by_hand(clamp: bool, expected: float) -> None:
    loss = classification_constraint(logits(SIBLING_PROBS), logits(TSD_PROBS), torch.tensor(LABELS), MARGIN, clamp)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("clamp", "expected"), [(False, M_LOC), (True, M_LOC_CLAMPED)])
def test_localization_constraint_by_hand(clamp: bool, expected: float) -> None:
    loss = localization_constraint(boxes(SIBLING_BOXES), boxes(TSD_BOXES), boxes(GT_BOXES), MARGIN, clamp)
    assert loss.item() == pytest.approx(expected, abs=1e-6)  # bbox_overlaps adds eps = 1e-6 to the union


def test_classification_constraint_pushes_only_the_tsd_scores() -> None:
    """The sibling scores get no gradient; the TSD logits get -(1/n) p(y) (onehot - p) where the hinge is active."""
    sibling, tsd = logits(SIBLING_PROBS), logits(TSD_PROBS)
    loss = classification_constraint(sibling, tsd, torch.tensor(LABELS), MARGIN, clamp=False)
    sibling_grad, tsd_grad = torch.autograd.grad(loss, (sibling, tsd), allow_unused=True)
    assert sibling_grad is None
    torch.testing.assert_close(tsd_grad, torch.tensor(M_CLS_TSD_GRAD, dtype=torch.float64))


@pytest.mark.parametrize("clamp", [False, True])
def test_localization_constraint_pushes_only_the_tsd_boxes(clamp: bool) -> None:
    """The sibling boxes get no gradient (the clamp is detached too); the TSD boxes do where the hinge is active."""
    sibling, tsd, gt = boxes(SIBLING_BOXES), boxes(TSD_BOXES), boxes(GT_BOXES)
    loss = localization_constraint(sibling, tsd, gt, MARGIN, clamp)
    sibling_grad, tsd_grad = torch.autograd.grad(loss, (sibling, tsd), allow_unused=True)
    assert sibling_grad is None
    assert torch.count_nonzero(tsd_grad[:2]) > 0
    assert torch.count_nonzero(tsd_grad[2]) == 0


def test_tsd_iou_is_differentiable_through_deltas_and_translation() -> None:
    """B_tsd decoded from P_r: M_loc reaches both the regression deltas and the translation offsets."""
    coder = DeltaXYWHBBoxCoder(target_means=(0.0,) * 4, target_stds=(0.1, 0.1, 0.2, 0.2))
    rois = fixed_rois().double()
    offsets = torch.tensor([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]], dtype=torch.float64, requires_grad=True)
    deltas = torch.full((3, 4), 0.05, dtype=torch.float64, requires_grad=True)
    gt = rois[:, 1:] + torch.tensor([1.0, -2.0, 3.0, 1.0], dtype=torch.float64)
    tsd_boxes = coder.decode(translate_rois(rois, offsets, gamma=0.1)[:, 1:], deltas)
    loss = localization_constraint(coder.decode(rois[:, 1:], torch.zeros(3, 4, dtype=torch.float64)), tsd_boxes,
                                   gt, MARGIN, clamp=True)
    offsets_grad, deltas_grad = torch.autograd.grad(loss, (offsets, deltas))
    assert torch.count_nonzero(offsets_grad) > 0 and torch.count_nonzero(deltas_grad) > 0


def test_localization_constraint_without_positives_is_zero_and_differentiable() -> None:
    empty = torch.zeros(0, 4, dtype=torch.float64)
    tsd = empty.clone().requires_grad_()
    for clamp in (False, True):
        loss = localization_constraint(empty, tsd, empty, MARGIN, clamp)
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, tsd)
        assert grad.shape == (0, 4)


@pytest.mark.parametrize(("loss_name", "reached", "not_reached"), [
    ("loss_pc_cls", CLS_BRANCH + SHARED_OFFSET_FC, REG_BRANCH + SIBLING_HEAD),
    ("loss_pc_loc", REG_BRANCH + SHARED_OFFSET_FC, CLS_BRANCH + SIBLING_HEAD),
])
def test_pc_term_trains_its_tsd_branch_and_never_the_sibling_head(
        loss_name: str, reached: tuple[str, ...], not_reached: tuple[str, ...]) -> None:
    """A real TSDRoIHead forward: each PC term alone reaches every parameter of its TSD branch (offset head
    included) and no parameter of the other branch or of the sibling head."""
    roi_head = build_roi_head(**NONZERO_OFFSETS)
    grads = parameter_grads(roi_head, training_losses(roi_head)[loss_name])
    assert [name for name, grad in select(grads, reached).items() if is_zero(grad)] == []
    assert [name for name, grad in select(grads, not_reached).items() if not is_zero(grad)] == []


def test_pc_loc_reaches_the_translation_through_p_r() -> None:
    """With constant feature maps the pooled features do not depend on the offsets, so a gradient that reaches the
    translation head must come through the boxes decoded relative to P_r."""
    roi_head = build_roi_head(target_grad=False, **NONZERO_OFFSETS)
    losses = training_losses(roi_head, fill=1.0)
    through_features = select(parameter_grads(roi_head, losses["loss_bbox"]), (TRANSLATION_HEAD,))
    through_p_r = select(parameter_grads(roi_head, losses["loss_pc_loc"]), (TRANSLATION_HEAD,))
    assert all(is_zero(grad) for grad in through_features.values())
    assert not any(is_zero(grad) for grad in through_p_r.values())


def test_pc_translation_grad_off_keeps_m_loc_out_of_the_translation() -> None:
    """SimpleDet's choice: M_loc decoded from a detached P_r reaches the regressor but not the translation head."""
    roi_head = build_roi_head(target_grad=False, pc_translation_grad=False, **NONZERO_OFFSETS)
    grads = parameter_grads(roi_head, training_losses(roi_head, fill=1.0)["loss_pc_loc"])
    assert all(is_zero(grad) for grad in select(grads, (TRANSLATION_HEAD,)).values())
    assert not any(is_zero(grad) for grad in select(grads, ("bbox_head.fc_reg.",)).values())


@pytest.mark.parametrize("target_grad", [True, False])
def test_target_grad_switch(target_grad: bool) -> None:
    """The TSD loss_bbox alone reaches the translation head through its target (encoded from P_r) exactly when
    target_grad is on (constant features: no gradient comes through the pooled features)."""
    roi_head = build_roi_head(target_grad=target_grad, **NONZERO_OFFSETS)
    grads = select(parameter_grads(roi_head, training_losses(roi_head, fill=1.0)["loss_bbox"]), (TRANSLATION_HEAD,))
    reached = [not is_zero(grad) for grad in grads.values()]
    assert reached == [target_grad] * len(grads)


def test_zero_margins_keep_pc_on() -> None:
    """m_c = m_r = 0 is a valid PC setting, not a way to turn PC off."""
    losses = training_losses(build_roi_head(margin_cls=0.0, margin_loc=0.0))
    assert {"loss_pc_cls", "loss_pc_loc"} <= set(losses)
    assert losses["loss_pc_cls"].requires_grad and losses["loss_pc_loc"].requires_grad

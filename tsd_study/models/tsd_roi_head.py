"""The TSD RoI head: StandardRoIHead with task-aware derived proposals, joint sibling training and the PC losses."""
from __future__ import annotations

import torch
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi, get_box_tensor
from mmdet.utils import ConfigType, InstanceList
from torch import Tensor

from tsd_study.switches import SWITCHES_KEY, SwitchError, TSDSwitches

from .offset_health import OffsetHealth
from .progressive_constraint import classification_constraint, localization_constraint

BRANCH_KEYS = ("cls_manner", "reg_manner", "with_sibling", "offset_init")
# Derived proposals are pooled like P: same levels, chosen the same way, and the same fixed sample grid when P's
# extractor has one (a DeformRoIExtractor); otherwise the grid is DeformRoIExtractor's default, the released 4 x 4.
SHARED_EXTRACTOR_KEYS = ("out_channels", "featmap_strides", "finest_scale", "sampling_ratio")


def translate_rois(rois: Tensor, offsets: Tensor, gamma: float) -> Tensor:
    """P_r: each RoI (n, 5) shifted by gamma * offset * (w, h); both corners move, the size stays."""
    shift = gamma * offsets * (rois[:, 3:5] - rois[:, 1:3])
    return torch.cat([rois[:, :1], rois[:, 1:3] + shift, rois[:, 3:5] + shift], dim=1)


@MODELS.register_module()
class TSDRoIHead(StandardRoIHead):
    """Task-aware spatial disentanglement (Song et al., CVPR 2020) on mmdetection's StandardRoIHead.

    Classification reads P_c (pointwise-deformed P), localization reads P_r (P translated) and regresses relative to
    it; the sibling head H* trains on P beside them and the progressive constraint makes the TSD branches beat it by
    a margin. At inference only the TSD branches run. The switches (``tsd=dict(...)``, see :class:`TSDSwitches`) also
    express D_head (both manners ``none``) and every ablation of the paper. With a task-split backbone
    (:class:`TaskSplitNeck`) the localization branch pools from the localization features.

    Args:
        tsd: the switches; omitted ones take the released code's values.
        derived_roi_extractor: overrides for :class:`DeformRoIExtractor` (e.g. ``sampling_ratio``).

    Attributes:
        offset_health: when set (by :class:`OffsetHealthHook`, for an evaluation), ``predict_bbox`` records where
            the derived proposals sit.
    """

    def __init__(self, tsd: dict | None = None, derived_roi_extractor: dict | None = None, **kwargs) -> None:
        self.switches = TSDSwitches.from_config(tsd)
        self._derived_roi_extractor_cfg = dict(derived_roi_extractor or {})
        self.offset_health: OffsetHealth | None = None
        super().__init__(**kwargs)
        if self.with_shared_head:
            raise SwitchError("model.roi_head.shared_head: TSDRoIHead does not support a shared (C4) head")

    def init_bbox_head(self, bbox_roi_extractor: ConfigType, bbox_head: ConfigType) -> None:
        """Build the RoI extractor of P, the TSD bbox head and, when offsets are predicted, the derived extractor."""
        clashes = sorted(set(BRANCH_KEYS) & set(bbox_head))
        if clashes:
            raise SwitchError(f"model.roi_head.bbox_head: {clashes} come from {SWITCHES_KEY}; set them there")
        switches = self.switches
        super().init_bbox_head(bbox_roi_extractor, dict(
            bbox_head, cls_manner=switches.cls_manner, reg_manner=switches.reg_manner,
            with_sibling=switches.joint_sibling, offset_init=switches.offset_init))
        self.derived_roi_extractor = None
        if self.bbox_head.offset_predictor is not None:
            same_levels = {key: bbox_roi_extractor[key] for key in SHARED_EXTRACTOR_KEYS if key in bbox_roi_extractor}
            self.derived_roi_extractor = MODELS.build(dict(
                type="DeformRoIExtractor", output_size=self.bbox_head.roi_feat_size[0], gamma=switches.gamma,
                **{**same_levels, **self._derived_roi_extractor_cfg}))

    def _bbox_forward(self, x: tuple[Tensor, ...], rois: Tensor) -> dict:
        """Features of P, the TSD predictions, the predicted offsets, ``reg_rois`` (the boxes the regression is
        relative to: P_r, or P) and, in training with joint sibling training, the sibling predictions on P."""
        head = self.bbox_head
        feats = self.bbox_roi_extractor(x[:self.bbox_roi_extractor.num_inputs], rois)
        reg_levels = getattr(x, "reg", None)
        cls_offsets, reg_offsets = (None, None) if head.offset_predictor is None else head.offset_predictor(feats)
        cls_feats = feats if cls_offsets is None else self.derived_roi_extractor(x, rois, cls_offsets)
        if reg_offsets is not None:
            reg_feats = self.derived_roi_extractor(x if reg_levels is None else reg_levels, rois, reg_offsets)
        elif reg_levels is not None:
            reg_feats = self.bbox_roi_extractor(reg_levels[:self.bbox_roi_extractor.num_inputs], rois)
        else:
            reg_feats = feats
        cls_score, bbox_pred = head(cls_feats, reg_feats)
        reg_rois = rois
        if self.switches.reg_manner == "prop":
            reg_rois = translate_rois(rois, reg_offsets, self.switches.gamma)
        results = dict(cls_score=cls_score, bbox_pred=bbox_pred, bbox_feats=feats, reg_rois=reg_rois,
                       cls_offsets=cls_offsets, reg_offsets=reg_offsets)
        if self.training and head.sibling_head is not None:
            results["sibling_cls_score"], results["sibling_bbox_pred"] = head.sibling_head(feats)
        return results

    def bbox_loss(self, x: tuple[Tensor, ...], sampling_results: list[SamplingResult]) -> dict:
        """TSD losses (targets of the localization branch encoded relative to P_r), sibling losses and PC."""
        head = self.bbox_head
        switches = self.switches
        rois = bbox2roi([res.priors for res in sampling_results])
        results = self._bbox_forward(x, rois)
        labels, label_weights, sibling_targets, bbox_weights = head.get_targets(sampling_results, self.train_cfg)
        positives = ((labels >= 0) & (labels < head.num_classes)).nonzero(as_tuple=True)[0]
        gt_boxes = _assigned_gt_boxes(sampling_results)[positives]
        reg_rois = results["reg_rois"] if switches.target_grad else results["reg_rois"].detach()
        tsd_targets = sibling_targets.index_put(
            (positives,), head.bbox_coder.encode(reg_rois[positives, 1:], gt_boxes))
        losses = head.loss(results["cls_score"], results["bbox_pred"], results["reg_rois"], labels, label_weights,
                           tsd_targets, bbox_weights)
        if head.sibling_head is not None:
            sibling_losses = head.sibling_head.loss(results["sibling_cls_score"], results["sibling_bbox_pred"], rois,
                                                    labels, label_weights, sibling_targets, bbox_weights)
            losses.update({name.replace("loss_", "loss_sibling_") if name.startswith("loss_") else f"{name}_sibling":
                           value for name, value in sibling_losses.items()})
        if switches.pc_cls:
            losses["loss_pc_cls"] = classification_constraint(
                results["sibling_cls_score"], results["cls_score"], labels, switches.margin_cls, switches.margin_clamp)
        if switches.pc_loc:
            pos_labels = labels[positives]
            sibling_boxes = head.bbox_coder.decode(
                rois[positives, 1:], self._class_deltas(results["sibling_bbox_pred"][positives], pos_labels))
            pc_rois = results["reg_rois"] if switches.pc_translation_grad else results["reg_rois"].detach()
            tsd_boxes = head.bbox_coder.decode(
                pc_rois[positives, 1:], self._class_deltas(results["bbox_pred"][positives], pos_labels))
            losses["loss_pc_loc"] = localization_constraint(
                sibling_boxes, tsd_boxes, gt_boxes, switches.margin_loc, switches.margin_clamp)
        results["loss_bbox"] = losses
        return results

    def predict_bbox(self, x: tuple[Tensor, ...], batch_img_metas: list[dict], rpn_results_list: InstanceList,
                     rcnn_test_cfg: ConfigType, rescale: bool = False) -> InstanceList:
        """Scores from the TSD classifier, boxes decoded relative to P_r; the sibling head does not run."""
        proposals = [res.bboxes for res in rpn_results_list]
        rois = bbox2roi(proposals)
        if rois.shape[0] == 0:
            return super().predict_bbox(x, batch_img_metas, rpn_results_list, rcnn_test_cfg, rescale)
        results = self._bbox_forward(x, rois)
        if self.offset_health is not None and self.derived_roi_extractor is not None:
            image_sizes = rois.new_tensor([meta["img_shape"][:2] for meta in batch_img_metas])
            self.offset_health.record(results["bbox_feats"], rois,
                                      {"cls": results["cls_offsets"], "reg": results["reg_offsets"]},
                                      self.switches.gamma, image_sizes)
        per_image = tuple(len(p) for p in proposals)
        return self.bbox_head.predict_by_feat(
            rois=results["reg_rois"].split(per_image), cls_scores=results["cls_score"].split(per_image),
            bbox_preds=results["bbox_pred"].split(per_image), batch_img_metas=batch_img_metas,
            rcnn_test_cfg=rcnn_test_cfg, rescale=rescale)

    def _class_deltas(self, bbox_pred: Tensor, labels: Tensor) -> Tensor:
        return class_deltas(bbox_pred, labels, self.bbox_head.reg_class_agnostic)


def class_deltas(bbox_pred: Tensor, labels: Tensor, class_agnostic: bool) -> Tensor:
    """The (n, 4) box deltas of each RoI's class ``labels`` from class-specific (n, 4 * classes) predictions, or the
    shared ones of class-agnostic regression."""
    if class_agnostic:
        return bbox_pred
    per_class = bbox_pred.view(bbox_pred.size(0), bbox_pred.size(1) // 4, 4)
    return per_class[torch.arange(labels.numel(), device=labels.device), labels]


def _assigned_gt_boxes(sampling_results: list[SamplingResult]) -> Tensor:
    """Ground-truth box of every sampled RoI in ``bbox2roi`` order (positives first per image; zeros for negatives)."""
    return torch.cat([
        torch.cat([get_box_tensor(res.pos_gt_bboxes), res.pos_priors.new_zeros((len(res.neg_priors), 4))])
        for res in sampling_results])

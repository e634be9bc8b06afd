"""What a trained TSD head does to its proposals, for the paper's Fig. 5: P, P_r and the sampling points of P_c."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from mmcv.ops import batched_nms
from mmdet.structures.bbox import bbox2roi

from tsd_study.atomic import write_json_atomic

from .offset_health import bin_centers
from .tsd_roi_head import TSDRoIHead, class_deltas


@torch.no_grad()
def describe_derived_proposals(model: torch.nn.Module, batch: dict, max_detections: int = 5,
                               score_thr: float = 0.3) -> list[dict]:
    """For each image of a test batch, its most confident TSD detections with the proposals they came from.

    Each detection: class index and score, the final box, the proposal P, the box the regression is relative to
    (P_r, or P when the localization branch does not translate) and the 49 deformed bin centres of P_c (absent when the
    classification branch is not pointwise), all in the original image's pixel coordinates.
    """
    roi_head = model.roi_head
    if not isinstance(roi_head, TSDRoIHead):
        raise TypeError(f"describe_derived_proposals needs a TSD model, got a {type(roi_head).__name__}")
    model.eval()
    data = model.data_preprocessor(batch, False)
    features = model.extract_feat(data["inputs"])
    proposals = model.rpn_head.predict(features, data["data_samples"], rescale=False)
    rois = bbox2roi([proposal.bboxes for proposal in proposals])
    results = roi_head._bbox_forward(features, rois)
    head = roi_head.bbox_head
    scores, labels = results["cls_score"].softmax(dim=1)[:, :-1].max(dim=1)
    deltas = class_deltas(results["bbox_pred"], labels, head.reg_class_agnostic)
    boxes = head.bbox_coder.decode(results["reg_rois"][:, 1:], deltas)
    centres = None
    if roi_head.switches.cls_manner == "point":
        centres = bin_centers(rois, results["cls_offsets"], roi_head.switches.gamma, head.roi_feat_size[0])
    images = []
    for image_index, sample in enumerate(data["data_samples"]):
        in_image = (rois[:, 0] == image_index) & (scores >= score_thr)
        candidates = in_image.nonzero(as_tuple=True)[0]
        chosen = candidates
        if len(candidates):  # mmcv's batched_nms fails on no boxes
            _, kept = batched_nms(boxes[candidates], scores[candidates], labels[candidates], dict(iou_threshold=0.5))
            chosen = candidates[kept[:max_detections]]
        scale_x, scale_y = sample.metainfo["scale_factor"]
        to_image = rois.new_tensor([scale_x, scale_y, scale_x, scale_y])
        detections = [{
            "label": int(labels[index]), "score": float(scores[index]),
            "box": (boxes[index] / to_image).tolist(),
            "proposal": (rois[index, 1:] / to_image).tolist(),
            "reg_proposal": (results["reg_rois"][index, 1:] / to_image).tolist(),
            "cls_points": None if centres is None else (centres[index] / to_image[:2]).tolist(),
        } for index in chosen.tolist()]
        images.append({"img_path": sample.metainfo["img_path"], "detections": detections})
    return images


def dump_derived_proposals(model: torch.nn.Module, batches: Iterable[dict], path: Path, num_images: int = 4,
                           classes: tuple[str, ...] = (), max_scanned: int = 64) -> None:
    """Write ``describe_derived_proposals`` of ``num_images`` images of ``batches`` to ``path`` (JSON).

    Images with detections come first: up to ``max_scanned`` images are looked at to find them, and images without
    any fill the remaining places (an undertrained model may detect nothing).
    """
    with_detections: list[dict] = []
    without: list[dict] = []
    scanned = 0
    for batch in batches:
        for image in describe_derived_proposals(model, batch):
            (with_detections if image["detections"] else without).append(image)
            scanned += 1
        if len(with_detections) >= num_images or scanned >= max_scanned:
            break
    images = (with_detections + without)[:num_images]
    write_json_atomic(path, {"classes": list(classes), "gamma": model.roi_head.switches.gamma,
                             "cls_manner": model.roi_head.switches.cls_manner,
                             "reg_manner": model.roi_head.switches.reg_manner, "images": images},
                      indent=1)

"""Tests for the TSD RoI head: targets, derived proposals, inference path, checkpoints and empty inputs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi
from mmdet.testing import demo_mm_inputs
from mmengine.runner import load_checkpoint, save_checkpoint
from torch import Tensor, nn

from tsd_study.models import TSDRoIHead, translate_rois


from model_fixtures import (NUM_PROPOSALS, IMAGE_SIZE, GAMMA, tiny_detector_cfg, build_detector, build_roi_head, demo_features, demo_samples, demo_proposals, count_calls, record_calls, zero_offsets, reference_roi_align, branch_features, fixed_rois)


@pytest.fixture
def roi_head() -> TSDRoIHead:
    """The tiny TSD + PC RoI head of cpu/tsd_pc (margins 0.2) with the released offset init, whose offsets start away
    from zero, so that derived proposals differ from P."""
    return build_roi_head(offset_init="released")


def test_targets_use_background_index_num_classes(roi_head: TSDRoIHead, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negatives get label num_classes; class 0 is a real class; the TSD target encodes the ground truth from P_r."""
    head = roi_head.bbox_head
    tsd_loss_calls = record_calls(head, "loss", monkeypatch)
    sibling_loss_calls = record_calls(head.sibling_head, "loss", monkeypatch)
    forward_calls = record_calls(roi_head, "_bbox_forward", monkeypatch)
    samples = demo_samples([3], head.num_classes)
    samples[0].gt_instances.labels = torch.tensor([0, 2, head.num_classes - 1])
    torch.manual_seed(0)
    roi_head.loss(demo_features(roi_head), demo_proposals([NUM_PROPOSALS]), samples)

    (_, _, _, labels, _, tsd_targets, _), _ = tsd_loss_calls[0]
    (_, _, rois, sibling_labels, _, sibling_targets, _), _ = sibling_loss_calls[0]
    reg_rois = forward_calls[0][1]["reg_rois"]
    positive = labels < head.num_classes
    assert head.fc_cls.out_features == head.num_classes + 1
    assert torch.equal(labels, sibling_labels)
    assert set(labels[positive].tolist()) == {0, 2, head.num_classes - 1}
    assert (labels[~positive] == head.num_classes).all() and (~positive).any()
    gt_from_p = head.bbox_coder.decode(rois[positive, 1:], sibling_targets[positive])
    gt_from_p_r = head.bbox_coder.decode(reg_rois[positive, 1:], tsd_targets[positive])
    torch.testing.assert_close(gt_from_p_r, gt_from_p, atol=1e-3, rtol=0)
    distance_to_gt = torch.cdist(gt_from_p, samples[0].gt_instances.bboxes).min(dim=1).values
    assert distance_to_gt.max() < 1e-3
    assert not torch.allclose(tsd_targets[positive], sibling_targets[positive])


def test_zero_offsets_pool_plain_roi_align_of_p(roi_head: TSDRoIHead) -> None:
    """With zero offsets P_r == P, and both TSD branches read mmcv's RoIAlign of P (float64)."""
    roi_head.double().eval()
    zero_offsets(roi_head)
    feats = tuple(level.double() for level in demo_features(roi_head))
    rois = fixed_rois().double()
    results = branch_features(roi_head, feats, rois)
    expected = reference_roi_align(roi_head)(feats, rois)
    assert roi_head.derived_roi_extractor.map_roi_levels(rois, len(feats)).tolist() == [0, 1, 0]
    assert torch.equal(results["reg_rois"], rois)
    torch.testing.assert_close(results["cls_feats"], expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(results["reg_feats"], expected, atol=1e-10, rtol=0)


def test_localization_branch_reads_roi_align_of_p_r(roi_head: TSDRoIHead) -> None:
    """The P_r features are exactly RoIAlign of the translated boxes, pooled on P's level (float64)."""
    roi_head.double().eval()
    feats = tuple(level.double() for level in demo_features(roi_head))
    rois = fixed_rois().double()
    results = branch_features(roi_head, feats, rois)
    translated = translate_rois(rois, results["reg_offsets"], GAMMA)
    assert results["reg_offsets"].abs().min() > 0
    torch.testing.assert_close(results["reg_rois"], translated)
    torch.testing.assert_close(results["reg_feats"], reference_roi_align(roi_head)(feats, translated),
                               atol=1e-10, rtol=0)


def test_translate_rois_moves_both_corners() -> None:
    """P_r = P + gamma * offset * (w, h) at both corners: (10, 20, 50, 100) is 40 x 80, offset (0.5, -0.25)."""
    rois = torch.tensor([[1.0, 10.0, 20.0, 50.0, 100.0]])
    translated = translate_rois(rois, torch.tensor([[0.5, -0.25]]), gamma=0.1)
    torch.testing.assert_close(translated, torch.tensor([[1.0, 12.0, 18.0, 52.0, 98.0]]))


def test_inference_runs_only_the_tsd_branches(roi_head: TSDRoIHead) -> None:
    """The sibling head runs in training, never in inference: NaN sibling weights leave predictions unchanged."""
    sibling_calls = count_calls(roi_head.bbox_head.sibling_head)
    feats = demo_features(roi_head)
    samples = demo_samples([2], roi_head.bbox_head.num_classes)
    roi_head.loss(feats, demo_proposals([NUM_PROPOSALS]), samples)
    assert sibling_calls == [1]

    roi_head.eval()
    with torch.no_grad():
        before = roi_head.predict(feats, demo_proposals([NUM_PROPOSALS]), samples)[0]
        for parameter in roi_head.bbox_head.sibling_head.parameters():
            parameter.fill_(float("nan"))
        after = roi_head.predict(feats, demo_proposals([NUM_PROPOSALS]), samples)[0]
    assert sibling_calls == [1]
    assert len(after) > 0 and torch.isfinite(after.bboxes).all() and torch.isfinite(after.scores).all()
    for key in ("bboxes", "scores", "labels"):
        assert torch.equal(after[key], before[key])


def test_predicted_boxes_are_decoded_from_p_r(roi_head: TSDRoIHead) -> None:
    """predict_bbox (without NMS) equals the TSD regression decoded by hand from the returned reg_rois."""
    roi_head.eval()
    head = roi_head.bbox_head
    feats = demo_features(roi_head)
    samples = demo_samples([1], head.num_classes)
    proposals = demo_proposals([10])
    rois = bbox2roi([proposals[0].bboxes])
    with torch.no_grad():
        results = roi_head._bbox_forward(feats, rois)
        predicted = roi_head.predict_bbox(feats, [samples[0].metainfo], proposals, rcnn_test_cfg=None)[0]

    def decode_from(boxes: Tensor) -> Tensor:
        per_class = boxes[:, 1:].repeat_interleave(head.num_classes, dim=0)
        return head.bbox_coder.decode(per_class, results["bbox_pred"].view(-1, 4),
                                      max_shape=samples[0].img_shape).view(len(boxes), -1)

    torch.testing.assert_close(predicted.scores, results["cls_score"].softmax(dim=1))
    torch.testing.assert_close(predicted.bboxes, decode_from(results["reg_rois"]))
    assert not torch.allclose(predicted.bboxes, decode_from(rois))


def test_offset_predictor_has_the_released_init(roi_head: TSDRoIHead) -> None:
    """Kaiming normal (a=1: std 1/sqrt(fan_in)) and zero biases everywhere; the last offset layers are not zero.

    Weights scaled by sqrt(fan_in) are standard normal: pooled over all layers (~18k values) their std is 1 within
    a few per mille; each layer alone (the last localization layer has only 64 weights) within 35%.
    """
    predictor = roi_head.bbox_head.offset_predictor
    linears = [module for module in predictor.modules() if isinstance(module, nn.Linear)]
    assert len(linears) == 5  # shared fc, then two layers per task
    scaled = [linear.weight.flatten() * linear.in_features ** 0.5 for linear in linears]
    assert torch.cat(scaled).std().item() == pytest.approx(1.0, rel=0.05)
    for linear, weights in zip(linears, scaled):
        assert torch.count_nonzero(linear.bias) == 0
        assert weights.std().item() == pytest.approx(1.0, rel=0.35)
    assert predictor.task_heads["cls"][-1].out_features == 7 * 7 * 2
    assert predictor.task_heads["reg"][-1].out_features == 2


def test_zero_offset_init_starts_every_derived_proposal_at_p() -> None:
    """``offset_init='zero'``: the last offset layers are zero (the others keep the released init), so P_c and P_r
    start as P; the first gradient step reaches the zero layers."""
    roi_head = build_roi_head(offset_init="zero")
    predictor = roi_head.bbox_head.offset_predictor
    for head in predictor.task_heads.values():
        assert not head[-1].weight.any() and not head[-1].bias.any()
        assert head[0].weight.std() > 0
    features, rois = demo_features(roi_head), fixed_rois()
    results = roi_head._bbox_forward(features, rois)
    assert not results["cls_offsets"].any() and not results["reg_offsets"].any()
    torch.testing.assert_close(results["reg_rois"], rois)
    results["cls_score"].sum().backward()
    assert predictor.task_heads["cls"][-1].weight.grad.abs().sum() > 0


def test_sibling_checkpoint_loads_with_and_without_the_sibling_head(tmp_path: Path) -> None:
    """A tsd_pc checkpoint loads strictly into tsd_pc and, with unexpected sibling keys only, into tsd_nopc;
    all three models predict identically."""
    source = build_detector("tsd_pc")
    checkpoint = tmp_path / "tsd_pc.pth"
    save_checkpoint({"state_dict": source.state_dict(), "meta": {}}, str(checkpoint))
    same_config = MODELS.build(tiny_detector_cfg("tsd_pc"))
    without_sibling = MODELS.build(tiny_detector_cfg("tsd_nopc"))
    load_checkpoint(same_config, str(checkpoint), map_location="cpu", strict=True)
    load_checkpoint(without_sibling, str(checkpoint), map_location="cpu", strict=False)

    incompatible = without_sibling.load_state_dict(source.state_dict(), strict=False)
    assert incompatible.missing_keys == []
    assert incompatible.unexpected_keys
    assert all(key.startswith("roi_head.bbox_head.sibling_head.") for key in incompatible.unexpected_keys)
    data = demo_mm_inputs(batch_size=1, image_shapes=(3, IMAGE_SIZE, IMAGE_SIZE),
                          num_classes=source.roi_head.bbox_head.num_classes)
    predictions = []
    for model in (source, same_config, without_sibling):
        model.eval()
        with torch.no_grad():
            predictions.append(model.test_step(data)[0].pred_instances)
    assert len(predictions[0]) > 0
    for other in predictions[1:]:
        for key in ("bboxes", "scores", "labels"):
            assert torch.equal(other[key], predictions[0][key])


def test_losses_with_and_without_ground_truth(roi_head: TSDRoIHead) -> None:
    """mmdetection's check: every loss is positive with ground truth; without it only classification remains."""
    num_classes = roi_head.bbox_head.num_classes
    feats = demo_features(roi_head)
    losses = roi_head.loss(feats, demo_proposals([NUM_PROPOSALS]), demo_samples([3], num_classes))
    for name in ("loss_cls", "loss_bbox", "loss_sibling_cls", "loss_sibling_bbox", "loss_pc_cls", "loss_pc_loc"):
        assert torch.isfinite(losses[name]) and losses[name] > 0, name

    empty = roi_head.loss(feats, demo_proposals([NUM_PROPOSALS]), demo_samples([0], num_classes))
    assert empty["loss_cls"] > 0 and empty["loss_sibling_cls"] > 0
    assert torch.isfinite(empty["loss_pc_cls"])
    for name in ("loss_bbox", "loss_sibling_bbox", "loss_pc_loc"):
        assert empty[name].item() == 0.0, name
        assert empty[name].requires_grad, name


@pytest.mark.parametrize("switches", [dict(pc_loc=False), dict(pc_cls=False)], ids=["pc_cls", "pc_loc"])
def test_no_rois_at_all_give_zero_losses(switches: dict) -> None:
    """No proposals and no ground truth leave no RoI to sample: every loss is a finite zero, as mmdetection's
    StandardRoIHead gives, so one such batch cannot poison training with NaN."""
    roi_head = build_roi_head(**switches)
    samples = demo_samples([0], roi_head.bbox_head.num_classes)
    losses = roi_head.loss(demo_features(roi_head), demo_proposals([0]), samples)
    assert {name: value.item() for name, value in losses.items()} == dict.fromkeys(losses, 0.0)


def test_empty_proposals(roi_head: TSDRoIHead) -> None:
    """No proposals: training falls back on the ground truth as RoIs, inference returns no boxes for that image."""
    num_classes = roi_head.bbox_head.num_classes
    feats = demo_features(roi_head, batch=2)
    losses = roi_head.loss(feats, demo_proposals([0, 0]), demo_samples([2, 1], num_classes))
    assert all(torch.isfinite(value) for value in losses.values())
    assert losses["loss_bbox"] > 0

    roi_head.eval()
    samples = demo_samples([1, 1], num_classes)
    with torch.no_grad():
        all_empty = roi_head.predict(feats, demo_proposals([0, 0]), samples)
        one_empty = roi_head.predict(feats, demo_proposals([0, 10]), samples)
    assert [len(result) for result in all_empty] == [0, 0]
    assert len(one_empty[0]) == 0 and len(one_empty[1]) > 0
    assert one_empty[0].bboxes.shape == (0, 4)

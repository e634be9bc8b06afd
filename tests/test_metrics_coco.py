"""COCO evaluation and its area x IoU breakdown, checked against pycocotools' COCOeval on official and real data."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

from tsd_study.metrics import (
    CocoEvaluation,
    CocoInputError,
    breakdown_frame,
    evaluate_coco,
    format_report,
)

from shared_data import SHARED_DATA

COCO_REF = SHARED_DATA / "coco_eval_ref"
COCO_REF_GT = COCO_REF / "instances_val2014_100.json"
COCO_REF_RESULTS = {
    "bbox": COCO_REF / "instances_val2014_fakebbox100_results.json",
    "segm": COCO_REF / "instances_val2014_fakesegm100_results.json",
}
VOC100 = SHARED_DATA / "voc100"
VOC100_GT = VOC100 / "gts" / "coco_format_v1" / "instances_default.json"
VOC100_DETS = VOC100 / "dets" / "coco_format" / "coco_dets.json"
# pycocotools 2.0.11 on the VOC-100 detections, as listed (rounded to 4 digits) in voc100/SOURCE.md.
VOC100_STATS = [0.347, 0.61, 0.3537, 0.0752, 0.3395, 0.4979, 0.3735, 0.5206, 0.5226, 0.1583, 0.4467, 0.5809]
AREA_STATS = {"all": 0, "small": 3, "medium": 4, "large": 5}  # index of each area's AP@[.5:.95] in COCOeval.stats


@pytest.fixture(scope="module", params=["bbox", "segm"])
def reference(request: pytest.FixtureRequest) -> CocoEvaluation:
    """The official cocoapi fake results on 100 val2014 images, evaluated as bbox and as segm."""
    return evaluate_coco(COCO_REF_GT, COCO_REF_RESULTS[request.param], request.param)


def _cell(evaluation: CocoEvaluation, area: str, iou: float) -> float | None:
    """The breakdown AP at one area and IoU threshold."""
    (ap,) = [cell["AP"] for cell in evaluation.breakdown if cell["area"] == area and cell["iou"] == iou]
    return ap


def _voc100_detections() -> list[dict]:
    """The VOC-100 detections with image and category ids mapped to the ground truth by file and class name."""
    gt = json.loads(VOC100_GT.read_text())
    dets = json.loads(VOC100_DETS.read_text())
    gt_image_ids = {image["file_name"]: image["id"] for image in gt["images"]}
    gt_category_ids = {category["name"]: category["id"] for category in gt["categories"]}
    det_file_names = {image["id"]: image["file_name"] for image in dets["images"]}
    det_category_names = {category["id"]: category["name"] for category in dets["categories"]}
    return [
        {
            "image_id": gt_image_ids[det_file_names[det["image_id"]]],
            "category_id": gt_category_ids[det_category_names[det["category_id"]]],
            "bbox": det["bbox"],
            "score": det["score"],
        }
        for det in dets["annotations"]
    ]


def _large_only_gt() -> dict:
    """Two 300x300 images with three large (150x150) boxes in two classes and nothing small or medium."""
    boxes = [(1, 1, 1, [10, 10, 150, 150]), (2, 2, 1, [100, 50, 150, 150]), (3, 2, 2, [0, 0, 150, 150])]
    return {
        "images": [{"id": id_, "width": 300, "height": 300, "file_name": f"{id_}.jpg"} for id_ in (1, 2)],
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "crate"}],
        "annotations": [
            {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": box, "area": 22500.0, "iscrowd": 0}
            for ann_id, image_id, category_id, box in boxes
        ],
    }


LARGE_ONLY_GT = _large_only_gt()


def _detection(**fields: object) -> dict:
    """A detection of class 1 in image 1 of the large-only ground truth, with some fields replaced (None: dropped)."""
    detection = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9], "score": 1.0} | fields
    return {key: value for key, value in detection.items() if value is not None}


def _gt_as_detections(gt: dict) -> list[dict]:
    """Every ground-truth box as a detection with score 1."""
    return [
        {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"], "score": 1.0}
        for ann in gt["annotations"]
    ]


def _write_json(path: Path, content: object) -> Path:
    """Write content as json and return the path."""
    path.write_text(json.dumps(content))
    return path


def _write_input(path: Path, content: object) -> None:
    """Leave the file absent (None), write raw text (str), or write json (anything else)."""
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        _write_json(path, content)


def test_stats_agree_with_the_official_reference(reference: CocoEvaluation) -> None:
    expected = json.loads((COCO_REF / "expected.json").read_text())[reference.iou_type]
    assert reference.stats == pytest.approx(expected, abs=1e-9, rel=0)


def test_breakdown_matches_the_summary_stats(reference: CocoEvaluation) -> None:
    assert _cell(reference, "all", 0.5) == reference.stats[1]
    assert _cell(reference, "all", 0.75) == reference.stats[2]
    for area, stat_index in AREA_STATS.items():
        row = [cell["AP"] for cell in reference.breakdown if cell["area"] == area]
        assert len(row) == 10
        assert np.mean(row) == pytest.approx(reference.stats[stat_index], abs=1e-12, rel=0)


def test_breakdown_cell_equals_cocoeval_restricted_to_that_cell(reference: CocoEvaluation) -> None:
    defaults = Params(iouType=reference.iou_type)
    iou = defaults.iouThrs[2]
    medium = defaults.areaRng[defaults.areaRngLbl.index("medium")]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(COCO_REF_GT))
        evaluator = COCOeval(gt, gt.loadRes(str(COCO_REF_RESULTS[reference.iou_type])), reference.iou_type)
        evaluator.params.iouThrs = np.array([iou])
        evaluator.params.areaRng = [medium]
        evaluator.params.areaRngLbl = ["all"]  # summarize reports stats[0] for the area labelled "all"
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert round(float(iou), 2) == 0.6
    assert _cell(reference, "medium", 0.6) == pytest.approx(evaluator.stats[0], abs=1e-12, rel=0)


def test_voc100_real_detections_reproduce_pycocotools_stats() -> None:
    evaluation = evaluate_coco(VOC100_GT, _voc100_detections())
    assert evaluation.stats == pytest.approx(VOC100_STATS, abs=1e-4, rel=0)


def test_ground_truth_scored_as_detections_gives_ap_one() -> None:
    detections = _gt_as_detections(json.loads(VOC100_GT.read_text()))
    evaluation = evaluate_coco(VOC100_GT, detections)
    assert evaluation.stats[0] == 1.0
    assert all(cell["AP"] == 1.0 for cell in evaluation.breakdown)


def test_area_without_ground_truth_is_none(tmp_path: Path) -> None:
    gt = _large_only_gt()
    evaluation = evaluate_coco(_write_json(tmp_path / "gt.json", gt), _gt_as_detections(gt))
    for cell in evaluation.breakdown:
        assert cell["AP"] == (None if cell["area"] in ("small", "medium") else 1.0)
    assert evaluation.stats[3] == evaluation.stats[4] == -1.0
    assert breakdown_frame(evaluation).loc[["small", "medium"]].isna().all(axis=None)
    assert '"AP": null' in json.dumps(evaluation.to_json())


def test_empty_detections_score_like_a_detection_that_matches_nothing(tmp_path: Path) -> None:
    gt_path = _write_json(tmp_path / "gt.json", _large_only_gt())
    # A lone small false positive is ignored in the medium and large ranges and scores 0 where it counts.
    stray = [_detection(bbox=[290, 290, 5, 5], score=0.5)]
    empty = evaluate_coco(gt_path, _write_json(tmp_path / "dets.json", []))
    assert empty.stats == evaluate_coco(gt_path, stray).stats
    assert empty.stats == [0.0, 0.0, 0.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, -1.0, 0.0]
    assert {cell["AP"] for cell in empty.breakdown} == {0.0, None}


def test_empty_detections_for_segm_give_zeros() -> None:
    evaluation = evaluate_coco(COCO_REF_GT, [], "segm")
    assert evaluation.stats == [0.0] * 12


def test_accepts_a_coco_object_and_leaves_the_detections_untouched() -> None:
    detections = _voc100_detections()
    before = json.dumps(detections)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(VOC100_GT))
    evaluation = evaluate_coco(gt, detections)
    assert json.dumps(detections) == before
    assert evaluation.stats == pytest.approx(VOC100_STATS, abs=1e-4, rel=0)


def test_pycocotools_printing_is_silenced(capsys: pytest.CaptureFixture[str]) -> None:
    evaluate_coco(VOC100_GT, _voc100_detections())
    assert capsys.readouterr().out == ""


def test_errors_inside_pycocotools_propagate_with_their_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt = _large_only_gt()
    gt["annotations"][0]["bbox"] = [10, 10, 150]
    with pytest.raises(Exception, match="bounding box") as raised:
        evaluate_coco(_write_json(tmp_path / "gt.json", gt), _gt_as_detections(_large_only_gt()))
    assert "Running per image evaluation" in "\n".join(raised.value.__notes__)
    assert capsys.readouterr().out == ""


def test_breakdown_frame_has_areas_as_rows_and_ious_as_columns(reference: CocoEvaluation) -> None:
    frame = breakdown_frame(reference)
    assert list(frame.index) == ["all", "small", "medium", "large"]
    assert list(frame.columns) == pytest.approx(np.linspace(0.5, 0.95, 10))
    assert frame.loc["medium", 0.6] == _cell(reference, "medium", 0.6)


def test_format_report_names_the_stats_and_shows_the_table(reference: CocoEvaluation) -> None:
    report = format_report(reference)
    for name in ("AP ", "AP50", "AP75", "APs", "APm", "APl", "AR1 ", "AR10 ", "AR100", "ARs", "ARm", "ARl"):
        assert name in report
    assert re.search(r"^all\s+0\.\d{3}(\s+0\.\d{3}){9}$", report, flags=re.MULTILINE)
    assert f"{reference.stats[0]:.3f}" in report


def test_to_json_round_trips(reference: CocoEvaluation) -> None:
    restored = json.loads(json.dumps(reference.to_json()))
    assert restored == {"stats": reference.stats, "breakdown": reference.breakdown}


@pytest.mark.parametrize(
    ("gt_content", "dets_content", "iou_type", "message"),
    [
        (None, [], "bbox", "{gt}: ground-truth file does not exist"),
        ("{not json", [], "bbox", "{gt}: ground-truth file is not valid JSON (Expecting property name"),
        ({"images": [], "categories": []}, [], "bbox", "{gt}: ground truth needs a list under key 'annotations'"),
        (LARGE_ONLY_GT, None, "bbox", "{dets}: detections file does not exist"),
        (LARGE_ONLY_GT, {"annotations": []}, "bbox",
         "{dets}: detections must be a JSON list of result objects, got dict"),
        (LARGE_ONLY_GT, [_detection(score=None)], "bbox",
         "{dets}: 1 (0) detections (list positions) are not objects with key 'score'"),
        (LARGE_ONLY_GT, [_detection(), _detection(image_id=7)], "bbox",
         "{dets}: detections refer to 1 (7) image_id values that the ground truth does not have"),
        (LARGE_ONLY_GT, [_detection(category_id=9)], "bbox",
         "{dets}: detections refer to 1 (9) category_id values that the ground truth does not have"),
        (LARGE_ONLY_GT, [_detection(bbox=[0, 0, 9])], "bbox",
         "{dets}: bbox must be 4 numbers [x, y, width, height]; 1 (0) detections"),
        (LARGE_ONLY_GT, [_detection()], "keypoints", "iou_type 'keypoints' is not supported; use one of bbox, segm"),
    ],
)
def test_bad_input_is_reported_with_file_and_problem(
    tmp_path: Path, gt_content: object, dets_content: object, iou_type: str, message: str
) -> None:
    gt_path, dets_path = tmp_path / "gt.json", tmp_path / "dets.json"
    _write_input(gt_path, gt_content)
    _write_input(dets_path, dets_content)
    expected = message.format(gt=gt_path, dets=dets_path)
    with pytest.raises(CocoInputError, match=re.escape(expected)):
        evaluate_coco(gt_path, dets_path, iou_type)


def test_segm_needs_segmentations_in_detections_and_ground_truth() -> None:
    boxes_only = json.loads(COCO_REF_RESULTS["bbox"].read_text())
    with pytest.raises(CocoInputError, match="detections list: 734 .* not objects with key 'segmentation'"):
        evaluate_coco(COCO_REF_GT, boxes_only, "segm")
    empty_masks = [{**detection, "segmentation": []} for detection in boxes_only]
    with pytest.raises(CocoInputError, match="detections list: segm evaluation needs a segmentation on every detec"):
        evaluate_coco(COCO_REF_GT, empty_masks, "segm")
    with pytest.raises(CocoInputError, match=re.escape(f"{VOC100_GT}: segm evaluation needs a segmentation")):
        evaluate_coco(VOC100_GT, _gt_as_detections(json.loads(VOC100_GT.read_text())), "segm")

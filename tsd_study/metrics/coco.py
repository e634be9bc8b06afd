"""COCO evaluation with pycocotools' COCOeval, plus AP by object area at every IoU threshold (Table 9 / Fig. 6).

The 12 summary numbers are COCOeval's own; the breakdown is read from the same ``eval['precision']`` array and
averaged the way ``COCOeval.summarize`` averages, so both agree with the official evaluator by construction.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

IOU_TYPES = ("bbox", "segm")
BREAKDOWN_MAX_DETS = 100
"""The detection budget of the area x IoU breakdown, the one COCOeval uses for AP, AP50, AP75, APs, APm and APl."""

_GEOMETRY_KEY = {"bbox": "bbox", "segm": "segmentation"}
_GT_KEYS = {
    "images": ("id",),
    "categories": ("id",),
    "annotations": ("id", "image_id", "category_id", "bbox", "area", "iscrowd"),
}
_MAX_LISTED = 5


class StatDefinition(NamedTuple):
    """One of the 12 numbers of ``COCOeval.stats``, described the way COCOeval.summarize prints it."""

    name: str
    iou: str
    area: str
    max_dets: int


STAT_DEFINITIONS = (
    StatDefinition("AP", "0.50:0.95", "all", 100),
    StatDefinition("AP50", "0.50", "all", 100),
    StatDefinition("AP75", "0.75", "all", 100),
    StatDefinition("APs", "0.50:0.95", "small", 100),
    StatDefinition("APm", "0.50:0.95", "medium", 100),
    StatDefinition("APl", "0.50:0.95", "large", 100),
    StatDefinition("AR1", "0.50:0.95", "all", 1),
    StatDefinition("AR10", "0.50:0.95", "all", 10),
    StatDefinition("AR100", "0.50:0.95", "all", 100),
    StatDefinition("ARs", "0.50:0.95", "small", 100),
    StatDefinition("ARm", "0.50:0.95", "medium", 100),
    StatDefinition("ARl", "0.50:0.95", "large", 100),
)


class CocoInputError(ValueError):
    """Ground truth or detections that cannot be scored; the message starts with where they came from."""


@dataclass(frozen=True)
class CocoEvaluation:
    """COCOeval's 12 summary numbers and the AP of every (area, IoU threshold) pair at maxDets=100."""

    iou_type: str
    stats: list[float]
    breakdown: list[dict]

    def to_json(self) -> dict:
        """A JSON-ready copy: ``{"stats": [...], "breakdown": [...]}``, AP in [0, 1], null for an area without GT."""
        return {"stats": list(self.stats), "breakdown": [dict(cell) for cell in self.breakdown]}


def evaluate_coco(gt: Path | COCO, detections: Path | list[dict], iou_type: str = "bbox") -> CocoEvaluation:
    """Score detections (a COCO results json or its list of dicts) against COCO ground truth with COCOeval."""
    if iou_type not in IOU_TYPES:
        raise CocoInputError(f"iou_type {iou_type!r} is not supported; use one of {', '.join(IOU_TYPES)}")
    gt_coco = _ground_truth_coco(gt, iou_type)
    records, source = _load_detections(detections)
    _check_detections(records, source, gt_coco, iou_type)
    with _quiet_pycocotools():
        evaluator = COCOeval(gt_coco, _results_coco(gt_coco, records), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return CocoEvaluation(
        iou_type=iou_type,
        stats=[float(value) for value in evaluator.stats],
        breakdown=_area_iou_breakdown(evaluator),
    )


def breakdown_frame(evaluation: CocoEvaluation) -> pd.DataFrame:
    """The breakdown as a table: one row per area, one column per IoU threshold, AP values (NaN: no GT)."""
    cells = pd.DataFrame(evaluation.breakdown)
    areas = list(dict.fromkeys(cells["area"]))
    return cells.pivot(index="area", columns="iou", values="AP").reindex(areas).astype(float)


def format_report(evaluation: CocoEvaluation) -> str:
    """A plain-text report: the 12 stats with their usual names, then the area x IoU AP table."""
    lines = [f"COCO {evaluation.iou_type} evaluation"]
    for definition, value in zip(STAT_DEFINITIONS, evaluation.stats, strict=True):
        lines.append(
            f"  {definition.name:<6} IoU={definition.iou:<9} area={definition.area:<6} "
            f"maxDets={definition.max_dets:<3}  {value:6.3f}"
        )
    table = breakdown_frame(evaluation).rename(columns=lambda iou: f"{iou:.2f}")
    lines.append(f"AP by area (rows) and IoU threshold (columns), maxDets={BREAKDOWN_MAX_DETS}, '-': no ground truth")
    lines.append(table.to_string(float_format=lambda ap: f"{ap:.3f}", na_rep="-"))
    return "\n".join(lines)


@contextlib.contextmanager
def _quiet_pycocotools() -> Iterator[None]:
    """Swallow pycocotools' progress printing; an exception raised inside keeps that output as a note."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    except BaseException as error:
        output = captured.getvalue().strip()
        if output:
            error.add_note(f"pycocotools output before the error:\n{output}")
        raise


def _read_json(path: Path, what: str) -> Any:
    """Parse a json file, naming the file and the problem when it is missing or malformed."""
    if not path.is_file():
        raise CocoInputError(f"{path}: {what} file does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CocoInputError(
            f"{path}: {what} file is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise CocoInputError(f"{path}: cannot read {what} file ({error})") from error


def _ground_truth_coco(gt: Path | COCO, iou_type: str) -> COCO:
    """The ground truth as a checked pycocotools COCO index (read from a COCO instances json unless given as one)."""
    if isinstance(gt, COCO):
        _check_ground_truth(gt.dataset, "ground-truth COCO object", iou_type)
        return gt
    path = Path(gt)
    dataset = _read_json(path, "ground-truth")
    if not isinstance(dataset, dict):
        raise CocoInputError(f"{path}: ground truth must be a JSON object, got {type(dataset).__name__}")
    _check_ground_truth(dataset, str(path), iou_type)
    coco = COCO()
    coco.dataset = dataset
    with _quiet_pycocotools():
        coco.createIndex()
    return coco


def _check_ground_truth(dataset: dict, source: str, iou_type: str) -> None:
    """Require the lists and keys COCOeval reads, and masks on every annotation when scoring segm."""
    for section, keys in _GT_KEYS.items():
        records = dataset.get(section)
        if not isinstance(records, list):
            raise CocoInputError(f"{source}: ground truth needs a list under key {section!r}")
        _require_keys(records, keys, source, f"ground-truth {section}")
    if iou_type == "segm":
        unmasked = [ann["id"] for ann in dataset["annotations"] if not ann.get("segmentation")]
        if unmasked:
            raise CocoInputError(
                f"{source}: segm evaluation needs a segmentation on every ground-truth annotation; "
                f"{_count_and_examples(unmasked)} annotation ids have none"
            )


def _load_detections(detections: Path | list[dict]) -> tuple[list[dict], str]:
    """The detection records and the name to give them in errors."""
    if isinstance(detections, list):
        return detections, "detections list"
    path = Path(detections)
    records = _read_json(path, "detections")
    if not isinstance(records, list):
        raise CocoInputError(
            f"{path}: detections must be a JSON list of result objects, got {type(records).__name__}"
        )
    return records, str(path)


def _check_detections(records: list[dict], source: str, gt_coco: COCO, iou_type: str) -> None:
    """Require the keys COCOeval reads and ids that exist in the ground truth."""
    geometry_key = _GEOMETRY_KEY[iou_type]
    _require_keys(records, ("image_id", "category_id", "score", geometry_key), source, "detections")
    if iou_type == "segm":
        unmasked = [index for index, record in enumerate(records) if not record["segmentation"]]
        if unmasked:
            raise CocoInputError(
                f"{source}: segm evaluation needs a segmentation on every detection; "
                f"{_count_and_examples(unmasked)} detections (list positions) have an empty one"
            )
    else:
        malformed = [index for index, record in enumerate(records) if not _is_xywh(record["bbox"])]
        if malformed:
            raise CocoInputError(
                f"{source}: bbox must be 4 numbers [x, y, width, height]; "
                f"{_count_and_examples(malformed)} detections (list positions) are not"
            )
    _require_known_ids(records, "image_id", set(gt_coco.getImgIds()), source)
    _require_known_ids(records, "category_id", set(gt_coco.getCatIds()), source)


def _is_xywh(bbox: Any) -> bool:
    """Whether a value is a COCO box: 4 numbers."""
    return (
        isinstance(bbox, list | tuple | np.ndarray)
        and len(bbox) == 4
        and all(isinstance(value, numbers.Real) for value in bbox)
    )


def _require_keys(records: list, keys: Sequence[str], source: str, what: str) -> None:
    """Every record must be a JSON object holding all keys."""
    for key in keys:
        lacking = [index for index, record in enumerate(records) if not isinstance(record, dict) or key not in record]
        if lacking:
            raise CocoInputError(
                f"{source}: {_count_and_examples(lacking)} {what} (list positions) are not objects with key {key!r}"
            )


def _require_known_ids(records: list[dict], key: str, known: set[int], source: str) -> None:
    """Every record's ``key`` must name an id present in the ground truth."""
    unknown = list(dict.fromkeys(record[key] for record in records if record[key] not in known))
    if unknown:
        raise CocoInputError(
            f"{source}: detections refer to {_count_and_examples(unknown)} {key} values "
            "that the ground truth does not have"
        )


def _count_and_examples(items: Sequence[Any]) -> str:
    """'N (e.g. a, b, c)': how many, and the first few, for error messages."""
    examples = ", ".join(str(item) for item in items[:_MAX_LISTED])
    return f"{len(items)} (e.g. {examples})" if len(items) > _MAX_LISTED else f"{len(items)} ({examples})"


def _results_coco(gt_coco: COCO, records: list[dict]) -> COCO:
    """A COCO index of the detections; built directly when there are none, since loadRes fails on an empty list."""
    if records:
        # loadRes writes id, area, iscrowd (and bbox or segmentation) into each record: hand it copies.
        return gt_coco.loadRes([dict(record) for record in records])
    results = COCO()
    results.dataset = {
        "images": list(gt_coco.dataset["images"]),
        "categories": copy.deepcopy(gt_coco.dataset["categories"]),
        "annotations": [],
    }
    results.createIndex()
    return results


def _area_iou_breakdown(evaluator: COCOeval) -> list[dict]:
    """AP per (area, IoU threshold) at maxDets=100 from ``eval['precision']`` (T x R x K x A x M)."""
    params = evaluator.params
    precision = evaluator.eval["precision"]
    max_dets_index = params.maxDets.index(BREAKDOWN_MAX_DETS)
    return [
        {
            "area": area,
            "iou": round(float(iou), 2),
            "AP": _mean_of_valid(precision[iou_index, :, :, area_index, max_dets_index]),
        }
        for area_index, area in enumerate(params.areaRngLbl)
        for iou_index, iou in enumerate(params.iouThrs)
    ]


def _mean_of_valid(precision: np.ndarray) -> float | None:
    """The mean of the entries > -1, as COCOeval.summarize takes it; None when there are none."""
    valid = precision[precision > -1]
    return float(np.mean(valid)) if valid.size else None

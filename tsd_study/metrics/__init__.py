"""Detection metrics: COCO evaluation with the AP breakdown by object area and IoU threshold."""

from tsd_study.metrics.coco import (
    BREAKDOWN_MAX_DETS,
    IOU_TYPES,
    STAT_DEFINITIONS,
    CocoEvaluation,
    CocoInputError,
    StatDefinition,
    breakdown_frame,
    evaluate_coco,
    format_report,
)

__all__ = [
    "BREAKDOWN_MAX_DETS",
    "IOU_TYPES",
    "STAT_DEFINITIONS",
    "CocoEvaluation",
    "CocoInputError",
    "StatDefinition",
    "breakdown_frame",
    "evaluate_coco",
    "format_report",
]

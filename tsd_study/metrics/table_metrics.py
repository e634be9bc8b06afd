"""A run's ``metrics.json`` as the flat, percent-scaled metric names the study definitions use.

``metrics.json`` (written by the training job) holds, per IoU type, ``CocoEvaluation.to_json()`` (12 stats in [0, 1]
and the area x IoU breakdown), plus ``latency_ms`` and ``params_M``. Tables name them like the paper:
AP, AP50, AP75, APs, APm, APl (box), mask_AP, mask_AP50, ... (masks), AP_<area>_<iou x 100> (e.g. AP_small_50),
latency_ms and params_M. AP values become percent, as in the paper.
"""
from __future__ import annotations

from typing import Any

from .coco import STAT_DEFINITIONS

PREFIXES = {"bbox": "", "segm": "mask_"}
PLAIN_METRICS = ("latency_ms", "params_M")


def table_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Flatten one run's metrics; missing or undefined values (-1 or null from COCOeval) are left out."""
    values: dict[str, float] = {}
    for iou_type, prefix in PREFIXES.items():
        evaluation = metrics.get(iou_type)
        if evaluation is None:
            continue
        for definition, stat in zip(STAT_DEFINITIONS, evaluation["stats"]):
            if stat >= 0:
                values[prefix + definition.name] = 100.0 * stat
        for cell in evaluation["breakdown"]:
            if cell["AP"] is not None:
                values[f"{prefix}AP_{cell['area']}_{round(cell['iou'] * 100)}"] = 100.0 * cell["AP"]
    values.update({name: float(metrics[name]) for name in PLAIN_METRICS if metrics.get(name) is not None})
    return values

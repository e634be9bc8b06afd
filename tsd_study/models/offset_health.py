"""Offset health: where a TSD head's derived proposals sit, measured while it evaluates.

A derived proposal that starts or drifts far from P (offsets of several RoI widths, sample points outside the image)
reads features that have nothing to do with its object, and a head whose offsets never move from zero is D_head with
extra parameters. Both show in a few numbers, accumulated over every RoI of an evaluation:

- ``feature_rms``: RMS of the RoI features of P that the offset predictor reads (the scale the released Kaiming
  init of its last layers multiplies);
- ``cls_offset_rms`` / ``cls_offset_max``: RMS and largest absolute displacement of P_c's bins (classification),
  ``reg_offset_rms`` / ``reg_offset_max`` the same for P_r (localization), in RoI widths (x) and heights (y);
- ``cls_points_outside``: the share of P_c's bin centres that lie outside their image.

:class:`OffsetHealthHook` attaches an :class:`OffsetHealth` to a :class:`TSDRoIHead` for every validation and test
epoch and logs the summary; it also leaves it in the message hub as ``offset_health`` for other hooks to read.
"""
from __future__ import annotations

import math

import torch
from mmengine.dist import all_reduce, is_distributed
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import Tensor

HEALTH_INFO_KEY = "offset_health"
"""Message-hub info key under which :class:`OffsetHealthHook` leaves the last evaluation's summary."""
TASKS = ("cls", "reg")


def bin_centers(rois: Tensor, offsets: Tensor | None, gamma: float, grid: int) -> Tensor:
    """Centres of the ``grid`` x ``grid`` bins of each RoI (n, 5), each moved by its offset: (n, grid^2, 2).

    ``offsets`` is pointwise (n, 2, grid, grid), one translation per RoI (n, 2), or None (the undeformed grid).
    """
    x1, y1, x2, y2 = (rois[:, index, None, None] for index in range(1, 5))
    steps = (torch.arange(grid, dtype=rois.dtype, device=rois.device) + 0.5) / grid
    centre_x = x1 + steps[None, None, :] * (x2 - x1)
    centre_y = y1 + steps[None, :, None] * (y2 - y1)
    if offsets is not None:
        if offsets.dim() == 2:
            offsets = offsets[:, :, None, None]
        centre_x = centre_x + gamma * offsets[:, 0] * (x2 - x1)
        centre_y = centre_y + gamma * offsets[:, 1] * (y2 - y1)
    centre_x, centre_y = torch.broadcast_tensors(centre_x, centre_y)
    return torch.stack([centre_x, centre_y], dim=-1).flatten(1, 2)


class OffsetHealth:
    """Running sums over the RoIs a TSD head has seen since it was created; :meth:`summary` gives the statistics."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._maxima: dict[str, float] = {}

    @torch.no_grad()
    def record(self, feats: Tensor, rois: Tensor, offsets: dict[str, Tensor | None], gamma: float,
               image_sizes: Tensor) -> None:
        """Add one forward pass: RoI features (n, C, k, k) of ``rois`` (n, 5), each task's raw offsets (or None),
        and the (height, width) of each image of the batch (``rois[:, 0]`` indexes them)."""
        self._add("feature_sq", feats.double().square().sum(), feats.numel())
        for task in TASKS:
            task_offsets = offsets.get(task)
            if task_offsets is None:
                continue
            displacement = gamma * task_offsets.double()
            self._add(f"{task}_sq", displacement.square().sum(), displacement.numel())
            self._maxima[f"{task}_offset_max"] = max(self._maxima.get(f"{task}_offset_max", 0.0),
                                                     float(displacement.abs().max()) if displacement.numel() else 0.0)
        cls_offsets = offsets.get("cls")
        if cls_offsets is not None:
            centres = bin_centers(rois, cls_offsets, gamma, feats.shape[-1])
            height, width = image_sizes[rois[:, 0].long()].to(centres.dtype).unbind(dim=1)
            outside = ((centres[..., 0] < 0) | (centres[..., 0] > width[:, None])
                       | (centres[..., 1] < 0) | (centres[..., 1] > height[:, None]))
            self._add("cls_outside", outside.sum(), outside.numel())

    def _add(self, name: str, total: Tensor, count: int) -> None:
        self._sums[name] = self._sums.get(name, 0.0) + float(total)
        self._sums[f"{name}_count"] = self._sums.get(f"{name}_count", 0.0) + count

    def all_reduce(self) -> None:
        """Combine the sums and maxima of every rank of a distributed evaluation (each rank sees part of val)."""
        if not is_distributed():
            return
        for values, op in ((self._sums, "sum"), (self._maxima, "max")):
            names = sorted(values)
            if names:
                combined = torch.tensor([values[name] for name in names], dtype=torch.float64)
                all_reduce(combined, op=op)
                values.update(zip(names, combined.tolist()))

    def summary(self) -> dict[str, float]:
        """The statistics (module docstring) of what was recorded; a task without offsets has no entries."""
        def mean(name: str) -> float:
            count = self._sums.get(f"{name}_count", 0.0)
            return self._sums[name] / count if count else math.nan

        result = {}
        if "feature_sq" in self._sums:
            result["feature_rms"] = math.sqrt(mean("feature_sq"))
        for task in TASKS:
            if f"{task}_sq" in self._sums:
                result[f"{task}_offset_rms"] = math.sqrt(mean(f"{task}_sq"))
                result[f"{task}_offset_max"] = self._maxima[f"{task}_offset_max"]
        if "cls_outside" in self._sums:
            result["cls_points_outside"] = mean("cls_outside")
        return result


@HOOKS.register_module()
class OffsetHealthHook(Hook):
    """Measures the offset health of a TSD model in every validation and test epoch (models without derived
    proposals are left alone): logs it and leaves it in the message hub under ``offset_health``."""

    priority = "NORMAL"

    def before_val_epoch(self, runner) -> None:
        self._attach(runner)

    def before_test_epoch(self, runner) -> None:
        self._attach(runner)

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        self._publish(runner)

    def after_test_epoch(self, runner, metrics: dict | None = None) -> None:
        self._publish(runner)

    @staticmethod
    def _roi_head(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        roi_head = getattr(model, "roi_head", None)
        return roi_head if hasattr(roi_head, "offset_health") and roi_head.derived_roi_extractor else None

    def _attach(self, runner) -> None:
        roi_head = self._roi_head(runner)
        if roi_head is not None:
            roi_head.offset_health = OffsetHealth()

    def _publish(self, runner) -> None:
        roi_head = self._roi_head(runner)
        if roi_head is None or roi_head.offset_health is None:
            return
        health, roi_head.offset_health = roi_head.offset_health, None
        health.all_reduce()
        summary = health.summary()
        runner.message_hub.update_info(HEALTH_INFO_KEY, summary)
        runner.logger.info("offset health: " + "  ".join(f"{name}: {value:.4g}" for name, value in summary.items()))

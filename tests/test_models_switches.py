"""Tests for the TSD switches: released-code defaults, validation messages and how TSDRoIHead applies them."""
from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from mmdet.registry import MODELS

from model_fixtures import build_roi_head, tiny_roi_head_cfg
from tsd_study.models import SwitchError, TSDSwitches

KEY = "model.roi_head.tsd"

# The released code's choices: Point.w for classification, Prop.w for localization, joint sibling
# training, both PC terms with margins 0.3 and the clamp, a target that back-propagates into P_r, gamma 0.1.
RELEASED = dict(cls_manner="point", reg_manner="prop", joint_sibling=True, pc_cls=True, pc_loc=True, margin_cls=0.3,
                margin_loc=0.3, margin_clamp=True, target_grad=True,
                pc_translation_grad=True, gamma=0.1, offset_init="released")
NO_SIBLING = dict(joint_sibling=False, pc_cls=False, pc_loc=False)


def test_defaults_are_the_released_code() -> None:
    assert dataclasses.asdict(TSDSwitches()) == RELEASED
    assert TSDSwitches.from_config(None) == TSDSwitches.from_config({}) == TSDSwitches()


def test_roi_head_without_switches_is_the_released_head() -> None:
    """No ``tsd`` key: the sibling head, P_c pointwise (7x7x2 offsets), P_r proposal-wise (2), gamma 0.1 and,
    on mmdetection's RoIAlign extractor, the released 4 x 4 samples per bin for the derived proposals."""
    cfg = tiny_roi_head_cfg()
    del cfg.tsd
    cfg.bbox_roi_extractor = dict(type="SingleRoIExtractor", out_channels=cfg.bbox_roi_extractor.out_channels,
                                  featmap_strides=cfg.bbox_roi_extractor.featmap_strides,
                                  roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=0, aligned=True))
    roi_head = MODELS.build(cfg)
    assert roi_head.switches == TSDSwitches()
    assert roi_head.bbox_head.sibling_head is not None
    task_heads = roi_head.bbox_head.offset_predictor.task_heads
    assert task_heads["cls"][-1].out_features == 98 and task_heads["reg"][-1].out_features == 2
    pool = roi_head.derived_roi_extractor.roi_layers[0]
    assert (pool.gamma, pool.sampling_ratio) == (0.1, 4)


@pytest.mark.parametrize(("switches", "key", "problem"), [
    (dict(joint_sibling=False, pc_loc=False), f"{KEY}.pc_cls", "joint_sibling"),
    (dict(joint_sibling=False, pc_cls=False), f"{KEY}.pc_loc", "joint_sibling"),
    (dict(cls_manner="deform"), f"{KEY}.cls_manner", "unknown manner"),
    (dict(reg_manner="Prop.w"), f"{KEY}.reg_manner", "unknown manner"),
    (dict(margin_cls=-0.1), f"{KEY}.margin_cls", "[0, 1]"),
    (dict(margin_loc=1.5), f"{KEY}.margin_loc", "[0, 1]"),
    (dict(margin_cls=float("nan")), f"{KEY}.margin_cls", "[0, 1]"),
    (dict(gamma=0.0), f"{KEY}.gamma", "positive"),
    (dict(joint_sibling="yes"), f"{KEY}.joint_sibling", "expected bool"),
    (dict(pc_cls=1), f"{KEY}.pc_cls", "expected bool"),
    (dict(margin_loc=True), f"{KEY}.margin_loc", "expected float"),
    (dict(margin_cls="0.2"), f"{KEY}.margin_cls", "expected float"),
    (dict(cls_manner=None), f"{KEY}.cls_manner", "expected Manner"),
    (dict(pc=False), KEY, "unknown switch(es) ['pc']"),
    (dict(offset_init="kaiming"), f"{KEY}.offset_init", "unknown init"),
    (dict(offset_init=0), f"{KEY}.offset_init", "expected OffsetInit"),
])
def test_bad_switches_fail_naming_the_key(switches: dict, key: str, problem: str) -> None:
    with pytest.raises(SwitchError, match=re.escape(key) + ".*" + re.escape(problem)):
        TSDSwitches.from_config(switches)
    with pytest.raises(SwitchError, match=re.escape(key)):
        MODELS.build(tiny_roi_head_cfg(**switches))


@pytest.mark.parametrize("switches", [dict(margin_cls=0, margin_loc=1), dict(gamma=1), NO_SIBLING])
def test_edge_values_are_accepted(switches: dict) -> None:
    assert dataclasses.asdict(TSDSwitches.from_config(switches)) == dict(RELEASED, **switches)


@pytest.mark.parametrize("bbox_head_key", ["cls_manner", "reg_manner", "with_sibling", "offset_init"])
def test_bbox_head_keys_of_the_switches_are_refused(bbox_head_key: str) -> None:
    cfg = tiny_roi_head_cfg()
    cfg.bbox_head[bbox_head_key] = {"cls_manner": "none", "reg_manner": "none", "offset_init": "zero"}.get(
        bbox_head_key, False)
    with pytest.raises(SwitchError, match=re.escape(f"model.roi_head.bbox_head: ['{bbox_head_key}']") + ".*" +
                       re.escape(KEY)):
        MODELS.build(cfg)


def test_shared_c4_head_is_refused() -> None:
    cfg = tiny_roi_head_cfg()
    cfg.shared_head = dict(type="ResLayer", depth=18, stage=3, stride=2)
    with torch.device("meta"), pytest.raises(SwitchError, match=re.escape("model.roi_head.shared_head")):
        MODELS.build(cfg)


@pytest.mark.parametrize(("switches", "cls_outputs", "reg_outputs"), [
    ({}, 98, 2),
    (dict(cls_manner="prop", reg_manner="point"), 2, 98),
    (dict(reg_manner="none"), 98, None),
    (dict(cls_manner="none"), None, 2),
])
def test_manners_pick_the_offset_heads(switches: dict, cls_outputs: int | None, reg_outputs: int | None) -> None:
    task_heads = build_roi_head(**switches).bbox_head.offset_predictor.task_heads
    outputs = {task: head[-1].out_features for task, head in task_heads.items()}
    assert outputs.get("cls") == cls_outputs and outputs.get("reg") == reg_outputs


def test_both_manners_none_is_d_head() -> None:
    """D_head: no offset predictor and no derived-proposal pooling, the regression relative to P."""
    roi_head = build_roi_head(cls_manner="none", reg_manner="none", **NO_SIBLING)
    assert roi_head.bbox_head.offset_predictor is None and roi_head.derived_roi_extractor is None
    assert roi_head.bbox_head.sibling_head is None


def test_gamma_reaches_the_derived_pooling() -> None:
    assert build_roi_head(gamma=0.25).derived_roi_extractor.roi_layers[0].gamma == 0.25

"""What a config's model is, in a few words: "EfficientNet-Lite0, sibling head", "ResNet-50 + D_s8, D_head".

Reports name what actually ran beside the paper's row, so that a row called "ResNet-50" in the paper is not mistaken
for a ResNet-50 where a small CPU backbone trained. Reads the config only (no torch, no mmdetection).
"""
from __future__ import annotations

from typing import Any

from tsd_study.switches import TSDSwitches

BACKBONE_NAME_KEY = "tsd_backbone_name"
"""Config key: the backbone in words (e.g. 'ResNet-101-DCN'); the backbone's type when a config does not set it."""
MANNER_NAMES = {"point": "Point.w", "prop": "Prop.w", "none": "-"}
PAPER_MARGIN = 0.2
"""The margin of the paper's ablations, left unsaid in descriptions."""


def describe_model(cfg: Any) -> str:
    """The backbone (with its task split), the detector when it is not Faster R-CNN, and the RoI head."""
    model = cfg.model
    backbone = cfg.get(BACKBONE_NAME_KEY) or _inner_backbone(model.backbone).get("type", "?")
    if model.backbone.get("type") == "TaskSplitBackbone":
        backbone += f" + D_s{model.backbone.split_stride}"
    if model.get("type") == "MaskRCNN":
        backbone += " Mask R-CNN"
    return f"{backbone}, {describe_roi_head(model.roi_head)}"


def describe_roi_head(roi_head: Any) -> str:
    """``sibling head`` for mmdetection's standard head, else TSD's switches in the paper's words."""
    if roi_head.get("type") != "TSDRoIHead":
        return "sibling head"
    switches = TSDSwitches.from_config(roi_head.get("tsd"))
    manners = (switches.cls_manner, switches.reg_manner)
    if manners == ("none", "none"):
        head = "D_head"
    elif manners == ("point", "prop"):
        head = "TSD"
    else:
        head = f"TSD ({' / '.join(MANNER_NAMES[manner] for manner in manners)})"
    if switches.pc_cls and switches.pc_loc:
        head += " + PC"
    elif switches.pc_cls or switches.pc_loc:
        head += " + M_cls" if switches.pc_cls else " + M_loc"
    elif switches.joint_sibling:
        head += " + joint H*"
    elif head != "D_head":
        head += " w/o PC"
    margins = [f"{name} = {value:g}" for name, value, used in (("m_c", switches.margin_cls, switches.pc_cls),
                                                                ("m_r", switches.margin_loc, switches.pc_loc))
               if used and value != PAPER_MARGIN]
    return head + (f" ({', '.join(margins)})" if margins else "")


def _inner_backbone(backbone: Any) -> Any:
    return backbone.backbone if backbone.get("type") == "TaskSplitBackbone" else backbone

"""The TSD switch schema: every ablation switch of the paper, its released-code default and its validation.

A config sets switches under ``model.roi_head.tsd``; anything left out takes the value of the authors' released code.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping

Manner = Literal["point", "prop", "none"]
MANNERS: tuple[str, ...] = ("point", "prop", "none")
OffsetInit = Literal["released", "zero"]
OFFSET_INITS: tuple[str, ...] = ("released", "zero")
SWITCHES_KEY = "model.roi_head.tsd"


class SwitchError(ValueError):
    """A TSD switch has a bad value or conflicts with another switch."""


@dataclass(frozen=True)
class TSDSwitches:
    """Switches of the TSD RoI head (defaults: the released code).

    Attributes:
        cls_manner: derived proposal of the classification branch: pointwise deformation ``point`` (P_c),
            proposal-wise translation ``prop``, or ``none`` (the shared proposal P).
        reg_manner: the same for the localization branch (released: ``prop``, P_r).
        joint_sibling: train the sibling head H* jointly (Table 2); it never runs at inference.
        pc_cls, pc_loc: the two progressive-constraint terms M_cls and M_loc (Table 3).
        margin_cls, margin_loc: m_c and m_r (released configs: 0.3 / 0.3; paper ablations 0.2 / 0.2).
        margin_clamp: clamp the margin to 1 - p_sib (1 - IoU_sib), as the released code does.
        target_grad: let the localization target (encoded relative to P_r) back-propagate into the translation.
        pc_translation_grad: let M_loc back-propagate into the translation through the TSD box decoded from P_r
            (released); off decodes it from a detached P_r, as SimpleDet does, so M_loc trains only the regressor.
        gamma: scale of the predicted offsets relative to the proposal's width and height.
        offset_init: how the offset predictor's last layers start: ``released`` (Kaiming normal, a=1, as every
            layer of the released code's predictor; the starting offsets then scale with the RoI features) or
            ``zero`` (zero weights, so every derived proposal starts at P: the DCN convention, and what the released
            code's own deformable pooling module does).
    """

    cls_manner: Manner = "point"
    reg_manner: Manner = "prop"
    joint_sibling: bool = True
    pc_cls: bool = True
    pc_loc: bool = True
    margin_cls: float = 0.3
    margin_loc: float = 0.3
    margin_clamp: bool = True
    target_grad: bool = True
    pc_translation_grad: bool = True
    gamma: float = 0.1
    offset_init: OffsetInit = "released"

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None, key: str = SWITCHES_KEY) -> TSDSwitches:
        """Validate a switch mapping from a config; errors name ``key.<switch>`` and what is wrong."""
        values = dict(values or {})
        known = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise SwitchError(f"{key}: unknown switch(es) {unknown}; known: {sorted(known)}")
        for name, value in values.items():
            _check_type(f"{key}.{name}", value, known[name].type)
        switches = cls(**values)
        switches._check_combinations(key)
        return switches

    @property
    def with_pc(self) -> bool:
        """Whether any progressive-constraint term is on."""
        return self.pc_cls or self.pc_loc

    def _check_combinations(self, key: str) -> None:
        for name in ("cls_manner", "reg_manner"):
            if getattr(self, name) not in MANNERS:
                raise SwitchError(f"{key}.{name}: unknown manner {getattr(self, name)!r}; expected one of {MANNERS}")
        if self.offset_init not in OFFSET_INITS:
            raise SwitchError(f"{key}.offset_init: unknown init {self.offset_init!r}; expected one of {OFFSET_INITS}")
        for name in ("margin_cls", "margin_loc"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SwitchError(f"{key}.{name}: margin must lie in [0, 1], got {getattr(self, name)}")
        if self.gamma <= 0:
            raise SwitchError(f"{key}.gamma: must be positive, got {self.gamma}")
        if self.with_pc and not self.joint_sibling:
            term = "pc_cls" if self.pc_cls else "pc_loc"
            raise SwitchError(f"{key}.{term}: the progressive constraint compares against the sibling head, "
                              f"so it needs {key}.joint_sibling=True")


def _check_type(key: str, value: Any, annotation: str) -> None:
    expected = {"bool": bool, "float": (int, float), "Manner": str, "OffsetInit": str}[annotation]
    if isinstance(value, bool) and annotation == "float" or not isinstance(value, expected):
        raise SwitchError(f"{key}: expected {annotation}, got {value!r}")

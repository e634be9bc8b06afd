"""Paper items as data: rows (a config cell each), the paper's numbers, and the claims to test.

The definitions live in ``definitions/*.yaml``, one per table or figure; they are the only place the paper's numbers
are written down. Loading validates them and names the file and key of anything wrong.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .expressions import Check, Expression, ExpressionError

DEFINITIONS = Path(__file__).parent / "definitions"


class StudyError(ValueError):
    """A study definition or a request about studies is wrong; the message names the file/key or the name."""


@dataclass(frozen=True)
class Row:
    """One row of a paper table: the config cell that reproduces it (None: reference only) and the paper's numbers.

    ``reference``: the row this row's effect is measured against (the study's reference row unless set).
    """

    id: str
    name: str
    config: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    profiles: tuple[str, ...] | None = None
    paper: dict[str, float] = field(default_factory=dict)
    switches: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None

    def runs_in(self, profile: str) -> bool:
        """Whether this row is trained in ``profile``."""
        return self.config is not None and (self.profiles is None or profile in self.profiles)


@dataclass(frozen=True)
class Claim:
    """A statement of the paper, tested by checks that must all hold."""

    id: str
    text: str
    checks: tuple[Check, ...]
    tolerance: float | None = None
    """The smallest margin that counts as an effect; None: the profile's default for AP points."""

    def checks_for(self, row_ids: set[str]) -> tuple[Check, ...]:
        """The checks whose rows all exist in a profile (e.g. only the CPU backbones of Table 5)."""
        return tuple(check for check in self.checks if check.rows <= row_ids)


@dataclass(frozen=True)
class FigureSpec:
    """One figure of a study: its file name, what draws it (a name in ``tsd_study.report.figures.DRAWINGS``) and the
    rows it draws, by role (e.g. ``{baseline: sibling, model: tsd_pc}``)."""

    name: str
    draw: str
    rows: dict[str, str] = field(default_factory=dict)


DEFAULT_FIGURES = {"effects": "effects", "curves": "learning_curves"}
"""What a study without a ``figures`` key draws, by name suffix: its effects and its learning curves."""


@dataclass(frozen=True)
class Study:
    """A paper table or figure.

    ``reference``: the row every other row's effect is measured against (a row may name its own), e.g. the
    sibling-head baseline of Table 1; effects, not absolute numbers, are what compare across datasets and scales.
    """

    name: str
    title: str
    summary: str
    metrics: tuple[str, ...]
    rows: tuple[Row, ...]
    claims: tuple[Claim, ...]
    derived: dict[str, Expression]
    profiles: tuple[str, ...] | None = None
    reference: str | None = None
    figures: tuple[FigureSpec, ...] = ()

    def rows_for(self, profile: str) -> tuple[Row, ...]:
        """Rows shown in ``profile``: those trained there, plus reference rows when the study runs nowhere."""
        if self.profiles is not None and profile not in self.profiles:
            return ()
        return tuple(row for row in self.rows if row.runs_in(profile) or
                     (row.config is None and (row.profiles is None or profile in row.profiles)))

    def reference_of(self, row_id: str) -> str | None:
        """The row ``row_id``'s effect is measured against; None for a reference row itself (or no reference)."""
        reference = self.row(row_id).reference or self.reference
        return None if reference == row_id else reference

    def row(self, row_id: str) -> Row:
        for row in self.rows:
            if row.id == row_id:
                return row
        raise StudyError(f"{self.name}: no row {row_id!r}; rows: {[row.id for row in self.rows]}")


def study_names() -> list[str]:
    """Every defined study, in paper order (tables, then figures), then the studies beyond the paper."""
    def paper_order(name: str) -> tuple[int, str]:
        return (0 if name.startswith("table") else 1 if name.startswith("fig") else 2), name
    return sorted((path.stem for path in DEFINITIONS.glob("*.yaml")), key=paper_order)


@cache
def load_study(name: str) -> Study:
    """Load and validate ``definitions/<name>.yaml``."""
    path = DEFINITIONS / f"{name}.yaml"
    if not path.is_file():
        raise StudyError(f"unknown study {name!r}; known: {', '.join(study_names())}")
    return parse_study(yaml.safe_load(path.read_text()), source=str(path))


def parse_study(data: Any, source: str) -> Study:
    """Build a :class:`Study` from a definition mapping, with errors that name ``source`` and the key."""
    if not isinstance(data, dict):
        raise StudyError(f"{source}: a study definition is a mapping")
    _require(data, ("name", "title", "summary", "metrics", "rows", "claims"), source)
    rows = tuple(_parse_row(row, f"{source}: rows[{index}]") for index, row in enumerate(data["rows"]))
    ids = [row.id for row in rows]
    duplicates = sorted({row_id for row_id in ids if ids.count(row_id) > 1})
    if duplicates:
        raise StudyError(f"{source}: rows: duplicate ids {duplicates}")
    derived = {}
    for metric, expression in (data.get("derived") or {}).items():
        derived[metric] = _parse(lambda: Expression.parse(expression, bare_metrics=True), f"{source}: derived.{metric}")
    claims = tuple(_parse_claim(claim, set(ids), f"{source}: claims[{index}]")
                   for index, claim in enumerate(data["claims"]))
    profiles = data.get("profiles")
    reference = data.get("reference")
    for where, named in [("reference", reference)] + [(f"rows[{index}].reference", row.reference)
                                                       for index, row in enumerate(rows)]:
        if named is not None and named not in ids:
            raise StudyError(f"{source}: {where}: unknown row {named!r}; rows: {ids}")
    figures = data.get("figures")
    if figures is None:
        figures = [{"name": f"{data['name']}_{suffix}", "draw": draw} for suffix, draw in DEFAULT_FIGURES.items()]
    return Study(name=data["name"], title=data["title"], summary=" ".join(data["summary"].split()),
                 metrics=tuple(data["metrics"]), rows=rows, claims=claims, derived=derived,
                 profiles=tuple(profiles) if profiles else None, reference=reference,
                 figures=tuple(_parse_figure(figure, set(ids), f"{source}: figures[{index}]")
                               for index, figure in enumerate(figures)))


def _parse_row(data: Any, where: str) -> Row:
    if not isinstance(data, dict):
        raise StudyError(f"{where}: a row is a mapping")
    _require(data, ("id", "name"), where)
    if not data["id"].isidentifier():
        raise StudyError(f"{where}.id: {data['id']!r} must be an identifier (checks refer to it as id.metric)")
    unknown = sorted(set(data) - {"id", "name", "config", "overrides", "profiles", "paper", "switches", "reference"})
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {unknown}")
    profiles = data.get("profiles")
    return Row(id=data["id"], name=data["name"], config=data.get("config"), overrides=dict(data.get("overrides") or {}),
               profiles=tuple(profiles) if profiles else None, paper=dict(data.get("paper") or {}),
               switches=dict(data.get("switches") or {}), reference=data.get("reference"))


def _parse_figure(data: Any, row_ids: set[str], where: str) -> FigureSpec:
    if not isinstance(data, dict):
        raise StudyError(f"{where}: a figure is a mapping")
    _require(data, ("name", "draw"), where)
    unknown_keys = sorted(set(data) - {"name", "draw", "rows"})
    if unknown_keys:
        raise StudyError(f"{where}: unknown key(s) {unknown_keys}")
    rows = dict(data.get("rows") or {})
    unknown_rows = sorted(row for row in rows.values() if row not in row_ids)
    if unknown_rows:
        raise StudyError(f"{where}.rows: unknown row(s) {unknown_rows}")
    return FigureSpec(name=data["name"], draw=data["draw"], rows=rows)


def _parse_claim(data: Any, row_ids: set[str], where: str) -> Claim:
    _require(data, ("id", "text", "checks"), where)
    tolerance = data.get("tolerance")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))
                                  or tolerance < 0):
        raise StudyError(f"{where}.tolerance: {tolerance!r} must be a number >= 0")
    checks = tuple(_parse(lambda source=source: Check.parse(source), f"{where}.checks[{index}]")
                   for index, source in enumerate(data["checks"]))
    for index, check in enumerate(checks):
        unknown = sorted(check.rows - row_ids)
        if unknown:
            raise StudyError(f"{where}.checks[{index}]: unknown row(s) {unknown} in {check.source!r}")
    return Claim(id=data["id"], text=data["text"], checks=checks,
                 tolerance=float(tolerance) if tolerance is not None else None)


def _parse(build, where: str):
    try:
        return build()
    except ExpressionError as error:
        raise StudyError(f"{where}: {error}") from None


def _require(data: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [key for key in keys if key not in data]
    if missing:
        raise StudyError(f"{where}: missing key(s) {missing}")

"""Figures drawn from results built in memory: what each plots, and that every study's figures render to PNG.

Runtime: about 10 s.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from tsd_study.report import NOTEBOOK_STUDIES
from tsd_study.report.figures import (
    DRAWINGS,
    IOU_PERCENTS,
    SCALES,
    derived_proposals,
    effects,
    fig5_from_results,
    figure_names,
    gain_heatmap,
    gain_vs_iou,
    learning_curves,
    margin_sweep,
    png_bytes,
    study_figures,
)
from tsd_study.runs.store import DERIVED_PROPOSALS
from tsd_study.studies import StudyError, load_study, parse_study, study_names

from report_fixtures import fabricated

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_every_figure_a_definition_names_has_a_drawing() -> None:
    named = {(study, figure.draw) for study in study_names() for figure in load_study(study).figures}
    assert [pair for pair in named if pair[1] not in DRAWINGS] == []


@pytest.mark.parametrize("study", NOTEBOOK_STUDIES)
def test_every_study_draws_its_named_figures_as_png(study: str) -> None:
    figures = study_figures(fabricated(study))
    assert tuple(figures) == figure_names(study)
    for figure in figures.values():
        assert png_bytes(figure).startswith(PNG_MAGIC)


def test_effects_put_our_seed_paired_interval_beside_the_papers_effect() -> None:
    # D_head gains 2 points on every seed but one: the paired interval is the t-interval of (2, 2, 3).
    results = fabricated("table1", seeds=3, value=lambda row, metric, seed: 40.0 + seed + (
        (2.0 + (seed == 2)) if row == "dhead" else 0.0))
    ap_ax, params_ax = effects(results).axes[:2]
    assert [label.get_text().split("\n")[0] for label in ap_ax.get_yticklabels()] == [
        row.name for row in results.rows if row.id != "sibling"]
    (dhead,) = [container for container in ap_ax.containers if container.lines[0].get_ydata()[0] == 3 - 0.12]
    assert dhead.lines[0].get_xdata()[0] == pytest.approx(7 / 3)
    (bars,) = dhead.lines[2]
    half = 4.303 * np.std([2, 2, 3], ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(bars.get_segments()[0][:, 0], [7 / 3 - half, 7 / 3 + half], rtol=1e-3)
    paper = {round(line.get_ydata()[0], 2): line.get_xdata()[0] for line in ap_ax.lines if line.get_marker() == "D"}
    assert paper[3.12] == pytest.approx(37.3 - 36.1)
    ratios = {round(line.get_ydata()[0], 2): line.get_xdata()[0] for line in params_ax.lines if line.get_marker() == "D"}
    assert ratios[0.12] == pytest.approx(81.1 / 41.8)  # D_s8's parameters against the sibling head's


def test_learning_curves_draw_a_line_per_row_through_its_evaluations() -> None:
    curve = [{"iter": it, "AP": it / 10} for it in (60, 120, 180, 240)]
    results = fabricated("table2", seeds=2, curve=curve)
    (ax,) = learning_curves(results).axes
    lines = [line for line in ax.lines if len(line.get_xdata()) == 4]
    assert len(lines) == 2
    for line in lines:
        np.testing.assert_allclose(line.get_xdata(), [60, 120, 180, 240])
        np.testing.assert_allclose(line.get_ydata(), [6, 12, 18, 24])


def test_margin_sweep_plots_one_curve_per_margin_in_margin_order() -> None:
    results = fabricated("fig4", profile="full", seeds=1, value=lambda row, metric, seed: float(row[-2:]))
    (ax,) = margin_sweep(results).axes
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["m_c", "m_r"]
    curves = [line for line in ax.lines if line.get_label() != "_nolegend_" and len(line.get_xdata()) == 5]
    assert len(curves) == 2
    for line in curves:
        np.testing.assert_allclose(line.get_xdata(), [0.0, 0.1, 0.2, 0.3, 0.5])
        np.testing.assert_allclose(line.get_ydata(), [0.0, 1.0, 2.0, 3.0, 5.0])


def test_gain_heatmap_shows_tsd_minus_baseline_beside_the_papers() -> None:
    results = fabricated("table9", seeds=1,
                         value=lambda row, metric, seed: 30.0 + (int(metric[-2:]) / 10 if row == "tsd_pc" else 0))
    ours_ax, paper_ax, *colour_bars = gain_heatmap(results, baseline="sibling", model="tsd_pc").axes
    ours = [float(text.get_text()) for text in ours_ax.texts]
    assert ours == [iou / 10 for _ in SCALES for iou in IOU_PERCENTS]
    paper = [float(text.get_text()) for text in paper_ax.texts]
    rows = {row.id: row.paper for row in load_study("table9").rows}
    expected = [rows["tsd_pc"][f"AP_{scale}_{iou}"] - rows["sibling"][f"AP_{scale}_{iou}"]
                for scale in SCALES for iou in IOU_PERCENTS]
    np.testing.assert_allclose(paper, expected, atol=0.051)  # printed with one decimal
    assert len(colour_bars) == 2


def test_fig6_plots_our_gain_by_scale_beside_the_papers() -> None:
    results = fabricated("table9", seeds=2,
                         value=lambda row, metric, seed: 50.0 + (int(metric[-2:]) / 10 if row == "tsd_pc" else 0))
    (ax,) = gain_vs_iou(results, model="tsd_pc").axes
    curves = [line for line in ax.lines if len(line.get_xdata()) == 5]
    assert len(curves) == 2 * len(SCALES)  # ours and the paper's, per scale
    ours = [line for line in curves if line.get_linestyle() == "-"]
    for line in ours:
        np.testing.assert_allclose(line.get_xdata(), [iou / 100 for iou in IOU_PERCENTS])
        np.testing.assert_allclose(line.get_ydata(), [iou / 10 for iou in IOU_PERCENTS])


def write_derived_proposals(run_dir: Path) -> None:
    """A derived_proposals.json as the training job writes it, over one 64 x 48 image."""
    image = run_dir / "val" / "000001.png"
    image.parent.mkdir(parents=True)
    matplotlib.image.imsave(image, np.zeros((48, 64, 3)))
    points = [[10 + 2 * (index % 7), 8 + 2 * (index // 7)] for index in range(49)]
    detection = {"label": 0, "score": 0.9, "box": [9, 7, 30, 25], "proposal": [8, 6, 28, 24],
                 "reg_proposal": [10, 8, 30, 26], "cls_points": points}
    (run_dir / DERIVED_PROPOSALS).write_text(json.dumps({
        "classes": ["circle"], "gamma": 0.1, "cls_manner": "point", "reg_manner": "prop",
        "images": [{"img_path": str(image), "detections": [detection]}]}))


def test_fig5_draws_proposals_translations_and_sampling_points(tmp_path: Path) -> None:
    write_derived_proposals(tmp_path)
    (ax,) = [ax for ax in derived_proposals(tmp_path / DERIVED_PROPOSALS).axes if ax.images]
    boxes = sorted((patch.get_x(), patch.get_y(), patch.get_width(), patch.get_height()) for patch in ax.patches)
    assert boxes == [(8, 6, 20, 18), (10, 8, 20, 18)]
    (points,) = ax.collections
    assert len(points.get_offsets()) == 49


def test_fig5_comes_from_table4s_full_model_or_says_what_is_missing(tmp_path: Path) -> None:
    (fig5,) = [figure for figure in load_study("table4").figures if figure.draw == "derived_proposals"]
    assert fig5.rows == {"model": "pc_point_prop"}  # the paper's Fig. 5 model: Point.w, Prop.w, PC
    waiting = fig5_from_results(fabricated("table4", seeds=1), **fig5.rows)
    assert any("No finished run" in text.get_text() for ax in waiting.axes for text in ax.texts)
    write_derived_proposals(tmp_path)
    drawn = fig5_from_results(fabricated("table4", seeds=1, run_dir=tmp_path), **fig5.rows)
    assert any(ax.images for ax in drawn.axes)


@pytest.mark.parametrize(("figure", "message"), [
    ({"name": "f", "draw": "effects", "rows": {"model": "nosuchrow"}}, "figures[0].rows: unknown row(s) ['nosuchrow']"),
    ({"name": "f"}, "figures[0]: missing key(s) ['draw']"),
    ({"name": "f", "draw": "effects", "colour": "red"}, "figures[0]: unknown key(s) ['colour']"),
])
def test_a_bad_figure_entry_is_named(figure: dict, message: str) -> None:
    with pytest.raises(StudyError, match=re.escape(f"test.yaml: {message}")):
        parse_study({"name": "t", "title": "t", "summary": "s", "metrics": ["AP"], "rows": [{"id": "a", "name": "a"}],
                     "claims": [], "figures": [figure]}, source="test.yaml")


def test_a_study_without_figures_draws_its_effects_and_curves() -> None:
    study = parse_study({"name": "t", "title": "t", "summary": "s", "metrics": ["AP"], "rows": [], "claims": []},
                        source="test.yaml")
    assert [(figure.name, figure.draw) for figure in study.figures] == [("t_effects", "effects"),
                                                                        ("t_curves", "learning_curves")]

"""The study's figures, drawn with seaborn on plain matplotlib Figures (no pyplot state, any backend).

Our numbers come from a small synthetic dataset, the paper's from COCO: figures put our effects (a row against its
reference row) beside the paper's effects, never our AP beside the paper's AP. Error bars and bands are the same 95%
t-intervals over seeds as the tables (seed-paired for effects). Every figure exists whatever the store holds: cells
without a number are simply not drawn, and Fig. 5 says what it is waiting for.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Callable

import matplotlib.image
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.patheffects import Normal, Stroke

from tsd_study.runs.store import RunDir, RunState
from tsd_study.studies import StudyError, load_study

from .collect import StudyResults
from .stats import estimate

IOU_PERCENTS = (50, 60, 70, 80, 90)
SCALES = ("small", "medium", "large")
EFFECT_METRICS = ("AP", "mask_AP", "params_M", "latency_ms")
PALETTE = "colorblind"
OUTLINED = [Stroke(linewidth=2.6, foreground="black"), Normal()]
PROPOSAL_STYLES = {"proposal": dict(edgecolor="white", linestyle="--", path_effects=OUTLINED),
                   "reg_proposal": dict(edgecolor="orange")}
"""Fig. 5: how P (the shared proposal) and P_r (the box the regression starts from) are drawn."""
SAMPLING_POINT_COLOUR = "cyan"
SOURCES = ("ours", "paper")


def _t_interval(values: pd.Series) -> tuple[float, float]:
    """seaborn's error-bar hook: our 95% t-interval (nothing drawn for a single value)."""
    interval = estimate(values.to_numpy())
    return (interval.low, interval.high) if interval.has_interval else (interval.mean, interval.mean)


def _figure(ncols: int = 1, width: float = 6.4, height: float = 4.0) -> tuple[Figure, np.ndarray]:
    with sns.axes_style("whitegrid"):
        figure = Figure(figsize=(width * ncols, height), layout="constrained")
        axes = np.atleast_1d(figure.subplots(1, ncols))
    return figure, axes


def _dedupe_legend(figure: Figure, axes: np.ndarray) -> None:
    """One legend for the figure, outside the axes, each label once."""
    shown: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            shown.setdefault(label, handle)
    if shown:
        figure.legend(shown.values(), shown.keys(), loc="outside right center", frameon=False)


def _row_label(results: StudyResults, row_id: str) -> str:
    """The paper's row name, and what ran for it when the profile trains it."""
    model = results.models.get(row_id)
    name = results.study.row(row_id).name
    return f"{name}\n({model})" if model else name


def values_frame(results: StudyResults, metrics: tuple[str, ...]) -> pd.DataFrame:
    """Long data for plotting: one line per row, metric and seed (ours) or per row and metric (paper)."""
    lines = []
    for row in results.rows:
        for metric in metrics:
            for seed, value in zip(results.seeds, results.values(row.id, metric)):
                lines.append((row.id, row.name, metric, "ours", seed, value))
            lines.append((row.id, row.name, metric, "paper", math.nan, results.paper_value(row.id, metric)))
    frame = pd.DataFrame(lines, columns=["row", "name", "metric", "source", "seed", "value"])
    return frame.dropna(subset=["value"])


def effect_metrics(results: StudyResults) -> tuple[str, ...]:
    """The metrics an effect figure shows: AP (box and mask) and the cost ratios, those the study has."""
    return tuple(metric for metric in EFFECT_METRICS if metric in results.study.metrics)


def effects(results: StudyResults) -> Figure:
    """Each row's effect against its reference row, ours (dot, seed-paired 95% interval) beside the paper's
    (diamond): AP differences in points, parameter and runtime ratios (1 = as costly as the reference)."""
    metrics = effect_metrics(results)
    rows = [row for row in results.rows if results.study.reference_of(row.id)]
    labels = [_row_label(results, row.id) for row in rows]
    figure, axes = _figure(len(metrics), width=max(5.2, 8.0 / len(metrics)), height=1.6 + 0.55 * max(len(rows), 1))
    palette = sns.color_palette(PALETTE)
    for ax, metric in zip(axes, metrics):
        ratio = results.is_ratio(metric)
        positions = np.arange(len(rows))
        for position, row in zip(positions, rows):
            ours = results.effect(row.id, metric)
            if ours.n:
                low, high = (ours.low, ours.high) if ours.has_interval else (ours.mean, ours.mean)
                ax.errorbar(ours.mean, position - 0.12, xerr=[[ours.mean - low], [high - ours.mean]], fmt="o",
                            color=palette[0], capsize=3, label="ours")
            paper = results.paper_effect(row.id, metric)
            if not math.isnan(paper):
                ax.plot(paper, position + 0.12, "D", color=palette[1], label="paper")
        ax.axvline(1.0 if ratio else 0.0, color="grey", linewidth=1)
        ax.set_yticks(positions, labels)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        unit = "ratio to the reference row" if ratio else "points against the reference row"
        ax.set(xlabel=f"{metric}: {unit}", title=metric)
    _dedupe_legend(figure, axes)
    figure.suptitle(f"{results.study.title}\neffects, ours ({results.profile} profile) and the paper's (COCO)")
    return figure


def learning_curves(results: StudyResults) -> Figure:
    """AP against the training iteration for every row (mean over seeds, 95% t-interval band)."""
    curves = results.curve_frame()
    figure, (ax,) = _figure(width=7.0, height=4.2)
    if curves.empty:
        ax.axis("off")
        ax.text(0.5, 0.5, "No learning curve in the store yet.", ha="center", va="center")
    else:
        order = [row.name for row in results.rows if row.name in set(curves.name)]
        sns.lineplot(data=curves, x="iter", y="AP", hue="name", hue_order=order, style="name", style_order=order,
                     markers=True, dashes=False, errorbar=_t_interval, palette=PALETTE, ax=ax)
        ax.legend(title=None, fontsize=8)
        ax.set(xlabel="training iteration", ylabel="val AP (%)")
    ax.set_title(f"{results.study.title}\nlearning curves ({results.profile} profile, {len(results.seeds)} seed(s))")
    return figure


def margin_sweep(results: StudyResults) -> Figure:
    """Fig. 4: our AP against each PC margin, the other margin kept at 0.2 (the paper prints no numbers)."""
    data = values_frame(results, ("AP",))
    data = data[data.source == "ours"]
    switches = {row.id: row.switches for row in results.rows}
    data = data.assign(margin=[switches[row]["margin"] for row in data.row],
                       sweep=[switches[row]["sweep"] for row in data.row])
    figure, (ax,) = _figure()
    sns.lineplot(data=data, x="margin", y="value", hue="sweep", hue_order=("m_c", "m_r"), style="sweep",
                 markers=True, dashes=False, errorbar=_t_interval, err_style="bars", palette=PALETTE, ax=ax)
    ax.set(xlabel="margin", ylabel="AP (%)", title=f"Fig. 4: AP against the PC margins ({results.profile} profile)")
    return figure


def gain_vs_iou(results: StudyResults, model: str) -> Figure:
    """Fig. 6 as effects: TSD's AP gain over the baseline against the IoU threshold, per object scale; ours (mean,
    seed-paired 95% band) solid, the paper's (Table 9) dashed."""
    lines = []
    for scale in SCALES:
        for iou in IOU_PERCENTS:
            metric = f"AP_{scale}_{iou}"
            for seed, gain in zip(results.seeds, results.effect_values(model, metric)):
                lines.append((scale, iou / 100, "ours", seed, gain))
            lines.append((scale, iou / 100, "paper", math.nan, results.paper_effect(model, metric)))
    data = pd.DataFrame(lines, columns=["scale", "iou", "source", "seed", "gain"]).dropna(subset=["gain"])
    figure, (ax,) = _figure(width=7.0)
    sns.lineplot(data=data, x="iou", y="gain", hue="scale", hue_order=SCALES, style="source",
                 style_order=SOURCES, markers=True, errorbar=_t_interval, palette=PALETTE, ax=ax)
    ax.axhline(0.0, color="grey", linewidth=1)
    ax.set_xticks([iou / 100 for iou in IOU_PERCENTS])
    ax.set(xlabel="IoU threshold", ylabel="AP gain of TSD over the baseline (points)",
           title=f"Fig. 6: the gain against the IoU threshold\nours ({results.profile} profile) and the paper's (COCO)")
    return figure


def gain_heatmap(results: StudyResults, baseline: str, model: str) -> Figure:
    """Table 9 as a heatmap of the gain TSD - baseline by scale and IoU threshold: ours beside the paper's."""
    def gains(value: Callable[[str, str], float]) -> pd.DataFrame:
        return pd.DataFrame([[value(model, f"AP_{scale}_{iou}") - value(baseline, f"AP_{scale}_{iou}")
                              for iou in IOU_PERCENTS] for scale in SCALES],
                            index=list(SCALES), columns=[f"{iou / 100:.1f}" for iou in IOU_PERCENTS])

    ours = gains(lambda row, metric: estimate(results.values(row, metric)).mean)
    paper = gains(results.paper_value)
    limit = np.nanmax(np.abs(np.concatenate([ours.to_numpy().ravel(), paper.to_numpy().ravel(), [1.0]])))
    figure, axes = _figure(2, width=5.5, height=3.2)
    for ax, (title, gain) in zip(axes, ((f"ours ({results.profile} profile)", ours), ("paper", paper))):
        sns.heatmap(gain, ax=ax, annot=True, fmt="+.1f", cmap="RdBu", center=0, vmin=-limit, vmax=limit,
                    cbar_kws={"label": "AP gain (points)"})
        ax.set(xlabel="IoU threshold", ylabel="object scale", title=title)
    figure.suptitle("Table 9: AP gain of TSD over the baseline, by scale and IoU threshold")
    return figure


def derived_proposals(path: Path, max_images: int = 4) -> Figure:
    """Fig. 5: validation images with each detection's proposal P, translated P_r and the sampling points of P_c."""
    description = json.loads(Path(path).read_text())
    images = description["images"][:max_images]
    classes = description.get("classes") or []
    figure, axes = _figure(max(len(images), 1), width=3.6, height=3.9)
    for ax, image in zip(axes, images):
        pixels = matplotlib.image.imread(image["img_path"])
        ax.imshow(pixels)
        for detection in image["detections"]:
            _draw_detection(ax, detection, classes)
        height, width = pixels.shape[:2]
        ax.set(title=Path(image["img_path"]).name, xticks=[], yticks=[], xlim=(0, width), ylim=(height, 0))
        ax.grid(False)
    handles = [Rectangle((0, 0), 1, 1, fill=False, label="P (proposal)", **PROPOSAL_STYLES["proposal"]),
               Rectangle((0, 0), 1, 1, fill=False, label="P_r (localization)", **PROPOSAL_STYLES["reg_proposal"]),
               Line2D([], [], linestyle="", marker="o", markersize=3, color=SAMPLING_POINT_COLOUR,
                      label="P_c sampling points (classification)")]
    figure.legend(handles=handles, loc="lower center", ncols=3, frameon=False)
    figure.suptitle(f"Fig. 5: derived proposals of a trained TSD head (P_c {description['cls_manner']}wise, "
                    f"P_r {description['reg_manner']}-wise)")
    figure.get_layout_engine().set(rect=(0, 0.08, 1, 0.92))
    return figure


def _draw_detection(ax: Axes, detection: dict, classes: list[str]) -> None:
    """One detection of Fig. 5: its proposal P, the box P_r its regression starts from, P_c's sampling points."""
    for key, style in PROPOSAL_STYLES.items():
        x1, y1, x2, y2 = detection[key]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=1.2, **style))
    if detection["cls_points"]:
        points = np.asarray(detection["cls_points"])
        ax.scatter(points[:, 0], points[:, 1], s=4, color=SAMPLING_POINT_COLOUR)
    label = classes[detection["label"]] if detection["label"] < len(classes) else str(detection["label"])
    x1, y1 = detection["reg_proposal"][:2]
    ax.text(x1, y1, f"{label} {detection['score']:.2f}", color="black", fontsize=7,
            bbox=dict(facecolor=PROPOSAL_STYLES["reg_proposal"]["edgecolor"], edgecolor="none", pad=1))


def message_figure(title: str, message: str) -> Figure:
    """A figure that says why its content is missing, so a report never silently drops one."""
    figure, (ax,) = _figure(height=2.0)
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    figure.suptitle(title)
    return figure


def fig5_from_results(results: StudyResults, model: str) -> Figure:
    """Fig. 5 from the first finished seed of the row ``model`` (the paper's: Table 4's full TSD model), or a note
    saying what is missing."""
    for run in results.runs_of(model):
        dump = RunDir(run.run_dir).derived_proposals_file
        if run.state == RunState.FINISHED and dump.is_file():
            return derived_proposals(dump)
    return message_figure("Fig. 5: derived proposals",
                          f"No finished run of row {model!r} with derived proposals in the store yet.")


DRAWINGS: dict[str, Callable[..., Figure]] = {
    "effects": effects, "learning_curves": learning_curves, "margin_sweep": margin_sweep,
    "gain_vs_iou": gain_vs_iou, "gain_heatmap": gain_heatmap, "derived_proposals": fig5_from_results,
}
"""What a study definition's ``figures[].draw`` names; each is called with the study's results and the figure's
``rows`` as keyword arguments."""


def figure_names(study: str) -> tuple[str, ...]:
    """The names of the figures ``study_figures`` draws for ``study``."""
    return tuple(figure.name for figure in load_study(study).figures)


def study_figures(results: StudyResults) -> dict[str, Figure]:
    """Every figure of the study, by name, as its definition lists them."""
    figures = {}
    for figure in results.study.figures:
        if figure.draw not in DRAWINGS:
            raise StudyError(f"{results.study.name}: figure {figure.name!r} draws {figure.draw!r}; known: "
                             f"{', '.join(DRAWINGS)}")
        figures[figure.name] = DRAWINGS[figure.draw](results, **figure.rows)
    return figures


def png_bytes(figure: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG (Agg canvas); metadata without the software version, so files compare across runs."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()

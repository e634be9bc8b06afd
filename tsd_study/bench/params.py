"""Parameter counts of a study's models, built on the meta device (no weights, no memory) in seconds."""
from __future__ import annotations

import pandas as pd
import torch

from tsd_study.config_loading import read_config
from tsd_study.runner import build_model
from tsd_study.studies import StudyError, load_study


def count_parameters(config: str) -> int:
    """Number of parameters of the model a config describes (classes as the config sets them)."""
    with torch.device("meta"):
        model = build_model(read_config(config))
    return sum(parameter.numel() for parameter in model.parameters())


def params_table(study_name: str, profile: str = "full") -> pd.DataFrame:
    """One row per model of the study: our parameter count in millions beside the paper's, and the gap in %."""
    study = load_study(study_name)
    if "params_M" not in study.metrics:
        raise StudyError(f"{study_name}: has no params_M column (table1 has)")
    records = []
    for row in study.rows_for(profile):
        ours = count_parameters(f"{profile}/{row.config}") / 1e6
        paper = row.paper.get("params_M")
        gap = None if paper is None else 100.0 * (ours - paper) / paper
        records.append({"row": row.name, "config": f"{profile}/{row.config}", "params_M": ours,
                        "paper_params_M": paper, "gap_percent": gap})
    return pd.DataFrame.from_records(records)

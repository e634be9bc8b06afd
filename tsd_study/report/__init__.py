"""Reports: the store's runs as paper-vs-ours tables, computed verdicts, figures, notebooks and HTML pages."""
from .collect import RunResult, StudyResults, collect, study_profile
from .notebook import (NOTEBOOK_STUDIES, OverviewReport, StudyReport, run_overview_notebook, run_study_notebook,
                       study_introduction)
from .verdicts import MIN_EFFECT_AP, CheckVerdict, ClaimVerdict, Outcome, judge, verdict_table

__all__ = ["MIN_EFFECT_AP", "NOTEBOOK_STUDIES", "CheckVerdict", "ClaimVerdict", "Outcome", "OverviewReport",
           "RunResult", "StudyReport", "StudyResults", "collect", "judge", "run_overview_notebook",
           "run_study_notebook", "study_introduction", "study_profile", "verdict_table"]

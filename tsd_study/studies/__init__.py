"""The paper's tables and figures as study definitions."""
from .definition import Claim, FigureSpec, Row, Study, StudyError, load_study, parse_study, study_names
from .expressions import Check, Expression, ExpressionError

__all__ = ["Check", "Claim", "Expression", "ExpressionError", "FigureSpec", "Row", "Study", "StudyError", "load_study",
           "parse_study", "study_names"]

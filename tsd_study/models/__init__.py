"""The TSD plugin for mmdetection 3.x: load it with ``custom_imports = dict(imports=['tsd_study.models'])``."""
from tsd_study import checkpoint_compat  # noqa: F401  (mmengine checkpoints load under torch's weights_only default)
from tsd_study.switches import SwitchError, TSDSwitches

from .deform_roi_extractor import DeformRoIExtractor
from .deform_roi_pool import DeformRoIPool, deform_roi_pool
from .efficientnet_lite import EfficientNetLite
from .offset_health import OffsetHealth, OffsetHealthHook, bin_centers
from .offset_predictor import TSDOffsetPredictor
from .progressive_constraint import classification_constraint, localization_constraint
from .task_split import TaskFeatures, TaskSplitBackbone, TaskSplitNeck
from .tsd_bbox_head import TSDBBoxHead
from .tsd_roi_head import TSDRoIHead, translate_rois

__all__ = [
    "DeformRoIExtractor", "DeformRoIPool", "EfficientNetLite", "OffsetHealth", "OffsetHealthHook", "SwitchError",
    "TSDBBoxHead", "TSDOffsetPredictor", "TSDRoIHead", "TSDSwitches", "TaskFeatures", "TaskSplitBackbone",
    "TaskSplitNeck", "bin_centers", "classification_constraint", "deform_roi_pool", "localization_constraint",
    "translate_rois",
]

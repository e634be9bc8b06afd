"""Datasets for tsd-study: the `shapes` generator, VOC xml -> COCO conversion, checks, and dataset references."""

from tsd_study.data.catalog import apply_dataset, default_data_home, resolve_dataset
from tsd_study.data.check_records import checked_dataset
from tsd_study.data.checks import SplitSummary, check_dataset, check_split
from tsd_study.data.shapes import generate_shapes
from tsd_study.data.spec import DatasetError, DatasetSpec, SplitFiles
from tsd_study.data.voc import voc_to_coco

__all__ = [
    "DatasetError",
    "DatasetSpec",
    "SplitFiles",
    "SplitSummary",
    "apply_dataset",
    "check_dataset",
    "check_split",
    "checked_dataset",
    "default_data_home",
    "generate_shapes",
    "resolve_dataset",
    "voc_to_coco",
]

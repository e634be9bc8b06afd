"""What a dataset is to tsd-study: two COCO json splits with their image folders, and the manifest naming them.

The manifest `dataset.json` reads {"name": ..., "train": {"ann_file": ..., "image_dir": ...}, "val": {...}};
its paths are relative to the manifest's directory or absolute.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsd_study.atomic import write_json_atomic

MANIFEST_NAME = "dataset.json"
DEFAULT_VAL_FRACTION = 0.2
SPLITS = ("train", "val")

# COCO's area ranges in px^2 (pycocotools COCOeval): small below 32^2, large above 96^2, medium in between.
SMALL_AREA_MAX = 32**2
LARGE_AREA_MIN = 96**2
AREA_BUCKETS = ("small", "medium", "large")


class DatasetError(ValueError):
    """A dataset file is missing or wrong; the message starts with the file's path."""


@dataclass(frozen=True)
class SplitFiles:
    """One split: a COCO instances json and the folder its images' `file_name`s are relative to."""

    ann_file: Path
    image_dir: Path


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset ready for mmdetection: train and val splits plus the class names in category-id order."""

    name: str
    train: SplitFiles
    val: SplitFiles
    classes: tuple[str, ...]


def area_bucket(area: float) -> str:
    """The COCO area bucket ('small', 'medium' or 'large') of an annotation area in px^2."""
    if area < SMALL_AREA_MAX:
        return "small"
    if area > LARGE_AREA_MIN:
        return "large"
    return "medium"


def split_sizes(num_images: int, val_fraction: float) -> tuple[int, int]:
    """(train, val) image counts: val gets round(num_images * val_fraction), each split at least one image."""
    if num_images < 2:
        raise ValueError(f"need at least 2 images to make a train and a val split, got {num_images}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    num_val = min(max(round(num_images * val_fraction), 1), num_images - 1)
    return num_images - num_val, num_val


def load_json(path: Path) -> Any:
    """Parse a json file, turning every failure into a DatasetError that names the file (and line/column).

    The garbage collector is paused meanwhile: parsing creates millions of objects and no cycles, and collections
    triggered by those allocations would double the time on COCO-sized files.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        with path.open("rb") as stream:
            return json.load(stream)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file does not exist") from None
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{path}: malformed json at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the file: {error}") from None
    finally:
        if collecting:
            gc.enable()


def read_classes(ann_file: Path) -> tuple[str, ...]:
    """Class names from a COCO json's `categories`, sorted by category id."""
    content = load_json(ann_file)
    try:
        categories = sorted(content["categories"], key=lambda category: category["id"])
        return tuple(str(category["name"]) for category in categories)
    except (KeyError, TypeError) as error:
        raise DatasetError(f"{ann_file}: cannot read the categories (id and name of each): {error!r}") from None


def write_manifest(directory: Path, spec: DatasetSpec) -> None:
    """Write `directory/dataset.json`; paths inside `directory` are stored relative to it, others absolute."""

    def stored(path: Path) -> str:
        return str(path.relative_to(directory)) if path.is_relative_to(directory) else str(path.resolve())

    def entry(files: SplitFiles) -> dict[str, str]:
        return {"ann_file": stored(files.ann_file), "image_dir": stored(files.image_dir)}

    manifest = {"name": spec.name, "train": entry(spec.train), "val": entry(spec.val)}
    write_json_atomic(directory / MANIFEST_NAME, manifest)


def read_manifest_files(directory: Path) -> tuple[str, SplitFiles, SplitFiles]:
    """The name and the train and val files `directory/dataset.json` describes."""
    manifest_path = directory / MANIFEST_NAME
    manifest = load_json(manifest_path)
    try:
        name = str(manifest["name"])
        train, val = (
            SplitFiles(
                ann_file=(directory / manifest[split]["ann_file"]).resolve(),
                image_dir=(directory / manifest[split]["image_dir"]).resolve(),
            )
            for split in SPLITS
        )
    except (KeyError, TypeError) as error:
        expected = "{'name': ..., 'train': {'ann_file': ..., 'image_dir': ...}, 'val': {...}}"
        raise DatasetError(f"{manifest_path}: expected {expected}; missing or malformed entry {error}") from None
    return name, train, val


def read_manifest(directory: Path) -> DatasetSpec:
    """The DatasetSpec described by `directory/dataset.json` (classes from the train json's categories)."""
    name, train, val = read_manifest_files(directory)
    return DatasetSpec(name=name, train=train, val=val, classes=read_classes(train.ann_file))

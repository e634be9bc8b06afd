"""Dataset references -> DatasetSpec, and a DatasetSpec applied to an mmdetection config.

Accepted references (see ACCEPTED_REFS):
  shapes, shapes:N, shapes:N:SEED   the synthetic dataset, generated on first use under the data home
  coco2017, coco2017:ROOT           mmdetection's COCO layout: ROOT/annotations/instances_{train,val}2017.json,
                                    ROOT/train2017/, ROOT/val2017/ (ROOT defaults to data/coco)
  a directory                       holding dataset.json, or train.json + val.json + images/
The data home is $TSD_STUDY_DATA, else ~/.cache/tsd-study/data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from tsd_study.data.shapes import DEFAULT_IMAGE_SIZE, DEFAULT_NUM_IMAGES, DEFAULT_SEED, generate_shapes, shapes_dirname
from tsd_study.data.spec import (
    DEFAULT_VAL_FRACTION,
    MANIFEST_NAME,
    DatasetError,
    DatasetSpec,
    SplitFiles,
    read_classes,
    read_manifest_files,
    split_sizes,
)

if TYPE_CHECKING:
    from mmengine.config import Config

DATA_HOME_VARIABLE = "TSD_STUDY_DATA"
DEFAULT_DATA_HOME = Path("~/.cache/tsd-study/data")
DEFAULT_COCO_ROOT = Path("data/coco")
ACCEPTED_REFS = (
    "'shapes', 'shapes:N' or 'shapes:N:SEED' (generated under the data home); "
    "'coco2017' or 'coco2017:ROOT' (mmdetection's layout, ROOT defaults to data/coco); "
    "a directory holding dataset.json, or train.json, val.json and images/"
)
DATALOADER_SPLITS = {"train_dataloader": "train", "val_dataloader": "val", "test_dataloader": "val"}
EVALUATORS = ("val_evaluator", "test_evaluator")


def default_data_home() -> Path:
    """Where generated datasets live: $TSD_STUDY_DATA, else ~/.cache/tsd-study/data."""
    return Path(os.environ.get(DATA_HOME_VARIABLE) or DEFAULT_DATA_HOME).expanduser()


def resolve_dataset(ref: str, data_home: Path | None = None) -> DatasetSpec:
    """The dataset a reference names (forms in ACCEPTED_REFS); a `shapes` dataset is generated if missing."""
    name, train, val = locate_dataset(ref, data_home)
    return DatasetSpec(name=name, train=train, val=val, classes=read_classes(train.ann_file))


def locate_dataset(ref: str, data_home: Path | None = None) -> tuple[str, SplitFiles, SplitFiles]:
    """The name and the train and val files of the dataset a reference names, found without parsing the annotation
    files (a `shapes` dataset is generated if missing)."""
    kind, colon, argument = ref.partition(":")
    if kind == "shapes":
        return read_manifest_files(
            _generate_shapes(ref, argument.split(":") if colon else [], data_home or default_data_home()))
    if kind == "coco2017":
        return _locate_coco2017(Path(argument) if argument else DEFAULT_COCO_ROOT)
    directory = Path(ref).expanduser()
    if directory.is_dir():
        return _locate_directory(directory)
    raise DatasetError(f"unknown dataset reference {ref!r} (not a directory either); accepted: {ACCEPTED_REFS}")


def _generate_shapes(ref: str, fields: list[str], home: Path) -> Path:
    """The folder of a `shapes` reference, generated once, under a lock, so that concurrent callers share one
    complete folder."""
    if len(fields) > 2 or not all(field.isdigit() for field in fields):
        raise DatasetError(
            f"malformed reference {ref!r}: N and SEED must be non-negative integers; accepted: {ACCEPTED_REFS}"
        )
    num_images = int(fields[0]) if fields else DEFAULT_NUM_IMAGES
    seed = int(fields[1]) if len(fields) > 1 else DEFAULT_SEED
    try:
        split_sizes(num_images, DEFAULT_VAL_FRACTION)
    except ValueError as error:
        raise DatasetError(f"malformed reference {ref!r}: {error}") from None
    out_dir = home / shapes_dirname(num_images, seed, DEFAULT_IMAGE_SIZE)
    if not out_dir.is_dir():
        home.mkdir(parents=True, exist_ok=True)
        with FileLock(str(home / f".{out_dir.name}.lock")):
            if not out_dir.is_dir():
                generate_shapes(out_dir, num_images, seed, DEFAULT_IMAGE_SIZE)
    return out_dir


def _locate_coco2017(root: Path) -> tuple[str, SplitFiles, SplitFiles]:
    root = root.expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: COCO 2017 root does not exist (expected annotations/, train2017/, val2017/)")
    train, val = (SplitFiles(root / "annotations" / f"instances_{split}2017.json", root / f"{split}2017")
                  for split in ("train", "val"))
    for files in (train, val):
        for path in (files.ann_file, files.image_dir):
            if not path.exists():
                raise DatasetError(f"{path}: missing from the COCO 2017 layout under {root}")
    return "coco2017", train, val


def _locate_directory(directory: Path) -> tuple[str, SplitFiles, SplitFiles]:
    directory = directory.resolve()
    if (directory / MANIFEST_NAME).is_file():
        return read_manifest_files(directory)
    expected = (directory / "train.json", directory / "val.json", directory / "images")
    missing = [path.name for path in expected if not path.exists()]
    if missing:
        raise DatasetError(
            f"{directory}: no {MANIFEST_NAME}, and no {' or '.join(missing)} either; accepted: {ACCEPTED_REFS}"
        )
    train_json, val_json, images = expected
    return directory.name, SplitFiles(ann_file=train_json, image_dir=images), SplitFiles(ann_file=val_json,
                                                                                          image_dir=images)


def apply_dataset(cfg: Config, spec: DatasetSpec) -> None:
    """Point an mmdetection config at `spec`: dataloaders (through dataset wrappers), evaluators and class counts."""
    for loader_key, split in DATALOADER_SPLITS.items():
        if cfg.get(loader_key) is None:
            continue
        files: SplitFiles = getattr(spec, split)
        dataset = cfg[loader_key]["dataset"]
        while "dataset" in dataset:  # RepeatDataset, ClassBalancedDataset, MultiImageMixDataset, ...
            dataset = dataset["dataset"]
        dataset["data_root"] = ""
        dataset["ann_file"] = str(files.ann_file.resolve())
        dataset["data_prefix"] = dict(img=f"{files.image_dir.resolve()}/")
        dataset["metainfo"] = dict(classes=spec.classes)
    for evaluator_key in EVALUATORS:
        for evaluator in config_list(cfg.get(evaluator_key)):
            if "ann_file" in evaluator or str(evaluator.get("type", "")).endswith("CocoMetric"):
                evaluator["ann_file"] = str(spec.val.ann_file.resolve())
    roi_head = cfg.get("model", {}).get("roi_head") or {}
    for head_key in ("bbox_head", "mask_head"):
        for head in config_list(roi_head.get(head_key)):
            head["num_classes"] = len(spec.classes)


def config_list(value: Any) -> list[Any]:
    """A config entry that may be absent, one dict, or a list of dicts, as a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]

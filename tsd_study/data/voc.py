"""Pascal VOC xml annotations -> COCO instances json, with mmdetection's box convention.

Box convention: mmdetection's VOC loader (`mmdet.datasets.XMLDataset`, and `tools/dataset_converters/pascal_voc.py`)
reads the 1-based VOC corners as integers and subtracts 1 from all four, so the COCO box is
[xmin - 1, ymin - 1, xmax - xmin, ymax - ymin]. We follow it. The COCO json shipped with voc100
(gts/coco_format_v1/instances_default.json) has the same widths and heights but no shift:
[xmin, ymin, xmax - xmin, ymax - ymin]; its boxes equal ours moved by (+1, +1), so areas and area buckets agree.

VOC `difficult` objects become `iscrowd: 1`: mmdetection's CocoDataset then sets their ignore flag (not trained on)
and pycocotools' COCOeval treats them as ignore regions (neither hits nor misses). VOC has no instance masks here:
each annotation's segmentation is its box as a polygon, as mmdetection's converter writes it, so that pipelines
loading masks still run; do not read mask AP on these datasets.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tsd_study.atomic import write_json_atomic
from tsd_study.data.spec import (
    DEFAULT_VAL_FRACTION,
    DatasetError,
    DatasetSpec,
    SplitFiles,
    split_sizes,
    write_manifest,
)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


@dataclass(frozen=True)
class VocObject:
    """One `<object>`: its class name, VOC corners (1-based, inclusive) and difficult flag."""

    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    difficult: bool

    def coco_bbox(self) -> list[float]:
        """[x, y, w, h] under mmdetection's VOC convention (all corners minus 1)."""
        return [float(self.xmin - 1), float(self.ymin - 1), float(self.xmax - self.xmin), float(self.ymax - self.ymin)]


@dataclass(frozen=True)
class VocImage:
    """One VOC xml file: the image's file name, size and objects."""

    file_name: str
    width: int
    height: int
    objects: tuple[VocObject, ...]


def parse_voc_xml(xml_path: Path) -> VocImage:
    """Read one VOC annotation; a DatasetError names the file and what is missing or wrong."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    except ElementTree.ParseError as error:
        raise DatasetError(f"{xml_path}: malformed xml: {error}") from None
    except OSError as error:
        raise DatasetError(f"{xml_path}: cannot read the file: {error}") from None
    width = _int_field(xml_path, root, "size/width")
    height = _int_field(xml_path, root, "size/height")
    if width <= 0 or height <= 0:
        raise DatasetError(f"{xml_path}: image size must be positive, got width {width} and height {height}")
    objects = tuple(_parse_object(xml_path, number, element) for number, element in enumerate(root.iter("object"), 1))
    return VocImage(file_name=_text_field(xml_path, root, "filename"), width=width, height=height, objects=objects)


def _parse_object(xml_path: Path, number: int, element: ElementTree.Element) -> VocObject:
    where = f"{xml_path}: object {number}"
    difficult = element.find("difficult")
    voc_object = VocObject(
        name=_text_field(where, element, "name"),
        xmin=_int_field(where, element, "bndbox/xmin"),
        ymin=_int_field(where, element, "bndbox/ymin"),
        xmax=_int_field(where, element, "bndbox/xmax"),
        ymax=_int_field(where, element, "bndbox/ymax"),
        difficult=difficult is not None and _int_field(where, element, "difficult") != 0,
    )
    if voc_object.xmax <= voc_object.xmin or voc_object.ymax <= voc_object.ymin:
        corners = (voc_object.xmin, voc_object.ymin, voc_object.xmax, voc_object.ymax)
        raise DatasetError(f"{where} ({voc_object.name}): empty box (xmin, ymin, xmax, ymax) = {corners}")
    return voc_object


def _text_field(where: Path | str, element: ElementTree.Element, path: str) -> str:
    text = element.findtext(path)
    if text is None or not text.strip():
        raise DatasetError(f"{where}: missing <{path}>")
    return text.strip()


def _int_field(where: Path | str, element: ElementTree.Element, path: str) -> int:
    """A numeric field read as mmdetection does: int(float(text))."""
    text = _text_field(where, element, path)
    try:
        return int(float(text))
    except ValueError:
        raise DatasetError(f"{where}: <{path}> is not a number: {text!r}") from None


def voc_to_coco(
    xml_dir: Path,
    image_dir: Path,
    out_dir: Path,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
) -> DatasetSpec:
    """Convert every `*.xml` in `xml_dir` to out_dir/{train,val}.json plus the manifest out_dir/dataset.json.

    Images stay in `image_dir` (the manifest stores it as an absolute path unless it lies inside `out_dir`).
    Classes: the 20 VOC classes in their standard order when every name is one of them, else the sorted unique names.
    The val split is a seeded shuffle of the images; image ids follow the sorted xml file names, annotation ids run
    over both splits.
    """
    xml_paths = sorted(xml_dir.glob("*.xml"))
    if not xml_paths:
        raise DatasetError(f"{xml_dir}: no *.xml files")
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image directory does not exist")
    voc_images = [parse_voc_xml(path) for path in xml_paths]
    classes = _classes(voc_images)
    num_train, _ = split_sizes(len(voc_images), val_fraction)
    in_val = np.ones(len(voc_images), dtype=bool)
    in_val[np.random.default_rng(seed).permutation(len(voc_images))[:num_train]] = False
    for split, content in _coco_splits(voc_images, in_val, classes).items():
        write_json_atomic(out_dir / f"{split}.json", content)
    image_dir = image_dir.resolve()
    out_dir = out_dir.resolve()
    spec = DatasetSpec(
        name=out_dir.name,
        train=SplitFiles(ann_file=out_dir / "train.json", image_dir=image_dir),
        val=SplitFiles(ann_file=out_dir / "val.json", image_dir=image_dir),
        classes=classes,
    )
    write_manifest(out_dir, spec)
    return spec


def _coco_splits(voc_images: list[VocImage], in_val: np.ndarray, classes: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """COCO content of the train and val splits; image ids follow `voc_images`, annotation ids span both splits."""
    category_ids = {name: index + 1 for index, name in enumerate(classes)}
    categories = [{"id": number, "name": name, "supercategory": "none"} for name, number in category_ids.items()]
    splits = {split: {"images": [], "annotations": [], "categories": categories} for split in ("train", "val")}
    annotation_id = 0
    for image_id, (voc_image, is_val) in enumerate(zip(voc_images, in_val), start=1):
        split = splits["val" if is_val else "train"]
        split["images"].append(
            {"id": image_id, "file_name": voc_image.file_name, "width": voc_image.width, "height": voc_image.height}
        )
        for voc_object in voc_image.objects:
            annotation_id += 1
            category_id = category_ids[voc_object.name]
            split["annotations"].append(_annotation(annotation_id, image_id, category_id, voc_object))
    return splits


def _classes(voc_images: list[VocImage]) -> tuple[str, ...]:
    names = {voc_object.name for voc_image in voc_images for voc_object in voc_image.objects}
    return VOC_CLASSES if names <= set(VOC_CLASSES) else tuple(sorted(names))


def _annotation(annotation_id: int, image_id: int, category_id: int, voc_object: VocObject) -> dict[str, Any]:
    x, y, width, height = voc_object.coco_bbox()
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x, y, width, height],
        "area": width * height,
        "iscrowd": int(voc_object.difficult),
        "segmentation": [[x, y, x, y + height, x + width, y + height, x + width, y]],
    }

"""VOC xml -> COCO on the shared voc100 set: counts, mmdetection's box convention, deterministic split, errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tsd_study.data.checks import check_split
from tsd_study.data.spec import DatasetError, read_manifest
from tsd_study.data.voc import VOC_CLASSES, voc_to_coco

from shared_data import SHARED_DATA

VOC100 = SHARED_DATA / "voc100"
XML_DIR = VOC100 / "gts" / "pascalvoc_format"
IMAGE_DIR = VOC100 / "images"
SHIPPED_COCO = VOC100 / "gts" / "coco_format_v1" / "instances_default.json"
SPLITS = ("train", "val")


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("voc100")
    voc_to_coco(XML_DIR, IMAGE_DIR, out_dir)
    return out_dir


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def boxes_by_image_and_class(content: dict) -> Counter:
    """(file name, class name, bbox) of every annotation, as a multiset."""
    files = {image["id"]: image["file_name"] for image in content["images"]}
    names = {category["id"]: category["name"] for category in content["categories"]}
    return Counter(
        (files[a["image_id"]], names[a["category_id"]], tuple(a["bbox"])) for a in content["annotations"]
    )


def test_counts_classes_and_difficult(converted: Path) -> None:
    train, val = (load(converted / f"{split}.json") for split in SPLITS)
    assert (len(train["images"]), len(val["images"])) == (80, 20)
    annotations = train["annotations"] + val["annotations"]
    assert len(annotations) == 273
    assert sum(annotation["iscrowd"] for annotation in annotations) == 38  # VOC difficult, per SOURCE.md
    assert tuple(c["name"] for c in sorted(train["categories"], key=lambda c: c["id"])) == VOC_CLASSES
    assert train["categories"] == val["categories"]
    assert len({annotation["id"] for annotation in annotations}) == 273


def test_boxes_are_the_shipped_ones_under_mmdetection_convention(converted: Path) -> None:
    """Shipped json: [xmin, ymin, xmax - xmin, ymax - ymin]; ours (mmdetection): the same moved by (-1, -1)."""
    shipped = load(SHIPPED_COCO)
    for annotation in shipped["annotations"]:
        x, y, width, height = annotation["bbox"]
        annotation["bbox"] = [x - 1, y - 1, width, height]
    ours = Counter()
    for split in SPLITS:
        ours += boxes_by_image_and_class(load(converted / f"{split}.json"))
    assert ours == boxes_by_image_and_class(shipped)


def test_image_sizes_match_the_shipped_json(converted: Path) -> None:
    shipped = {image["file_name"]: (image["width"], image["height"]) for image in load(SHIPPED_COCO)["images"]}
    ours = {
        image["file_name"]: (image["width"], image["height"])
        for split in SPLITS
        for image in load(converted / f"{split}.json")["images"]
    }
    assert ours == shipped


def test_output_passes_the_checks_and_matches_the_shipped_area_buckets(converted: Path) -> None:
    spec = read_manifest(converted)
    assert spec.train.image_dir == IMAGE_DIR.resolve()
    summaries = [check_split(getattr(spec, split).ann_file, getattr(spec, split).image_dir) for split in SPLITS]
    assert Counter(summaries[0].area_counts) + Counter(summaries[1].area_counts) == Counter(
        small=20, medium=74, large=179
    )


def test_split_is_deterministic_and_follows_the_seed(converted: Path, tmp_path: Path) -> None:
    voc_to_coco(XML_DIR, IMAGE_DIR, tmp_path / "same")
    voc_to_coco(XML_DIR, IMAGE_DIR, tmp_path / "reseeded", seed=1)
    for split in SPLITS:
        assert (tmp_path / "same" / f"{split}.json").read_bytes() == (converted / f"{split}.json").read_bytes()

    def val_files(root: Path) -> set[str]:
        return {image["file_name"] for image in load(root / "val.json")["images"]}

    assert val_files(tmp_path / "reseeded") != val_files(converted)
    assert len(val_files(tmp_path / "reseeded")) == 20


def write_xml(directory: Path, stem: str, objects: str, size: str = "<width>50</width><height>40</height>") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.xml"
    path.write_text(f"<annotation><filename>{stem}.jpg</filename><size>{size}</size>{objects}</annotation>")
    return path


def voc_object(name: str, corners: tuple[str, str, str, str] = ("1", "2", "30", "20"), difficult: str = "0") -> str:
    xmin, ymin, xmax, ymax = corners
    return (
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def test_names_outside_voc_give_sorted_classes(tmp_path: Path) -> None:
    write_xml(tmp_path / "xml", "a", voc_object("zebra") + voc_object("apple", difficult="1"))
    write_xml(tmp_path / "xml", "b", voc_object("person"))
    spec = voc_to_coco(tmp_path / "xml", tmp_path, tmp_path / "out")
    assert spec.classes == ("apple", "person", "zebra")
    annotations = load(spec.train.ann_file)["annotations"] + load(spec.val.ann_file)["annotations"]
    assert sorted((a["category_id"], a["bbox"], a["iscrowd"]) for a in annotations) == [
        (1, [0.0, 1.0, 29.0, 18.0], 1),
        (2, [0.0, 1.0, 29.0, 18.0], 0),
        (3, [0.0, 1.0, 29.0, 18.0], 0),
    ]


SIZE_50 = "<width>50</width><height>50</height>"


@pytest.mark.parametrize(
    ("objects", "size", "message"),
    [
        ("<object>", SIZE_50, "malformed xml"),
        ("", "<width>50</width>", r"missing <size/height>"),
        ("", "<width>0</width><height>50</height>", "image size must be positive"),
        ("<object><name>cat</name></object>", SIZE_50, r"object 1: missing <bndbox/xmin>"),
        (voc_object("cat", ("1", "2", "x", "4")), SIZE_50, r"object 1: <bndbox/xmax> is not a number: 'x'"),
        (voc_object("dog") + voc_object("cat", ("9", "2", "3", "4")), SIZE_50, r"object 2 \(cat\): empty box"),
    ],
)
def test_bad_xml_names_the_file_and_the_problem(tmp_path: Path, objects: str, size: str, message: str) -> None:
    path = write_xml(tmp_path / "xml", "broken", objects, size)
    with pytest.raises(DatasetError, match=message) as raised:
        voc_to_coco(tmp_path / "xml", tmp_path, tmp_path / "out")
    assert str(raised.value).startswith(str(path))


def test_missing_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no \\*.xml files"):
        voc_to_coco(tmp_path, tmp_path, tmp_path / "out")
    write_xml(tmp_path / "xml", "a", voc_object("cat"))
    with pytest.raises(DatasetError, match=f"{tmp_path / 'nowhere'}: image directory does not exist"):
        voc_to_coco(tmp_path / "xml", tmp_path / "nowhere", tmp_path / "out")

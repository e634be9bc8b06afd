"""check_split / check_dataset: one test per kind of bad input, each asserting the file and the problem are named."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tsd_study.data.checks import check_dataset, check_split
from tsd_study.data.spec import DatasetError, DatasetSpec, SplitFiles

VALID_SPLIT = {
    "images": [
        {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
        {"id": 2, "file_name": "sub/b.png", "width": 50, "height": 50},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 10], "area": 200, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [60.5, 40, 40, 40], "area": 1600, "iscrowd": 1},
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [-0.5, 0, 50.5, 50], "area": 9000, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
}


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for image in VALID_SPLIT["images"]:
        (images / image["file_name"]).write_bytes(b"")
    return images


def write_split(path: Path, edit: Callable[[dict], None] = lambda content: None) -> Path:
    content = copy.deepcopy(VALID_SPLIT)
    edit(content)
    path.write_text(json.dumps(content))
    return path


def check_fails(ann_file: Path, image_dir: Path, *expected: str) -> str:
    """Run check_split, expect a DatasetError that starts with the file and contains every expected fragment."""
    with pytest.raises(DatasetError) as raised:
        check_split(ann_file, image_dir)
    message = str(raised.value)
    assert message.startswith(f"{ann_file}: ")
    for fragment in expected:
        assert fragment in message
    return message


def test_valid_split_is_summarised(tmp_path: Path, image_dir: Path) -> None:
    summary = check_split(write_split(tmp_path / "ok.json"), image_dir)
    assert (summary.num_images, summary.num_annotations, summary.num_crowd) == (2, 3, 1)
    assert summary.categories == {1: "cat", 2: "dog"}
    assert summary.category_counts == {"cat": 1, "dog": 2}
    assert summary.area_counts == {"small": 1, "medium": 2, "large": 0}


def test_missing_file(tmp_path: Path, image_dir: Path) -> None:
    check_fails(tmp_path / "absent.json", image_dir, "file does not exist")


def test_malformed_json_gives_line_and_column(tmp_path: Path, image_dir: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"images": [],\n  "annotations": [}\n')
    check_fails(path, image_dir, "malformed json at line 2 column 19")


def test_unreadable_file(tmp_path: Path, image_dir: Path) -> None:
    path = tmp_path / "folder.json"
    path.mkdir()
    check_fails(path, image_dir, "cannot read the file", "Is a directory")


def test_missing_top_level_key(tmp_path: Path, image_dir: Path) -> None:
    path = write_split(tmp_path / "keys.json", lambda content: content.pop("categories"))
    check_fails(path, image_dir, "missing top-level key(s) ['categories']")


def test_malformed_entries(tmp_path: Path, image_dir: Path) -> None:
    path = write_split(tmp_path / "entries.json", lambda content: content["annotations"][1].pop("area"))
    check_fails(path, image_dir, "malformed annotations entry", "annotations[1] lacks ['area']")


def test_box_not_made_of_numbers(tmp_path: Path, image_dir: Path) -> None:
    def edit(content: dict) -> None:
        content["annotations"][0]["bbox"] = [0, 0, "20", 10]
        content["annotations"][2]["bbox"] = [1, 2, 3]

    path = write_split(tmp_path / "boxes.json", edit)
    check_fails(
        path, image_dir, "'bbox' of annotations is not a list of 4 numbers (2)", "annotations[0] bbox=[0, 0, '20', 10]"
    )


def test_image_file_missing(tmp_path: Path, image_dir: Path) -> None:
    (image_dir / "sub" / "b.png").unlink()
    ann_file = write_split(tmp_path / "ok.json")
    check_fails(ann_file, image_dir, "image file missing (1)", str(image_dir / "sub" / "b.png"))
    assert check_split(ann_file, image_dir, check_images=False).num_images == 2


def test_box_outside_the_image(tmp_path: Path, image_dir: Path) -> None:
    def edit(content: dict) -> None:
        content["annotations"][2]["bbox"] = [10, 10, 41.5, 30]  # 1.5 px past the right edge of a 50x50 image

    path = write_split(tmp_path / "outside.json", edit)
    check_fails(
        path,
        image_dir,
        "box outside the image by more than 1 px (1)",
        "annotation 3: image sub/b.png (50x50): bbox [10, 10, 41.5, 30]",
    )


def test_non_positive_box_side(tmp_path: Path, image_dir: Path) -> None:
    path = write_split(tmp_path / "flat.json", lambda content: content["annotations"][0].update(bbox=[1, 1, 0, 5]))
    check_fails(path, image_dir, "non-positive box width or height (1)", "annotation 1: bbox [1, 1, 0, 5]")


def test_unknown_category_id(tmp_path: Path, image_dir: Path) -> None:
    path = write_split(tmp_path / "category.json", lambda content: content["annotations"][1].update(category_id=7))
    check_fails(path, image_dir, "unknown category id (1)", "annotation 2: category_id 7")


def test_unknown_image_id(tmp_path: Path, image_dir: Path) -> None:
    path = write_split(tmp_path / "image.json", lambda content: content["annotations"][1].update(image_id=9))
    check_fails(path, image_dir, "unknown image id (1)", "annotation 2: image_id 9")


def test_duplicate_image_ids(tmp_path: Path, image_dir: Path) -> None:
    path = write_split(tmp_path / "images.json", lambda content: content["images"][1].update(id=1))
    check_fails(path, image_dir, "duplicate image id (1): id 1 used 2 times")


def test_duplicate_annotation_ids(tmp_path: Path, image_dir: Path) -> None:
    path = write_split(tmp_path / "annotations.json", lambda content: content["annotations"][2].update(id=2))
    check_fails(path, image_dir, "duplicate annotation id (1): id 2 used 2 times")


def test_empty_split(tmp_path: Path, image_dir: Path) -> None:
    no_annotations = write_split(tmp_path / "no_annotations.json", lambda content: content["annotations"].clear())
    check_fails(no_annotations, image_dir, "empty split (1): no annotations")
    no_images = write_split(tmp_path / "no_images.json", lambda content: content["images"].clear())
    check_fails(no_images, image_dir, "empty split: no images")


def test_problems_of_one_kind_are_collected(tmp_path: Path, image_dir: Path) -> None:
    def edit(content: dict) -> None:
        template = content["annotations"][0]
        content["annotations"] = [dict(template, id=index, bbox=[90, 70, 20, 20]) for index in range(1, 9)]
        content["categories"].append({"id": 1, "name": "again"})

    message = check_fails(
        write_split(tmp_path / "many.json", edit),
        image_dir,
        "9 problem(s)",
        "box outside the image by more than 1 px (8)",
        "annotation 5: image a.png (100x80)",
        "; and 3 more",
        "duplicate category id (1)",
    )
    assert "annotation 6:" not in message


def test_check_dataset_compares_categories(tmp_path: Path, image_dir: Path) -> None:
    train = write_split(tmp_path / "train.json")
    val = write_split(tmp_path / "val.json", lambda content: content["categories"][1].update(name="wolf"))
    spec = DatasetSpec("pets", SplitFiles(train, image_dir), SplitFiles(train, image_dir), ("cat", "dog"))
    assert set(check_dataset(spec)) == {"train", "val"}
    with pytest.raises(DatasetError, match=f"^{val}: categories .* differ from those of {train}"):
        check_dataset(DatasetSpec("pets", SplitFiles(train, image_dir), SplitFiles(val, image_dir), ("cat", "dog")))

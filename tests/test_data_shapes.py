"""The shapes generator: determinism, area buckets, masks that agree with their annotations, COCO compatibility."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tsd_study.data.shapes import CLASSES, generate_shapes
from tsd_study.data.spec import AREA_BUCKETS, area_bucket, read_manifest

SPLITS = ("train", "val")


@pytest.fixture(scope="module")
def shapes_24(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The brief's reference case: 24 images, seed 1."""
    out_dir = tmp_path_factory.mktemp("shapes") / "shapes-24"
    generate_shapes(out_dir, num_images=24, seed=1)
    return out_dir


def load_split(root: Path, split: str) -> dict:
    return json.loads((root / f"{split}.json").read_text())


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_same_arguments_give_identical_files(shapes_24: Path, tmp_path: Path) -> None:
    again = tmp_path / "shapes-24"
    generate_shapes(again, num_images=24, seed=1)
    first, second = file_bytes(shapes_24), file_bytes(again)
    assert len(first) == 24 + 3  # images, train.json, val.json, dataset.json
    assert first == second


def test_different_seeds_differ(shapes_24: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    generate_shapes(other, num_images=24, seed=2)
    assert load_split(other, "train")["annotations"] != load_split(shapes_24, "train")["annotations"]
    assert (other / "images/train/000000.png").read_bytes() != (shapes_24 / "images/train/000000.png").read_bytes()


def test_layout_split_sizes_and_manifest(shapes_24: Path) -> None:
    spec = read_manifest(shapes_24)
    assert spec.name == "shapes-24"
    assert spec.classes == CLASSES
    assert spec.train.image_dir == spec.val.image_dir == shapes_24 / "images"
    train, val = load_split(shapes_24, "train"), load_split(shapes_24, "val")
    assert (len(train["images"]), len(val["images"])) == (19, 5)  # val: round(24 * 0.2)
    for content in (train, val):
        for image in content["images"]:
            assert cv2.imread(str(shapes_24 / "images" / image["file_name"])).shape == (160, 160, 3)
    assert [c["name"] for c in sorted(train["categories"], key=lambda c: c["id"])] == list(CLASSES)
    assert not list(shapes_24.parent.glob(".tmp-*")), "the build folder must be gone"


@pytest.mark.parametrize("split", SPLITS)
def test_every_split_covers_all_area_buckets_and_classes(shapes_24: Path, split: str) -> None:
    annotations = load_split(shapes_24, split)["annotations"]
    assert {area_bucket(annotation["area"]) for annotation in annotations} == set(AREA_BUCKETS)
    if split == "train":
        assert {annotation["category_id"] for annotation in annotations} == set(range(1, len(CLASSES) + 1))


@pytest.mark.parametrize("seed", [0, 7, 123])
def test_three_images_per_split_cover_all_buckets(tmp_path: Path, seed: int) -> None:
    """The anchor schedule's guarantee, for any seed: three consecutive images hold one anchor of each bucket."""
    generate_shapes(tmp_path / "tiny", num_images=6, seed=seed, val_fraction=0.5)
    for split in SPLITS:
        annotations = load_split(tmp_path / "tiny", split)["annotations"]
        assert {area_bucket(annotation["area"]) for annotation in annotations} == set(AREA_BUCKETS)


@pytest.mark.parametrize("split", SPLITS)
def test_masks_decode_and_agree_with_area_and_bbox(shapes_24: Path, split: str) -> None:
    content = load_split(shapes_24, split)
    sizes = {image["id"]: (image["height"], image["width"]) for image in content["images"]}
    assert content["annotations"]
    for annotation in content["annotations"]:
        mask = mask_utils.decode(annotation["segmentation"])
        assert mask.shape == sizes[annotation["image_id"]]
        assert annotation["area"] == mask.sum() > 0
        ys, xs = np.nonzero(mask)
        x, y, width, height = annotation["bbox"]
        assert (x, y, x + width, y + height) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert annotation["iscrowd"] == 0


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_pycocotools_scores_ground_truth_as_perfect(shapes_24: Path, iou_type: str) -> None:
    """COCO() loads each split and COCOeval gives AP 1 to the ground truth scored as detections."""
    dropped = "segmentation" if iou_type == "bbox" else "bbox"  # loadRes reads a box in preference to a mask
    for split in SPLITS:
        with contextlib.redirect_stdout(io.StringIO()):
            ground_truth = COCO(str(shapes_24 / f"{split}.json"))
            detections = ground_truth.loadRes(
                [
                    {key: value for key, value in annotation.items() if key != dropped} | {"score": 1.0}
                    for annotation in ground_truth.dataset["annotations"]
                ]
            )
            evaluation = COCOeval(ground_truth, detections, iou_type)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        assert evaluation.stats[0] == pytest.approx(1.0)


def test_refuses_an_existing_output_folder(shapes_24: Path) -> None:
    with pytest.raises(FileExistsError, match="already exists"):
        generate_shapes(shapes_24, num_images=4, seed=0)


def test_fills_an_empty_output_folder_and_the_cli_refuses_a_full_one_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tsd_study.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert generate_shapes(empty, num_images=4, seed=0).train.ann_file.parent == empty
    assert main(["data", "shapes", "--out", str(empty), "--images", "4"]) == 2
    error = capsys.readouterr().err
    assert error == f"tsd-study: error: {empty}: already exists and is not an empty directory; remove it or choose " \
                    f"another\n"


def test_rejects_images_too_small_for_large_objects(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size must be at least"):
        generate_shapes(tmp_path / "small", num_images=4, seed=0, image_size=64)

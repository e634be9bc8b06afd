"""Dataset check records: each annotation file is checked once per version of it (path, size, modification time),
a changed file or image folder is checked again, and a bad file fails with its one-line error at every load.

Runtime a few seconds (small jsons; one config load).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from tsd_study.cli import main
from tsd_study.config_loading import load_config
from tsd_study.data import check_records
from tsd_study.data.catalog import resolve_dataset
from tsd_study.data.check_records import CACHE_VARIABLE, checked_dataset, checked_split, record_path
from tsd_study.data.checks import SplitSummary, check_split
from tsd_study.data.spec import DatasetError, SplitFiles

SPLIT = {
    "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80},
               {"id": 2, "file_name": "sub/b.png", "width": 50, "height": 50}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 10], "area": 200, "iscrowd": 0},
                    {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 40, 40], "area": 1600, "iscrowd": 1}],
    "categories": [{"id": 2, "name": "dog"}, {"id": 1, "name": "cat"}],
}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A dataset directory: train.json, val.json and images/ (with a subfolder)."""
    root = tmp_path / "pets"
    (root / "images" / "sub").mkdir(parents=True)
    for image in SPLIT["images"]:
        (root / "images" / image["file_name"]).write_bytes(b"")
    for split in ("train", "val"):
        (root / f"{split}.json").write_text(json.dumps(SPLIT))
    return root


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The annotation files check_split parses, in order."""
    checked: list[Path] = []

    def counting(ann_file: Path, image_dir: Path, check_images: bool = True) -> SplitSummary:
        checked.append(ann_file)
        return check_split(ann_file, image_dir, check_images)

    monkeypatch.setattr(check_records, "check_split", counting)
    return checked


def test_each_file_is_checked_once(dataset: Path, tmp_path: Path, checks: list[Path]) -> None:
    home = tmp_path / "home"
    spec, summaries = checked_dataset(str(dataset), home)
    assert checks == [dataset / "train.json", dataset / "val.json"]
    assert spec == resolve_dataset(str(dataset)) and spec.classes == ("cat", "dog")
    assert summaries["train"] == check_split(dataset / "train.json", dataset / "images")

    assert checked_dataset(str(dataset), home) == (spec, summaries)
    assert len(checks) == 2
    assert sorted(path.name for path in (home / "checked").iterdir() if path.suffix == ".json") == sorted(
        record_path(dataset / f"{split}.json", home).name for split in ("train", "val"))


@pytest.mark.parametrize("change", ["size", "mtime", "image removed", "image added"])
def test_a_changed_file_or_image_folder_is_checked_again(dataset: Path, tmp_path: Path, checks: list[Path],
                                                         change: str) -> None:
    train = SplitFiles(dataset / "train.json", dataset / "images")
    checked_split(train, tmp_path)
    if change == "size":
        train.ann_file.write_text(json.dumps(SPLIT, indent=1))
    elif change == "mtime":  # same bytes, touched a second later
        stat = train.ann_file.stat()
        os.utime(train.ann_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    elif change == "image added":
        (dataset / "images" / "sub" / "c.png").write_bytes(b"")
    else:
        (dataset / "images" / "sub" / "b.png").unlink()
        with pytest.raises(DatasetError, match="image file missing"):
            checked_split(train, tmp_path)
        return
    assert checked_split(train, tmp_path) == check_split(train.ann_file, train.image_dir)
    assert checks == [train.ann_file, train.ann_file]
    checked_split(train, tmp_path)
    assert len(checks) == 2


def test_a_bad_file_fails_with_one_line_naming_it_at_every_load(dataset: Path, tmp_path: Path,
                                                                 checks: list[Path]) -> None:
    train = SplitFiles(dataset / "train.json", dataset / "images")
    checked_split(train, tmp_path)  # recorded as good ...
    train.ann_file.write_text('{"images": [')  # ... then broken
    for attempt in (1, 2):
        with pytest.raises(DatasetError) as raised:
            checked_split(train, tmp_path)
        assert str(raised.value) == f"{train.ann_file}: malformed json at line 1 column 13: Expecting value"
    assert len(checks) == 3


def test_records_can_be_turned_off(dataset: Path, tmp_path: Path, checks: list[Path],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_VARIABLE, "off")
    for _ in range(2):
        checked_dataset(str(dataset), tmp_path / "home")
    assert len(checks) == 4 and not (tmp_path / "home").exists()


def test_a_data_home_that_cannot_be_written_means_checking_at_every_load(dataset: Path, tmp_path: Path,
                                                                          checks: list[Path]) -> None:
    home = tmp_path / "not-a-folder"
    home.write_text("")
    for _ in range(2):
        with pytest.warns(UserWarning, match="cannot keep dataset check records"):
            assert checked_dataset(str(dataset), home)[0].classes == ("cat", "dog")
    assert len(checks) == 4


def test_loads_at_the_same_time_check_once(dataset: Path, tmp_path: Path, checks: list[Path]) -> None:
    """The ranks of a job start together: one checks, the others wait for its record."""
    train = SplitFiles(dataset / "train.json", dataset / "images")
    start = threading.Barrier(3)
    results: list[SplitSummary] = []

    def load() -> None:
        start.wait()
        results.append(checked_split(train, tmp_path))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 3 and results[0] == results[1] == results[2]
    assert checks == [train.ann_file]


def test_config_loads_and_data_check_use_the_records(dataset: Path, checks: list[Path],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """load_config reads the records (the session's data home); `data check` checks again and records anew."""
    for _ in range(2):
        cfg = load_config("cpu/faster_rcnn", dataset=str(dataset), import_modules=False)
    assert cfg.model.roi_head.bbox_head.num_classes == 2
    assert len(checks) == 2
    assert main(["data", "check", str(dataset)]) == 0
    assert len(checks) == 4 and "num_images=2" in capsys.readouterr().out
    load_config("cpu/faster_rcnn", dataset=str(dataset), import_modules=False)
    assert len(checks) == 4

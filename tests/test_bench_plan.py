"""`tsd-study bench plan`: the generated COCO-like split passes the dataset checks, and the benchmark runs end to end
on a tiny scale (one study).

Runtime about 30 s on a quiet machine (three planning processes).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsd_study.bench.plan import COCO_CATEGORY_IDS, bench_plan, write_coco_split
from tsd_study.data.checks import check_split


def test_a_generated_split_has_cocos_fields_and_passes_the_checks(tmp_path: Path) -> None:
    size = write_coco_split(tmp_path / "coco", "val", num_images=30, num_annotations=200, seed=3)
    ann_file = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    assert ann_file.stat().st_size == size
    content = json.loads(ann_file.read_text())
    assert set(content) == {"info", "licenses", "images", "annotations", "categories"}
    assert set(content["annotations"][0]) == {"segmentation", "area", "iscrowd", "image_id", "bbox", "category_id",
                                              "id"}
    summary = check_split(ann_file, tmp_path / "coco" / "val2017")
    assert (summary.num_images, summary.num_annotations) == (30, 200)
    assert tuple(summary.categories) == COCO_CATEGORY_IDS


@pytest.mark.slow
def test_the_benchmark_times_the_three_variants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    timings = bench_plan(scale=0.001, studies=("table2",), out=tmp_path)
    assert set(timings) == {"off", "cold", "warm"}
    assert all(timing.seconds > 0 and timing.peak_mb > 0 for timing in timings.values())
    assert timings["warm"].summary.startswith("table2 in profile full, seeds 0,1,2:")
    out = capsys.readouterr().out
    assert "before / after (warm):" in out
    assert len(list((tmp_path / "data-home" / "checked").glob("*.json"))) == 2

"""How long ``tsd-study study plan all --profile full`` takes on COCO-sized annotation files, before and after the
dataset check records (``tsd_study.data.check_records``), measured side by side in one run.

A fake COCO 2017 root is generated in a temporary folder, as the full profile expects it (``data/coco``:
``annotations/instances_{train,val}2017.json`` and an empty file for every image of ``train2017/`` and ``val2017/``).
At ``scale=1`` the train json is like COCO's train2017: 118287 images and 860001 annotations with polygon masks,
about 450 MB; val2017-like: 5000 images, 36781 annotations. Then the planning command runs in a child process three
times: with the records turned off (``TSD_STUDY_CHECK_CACHE=off``: every config load checks both files, the
behaviour before the records; the code before them also parsed the train json a second time to read its classes),
with the records on and none written yet (cold: the first load checks each file and records it), and once more
(warm: every load reads the records). Each child's wall time, CPU time and peak resident memory are printed, with
the ratios.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from tsd_study.data.check_records import CACHE_VARIABLE
from tsd_study.weights import WEIGHTS_VARIABLE

COCO_TRAIN = (118287, 860001)  # images, annotations of instances_train2017.json
COCO_VAL = (5000, 36781)
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
IMAGE_SIZES = ((640, 480), (480, 640), (640, 427), (427, 640), (640, 425), (500, 375), (640, 360))
POLYGON_POINTS = (8, 40)  # points of a generated mask polygon (uniform); COCO's average makes ~450 MB at scale 1
CHUNK = 20000  # annotations formatted at a time
VARIANTS = (("off", "records off (every load checks)"), ("cold", "records on, none yet"),
            ("warm", "records on, written"))


@dataclass(frozen=True)
class Timing:
    """One planning command: wall seconds, the child's CPU seconds (user + system: what a busy machine does not
    inflate) and peak resident memory, and the first line it printed."""

    seconds: float
    cpu_seconds: float
    peak_mb: float
    summary: str


def bench_plan(scale: float = 1.0, studies: tuple[str, ...] = ("all",), out: Path | None = None,
               seed: int = 0) -> dict[str, Timing]:
    """Generate a COCO-sized fake root (in ``out``, kept, or a temporary folder, removed), time the planning with
    the records off, cold and warm, print the table and ratios, and return the timings by variant."""
    root = Path(tempfile.mkdtemp(prefix="tsd-bench-plan-")) if out is None else out
    try:
        began = time.perf_counter()
        coco = root / "data" / "coco"
        sizes = {split: write_coco_split(coco, split, *_scaled(counts, scale), seed=seed + index)
                 for index, (split, counts) in enumerate((("train", COCO_TRAIN), ("val", COCO_VAL)))}
        print(f"generated {coco} in {time.perf_counter() - began:.0f} s: "
              + ", ".join(f"instances_{split}2017.json {size / 1e6:.0f} MB" for split, size in sizes.items()))
        command = [sys.executable, "-m", "tsd_study.cli", "study", "plan", *studies, "--profile", "full"]
        print(f"timing `{' '.join(['tsd-study', *command[3:]])}` in {root}, one child process each")
        timings = {}
        for variant, label in VARIANTS:
            timings[variant] = _time_command(command, root, records_on=variant != "off")
            timing = timings[variant]
            print(f"  {label:<32}{timing.seconds:8.1f} s wall{timing.cpu_seconds:8.1f} s CPU"
                  f"{timing.peak_mb:8.0f} MB peak")
        print(f"the plan: {timings['warm'].summary}")
        off = timings["off"]
        for variant in ("cold", "warm"):
            after = timings[variant]
            print(f"before / after ({variant}): {off.seconds / after.seconds:.1f}x the wall time, "
                  f"{off.cpu_seconds / after.cpu_seconds:.1f}x the CPU time, {off.peak_mb / after.peak_mb:.1f}x the "
                  f"peak memory")
        return timings
    finally:
        if out is None:
            shutil.rmtree(root, ignore_errors=True)


def _scaled(counts: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(2, round(counts[0] * scale)), max(1, round(counts[1] * scale))


def _time_command(command: list[str], root: Path, records_on: bool) -> Timing:
    """Run the planning in ``root`` (its own run store and data home) and wait for it with wait4, whose resource
    usage is that child's alone."""
    environment = {**os.environ, "TSD_STUDY_DATA": str(root / "data-home"), "TSD_STUDY_STORE": str(root / "runs"),
                   CACHE_VARIABLE: "on" if records_on else "off"}
    environment.pop(WEIGHTS_VARIABLE, None)  # the planning of the dataset only, whatever the weights cache holds
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        began = time.perf_counter()
        child = subprocess.Popen(command, cwd=root, env=environment, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed in {root} ({child.returncode}): "
                               f"{stderr.read().decode(errors='replace').strip()}")
        stdout.seek(0)
        summary = stdout.readline().decode().strip()
    return Timing(seconds=seconds, cpu_seconds=usage.ru_utime + usage.ru_stime, peak_mb=usage.ru_maxrss / 1024,
                  summary=summary)


def write_coco_split(coco: Path, split: str, num_images: int, num_annotations: int, seed: int = 0) -> int:
    """Write ``coco/annotations/instances_<split>2017.json`` (COCO's fields and layout, random content that passes
    the dataset checks) and an empty file per image under ``coco/<split>2017/``; returns the json's size in bytes."""
    rng = np.random.default_rng(seed)
    image_dir, ann_file = coco / f"{split}2017", coco / "annotations" / f"instances_{split}2017.json"
    image_dir.mkdir(parents=True, exist_ok=True)
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    image_ids = np.sort(rng.choice(600000, size=num_images, replace=False)) + 1
    sizes = np.array(IMAGE_SIZES)[rng.integers(len(IMAGE_SIZES), size=num_images)]
    partial = ann_file.with_name(f".{ann_file.name}.partial")
    with partial.open("w") as stream:
        stream.write('{"info": {"description": "tsd-study bench plan: COCO-sized fake", "version": "1.0", '
                     '"year": 2017}, "licenses": [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 1, '
                     '"name": "Attribution License"}], "images": [')
        for index, (image_id, (width, height)) in enumerate(zip(image_ids.tolist(), sizes.tolist())):
            name = f"{image_id:012d}.jpg"
            (image_dir / name).touch()
            stream.write(("," if index else "") + json.dumps(
                {"license": 1, "file_name": name, "coco_url": f"http://images.cocodataset.org/{split}2017/{name}",
                 "height": height, "width": width, "date_captured": "2013-11-14 11:18:45",
                 "flickr_url": f"http://farm4.staticflickr.com/fake/{name}", "id": image_id}))
        stream.write('], "annotations": [')
        for start in range(0, num_annotations, CHUNK):
            _write_annotations(stream, rng, image_ids, sizes, start, min(CHUNK, num_annotations - start))
        stream.write('], "categories": [' + ",".join(
            json.dumps({"supercategory": "thing", "id": category_id, "name": f"category{category_id}"})
            for category_id in COCO_CATEGORY_IDS) + "]}")
    os.replace(partial, ann_file)
    return ann_file.stat().st_size


def _write_annotations(stream: TextIO, rng: np.random.Generator, image_ids: np.ndarray, sizes: np.ndarray,
                       start: int, count: int) -> None:
    """``count`` annotations with ids from ``start + 1``: a box inside a random image, a polygon inside the box.

    Coordinates are whole hundredths of a pixel, written through a table of their texts (formatting tens of millions
    of floats one by one would take minutes).
    """
    which = rng.integers(len(image_ids), size=count)
    image_size = sizes[which].astype(float)
    box_size = np.floor(image_size * rng.uniform(0.02, 0.6, size=(count, 2)) * 100) / 100
    corner = np.floor((image_size - box_size) * rng.random((count, 2)) * 100) / 100
    points = rng.integers(*POLYGON_POINTS, endpoint=True, size=count)
    categories = np.array(COCO_CATEGORY_IDS)[rng.integers(len(COCO_CATEGORY_IDS), size=count)]
    ends = np.cumsum(2 * points)
    polygons = (np.repeat(corner * 100, points, axis=0)
                + np.repeat(box_size * 100, points, axis=0) * rng.random((int(points.sum()), 2))).astype(int)
    texts = [",".join(map(_CENTI_TEXTS.__getitem__, coordinates))
             for coordinates in np.split(polygons.ravel(), ends[:-1])]
    for i in range(count):
        x, y = corner[i].tolist()
        w, h = box_size[i].tolist()
        separator = "," if start + i else ""
        stream.write(f'{separator}{{"segmentation": [[{texts[i]}]], "area": {w * h * 0.6:.4f}, "iscrowd": 0, '
                     f'"image_id": {image_ids[which[i]]}, "bbox": [{x:.2f}, {y:.2f}, {w:.2f}, {h:.2f}], '
                     f'"category_id": {categories[i]}, "id": {start + i + 1}}}')


_CENTI_TEXTS = [f"{value // 100}.{value % 100:02d}"
                for value in range(100 * max(max(size) for size in IMAGE_SIZES) + 1)]

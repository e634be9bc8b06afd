"""The `shapes` synthetic instance-segmentation dataset, the CPU profile's embedded default.

Six classes told apart by outline, never by colour (circle, square, triangle, star, cross, ring), painted with a random
colour, rotation and mild aspect jitter over smooth gradient backgrounds cluttered with strokes and blurred blobs that
belong to no class. Objects are painted in order, so later ones occlude earlier ones; as in COCO, an annotation
describes the visible mask (RLE, pixel area, tight box). An object left with less than 40% of its pixels visible, or
with a visible box side under 12 px, is dropped.

Area buckets: each object first draws a COCO area bucket, then a size inside it. Each image also holds one anchor
object, painted last and so never occluded, whose bucket cycles small, medium, large with the image index. Splits are
contiguous index ranges, so any split of three images or more covers all three buckets.

Determinism: image i comes from numpy's Generator seeded with (seed, i), PNGs from cv2.imencode, and every number in
the json is a pixel count, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from tsd_study.atomic import write_json_atomic
from tsd_study.data.spec import (
    AREA_BUCKETS,
    DEFAULT_VAL_FRACTION,
    DatasetSpec,
    SplitFiles,
    area_bucket,
    split_sizes,
    write_manifest,
)

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
DEFAULT_NUM_IMAGES = 2000
DEFAULT_SEED = 0
DEFAULT_IMAGE_SIZE = 160

MAX_OBJECTS = 6
MIN_VISIBLE_FRACTION = 0.4
MIN_VISIBLE_SIDE = 12
# Bucket probabilities (small, medium, large) of the objects besides the anchor, tuned so that about 35/40/25 % of
# the kept objects of the default dataset are small/medium/large once occlusion has dropped or shrunk some of them.
OTHER_BUCKET_PROBABILITIES = (0.36, 0.30, 0.34)
# Sizes are drawn log-uniformly from these full-area ranges (px^2); the large range ends at a share of the image.
SMALL_AREA_RANGE = (150.0, 900.0)
MEDIUM_AREA_RANGE = (1300.0, 8000.0)
LARGE_AREA_LOW = 12000.0
LARGE_AREA_IMAGE_SHARE = 0.6
MIN_IMAGE_SIZE = math.ceil(math.sqrt(LARGE_AREA_LOW / LARGE_AREA_IMAGE_SHARE))  # room for the large range
MAX_ASPECT = 1.25  # width/height stretch of an object, drawn log-uniformly in [1/MAX_ASPECT, MAX_ASPECT]
MAX_TRUNCATION = 0.15  # share of an object's extent that may lie outside the image on each side
MAX_PLACEMENT_TRIES = 100
MIN_COLOR_DISTANCE = 100  # L1 distance, over BGR, between an object's colour and the mean colour beneath it
NOISE_SIGMA = 4.0
SUBPIXEL_BITS = 4  # fixed-point precision of polygon vertices handed to cv2.fillPoly
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]


@dataclass(frozen=True)
class _Outline:
    """A class's shape at unit circumradius: an outer polygon, an optional hole, and its area."""

    outer: np.ndarray
    hole: np.ndarray | None = None

    @cached_property
    def area(self) -> float:
        return _polygon_area(self.outer) - (_polygon_area(self.hole) if self.hole is not None else 0.0)


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _regular_polygon(num_vertices: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    angles = phase + 2 * math.pi * np.arange(num_vertices) / num_vertices
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(num_points: int = 5, inner_radius: float = 0.5) -> np.ndarray:
    radii = np.tile([1.0, inner_radius], num_points)
    angles = -math.pi / 2 + math.pi * np.arange(2 * num_points) / num_points
    return radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _cross(half_thickness: float = 0.32) -> np.ndarray:
    """A plus sign with arms of half-length 1, normalised to unit circumradius."""
    t = half_thickness
    corners = [(t, 1), (t, t), (1, t), (1, -t), (t, -t), (t, -1)]  # right half, from one vertical arm to the other
    corners += [(-x, -y) for x, y in corners]  # the left half is the right half turned by 180 degrees
    return np.array(corners, dtype=float) / math.hypot(1.0, t)


_OUTLINES = {
    "circle": _Outline(_regular_polygon(48)),
    "square": _Outline(_regular_polygon(4, phase=math.pi / 4)),
    "triangle": _Outline(_regular_polygon(3)),
    "star": _Outline(_star()),
    "cross": _Outline(_cross()),
    "ring": _Outline(_regular_polygon(48), hole=_regular_polygon(48, radius=0.55)),
}


def shapes_dirname(num_images: int, seed: int, image_size: int = DEFAULT_IMAGE_SIZE) -> str:
    """Folder name of a generated shapes dataset, e.g. 'shapes-2000-s0-160'."""
    return f"shapes-{num_images}-s{seed}-{image_size}"


def generate_shapes(
    out_dir: Path,
    num_images: int,
    seed: int,
    image_size: int = DEFAULT_IMAGE_SIZE,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> DatasetSpec:
    """Generate the shapes dataset into `out_dir` (which must not exist yet, or be empty) and return its spec.

    The folder is built next to `out_dir` and renamed into place once complete, so readers never see a partial one.
    Layout: images/{train,val}/NNNNNN.png, train.json, val.json (COCO instances) and dataset.json (the manifest).
    """
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} px so large objects fit, got {image_size}")
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: already exists and is not an empty directory; remove it or choose another")
    num_train, _ = split_sizes(num_images, val_fraction)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build_dir = out_dir.parent / f".tmp-{out_dir.name}-{os.getpid()}"
    try:
        _write_dataset(build_dir, out_dir.name, num_images, num_train, seed, image_size)
        os.replace(build_dir, out_dir)
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)
    return _dataset_spec(out_dir, out_dir.name)


def _dataset_spec(root: Path, name: str) -> DatasetSpec:
    def split(split_name: str) -> SplitFiles:
        return SplitFiles(ann_file=root / f"{split_name}.json", image_dir=root / "images")

    return DatasetSpec(name=name, train=split("train"), val=split("val"), classes=CLASSES)


def _write_dataset(root: Path, name: str, num_images: int, num_train: int, seed: int, image_size: int) -> None:
    splits = {"train": range(num_train), "val": range(num_train, num_images)}
    for split_name, indices in splits.items():
        (root / "images" / split_name).mkdir(parents=True)
        images, annotations = [], []
        for index in indices:
            file_name = f"{split_name}/{index:06d}.png"
            image, objects = _draw_image(np.random.default_rng([seed, index]), image_size, AREA_BUCKETS[index % 3])
            ok, png = cv2.imencode(".png", image, PNG_PARAMS)
            if not ok:
                raise RuntimeError(f"cv2.imencode failed on {file_name}")
            (root / "images" / file_name).write_bytes(png.tobytes())
            image_id = index + 1
            images.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
            for category_id, visible in objects:
                annotations.append(_annotation(len(annotations) + 1, image_id, category_id, visible))
        info = {"description": f"tsd-study shapes: {num_images} images of {image_size} px, seed {seed}, {split_name}"}
        write_json_atomic(root / f"{split_name}.json", _coco_json(info, images, annotations))
    write_manifest(root, _dataset_spec(root, name))


def _coco_json(info: dict[str, str], images: list[dict], annotations: list[dict]) -> dict[str, Any]:
    categories = [{"id": index + 1, "name": name, "supercategory": "shape"} for index, name in enumerate(CLASSES)]
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def _annotation(annotation_id: int, image_id: int, category_id: int, visible: np.ndarray) -> dict[str, Any]:
    x, y, width, height = cv2.boundingRect(visible)
    rle = mask_utils.encode(np.asfortranarray(visible))
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [float(x), float(y), float(width), float(height)],
        "area": float(cv2.countNonZero(visible)),
        "iscrowd": 0,
        "segmentation": {"size": [int(side) for side in rle["size"]], "counts": rle["counts"].decode("ascii")},
    }


def _draw_image(
    rng: np.random.Generator, image_size: int, anchor_bucket: str
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One BGR image and its kept objects as (category id, visible uint8 mask), in painting order."""
    image = _background(rng, image_size)
    _add_clutter(rng, image)
    num_others = int(rng.integers(0, MAX_OBJECTS))
    buckets = [AREA_BUCKETS[i] for i in rng.choice(len(AREA_BUCKETS), num_others, p=OTHER_BUCKET_PROBABILITIES)]
    objects = [_sample_object(rng, image_size, bucket) for bucket in [*buckets, anchor_bucket]]
    for _, mask in objects:
        inside = mask.astype(bool)
        image[inside] = _contrasting_color(rng, image[inside].mean(axis=0))
    noise = NOISE_SIGMA * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image + noise, 0, 255).astype(np.uint8), _visible_objects(objects)


def _visible_objects(objects: list[tuple[int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
    """Cut each mask by the objects painted after it; drop the ones hidden too much."""
    covered = np.zeros_like(objects[0][1])
    kept = []
    for category_id, mask in reversed(objects):
        visible = mask & (1 - covered)
        covered |= mask
        _, _, width, height = cv2.boundingRect(visible)
        enough = cv2.countNonZero(visible) >= MIN_VISIBLE_FRACTION * cv2.countNonZero(mask)
        if enough and min(width, height) >= MIN_VISIBLE_SIDE:
            kept.append((category_id, visible))
    return kept[::-1]


def _sample_object(rng: np.random.Generator, image_size: int, bucket: str) -> tuple[int, np.ndarray]:
    """A random object whose full mask falls in `bucket` with box sides of at least MIN_VISIBLE_SIDE."""
    category_index = int(rng.integers(len(CLASSES)))
    outline = _OUTLINES[CLASSES[category_index]]
    low, high = _area_range(bucket, image_size)
    for _ in range(MAX_PLACEMENT_TRIES):
        target_area = math.exp(rng.uniform(math.log(low), math.log(high)))
        mask = _rasterize(rng, outline, math.sqrt(target_area / outline.area), image_size)
        _, _, width, height = cv2.boundingRect(mask)
        if area_bucket(cv2.countNonZero(mask)) == bucket and min(width, height) >= MIN_VISIBLE_SIDE:
            return category_index + 1, mask
    raise RuntimeError(f"no {bucket} {CLASSES[category_index]} fits a {image_size} px image")


def _area_range(bucket: str, image_size: int) -> tuple[float, float]:
    if bucket == "small":
        return SMALL_AREA_RANGE
    if bucket == "medium":
        return MEDIUM_AREA_RANGE
    return LARGE_AREA_LOW, LARGE_AREA_IMAGE_SHARE * image_size**2


def _rasterize(rng: np.random.Generator, outline: _Outline, radius: float, image_size: int) -> np.ndarray:
    """Stretch, rotate, scale and place `outline` at random; return its uint8 0/1 mask."""
    aspect = math.exp(rng.uniform(-math.log(MAX_ASPECT), math.log(MAX_ASPECT)))
    angle = rng.uniform(0.0, 2 * math.pi)
    cos, sin = math.cos(angle), math.sin(angle)
    transform = radius * np.array([[cos, -sin], [sin, cos]]) @ np.diag([aspect, 1 / aspect])
    outer = outline.outer @ transform.T
    low_corner, high_corner = outer.min(axis=0), outer.max(axis=0)
    slack = MAX_TRUNCATION * (high_corner - low_corner)
    first, last = -low_corner - slack, image_size - high_corner + slack
    center = rng.uniform(np.minimum(first, last), np.maximum(first, last))
    mask = np.zeros((image_size, image_size), dtype=np.uint8)
    cv2.fillPoly(mask, [_fixed_point(outer + center)], 1, cv2.LINE_8, SUBPIXEL_BITS)
    if outline.hole is not None:
        cv2.fillPoly(mask, [_fixed_point(outline.hole @ transform.T + center)], 0, cv2.LINE_8, SUBPIXEL_BITS)
    return mask


def _fixed_point(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << SUBPIXEL_BITS)).astype(np.int32)


def _contrasting_color(rng: np.random.Generator, beneath: np.ndarray) -> np.ndarray:
    while True:
        color = rng.integers(0, 256, 3)
        if np.abs(color - beneath).sum() >= MIN_COLOR_DISTANCE:
            return color


def _background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """A linear colour gradient in a random direction plus smooth low-frequency colour noise, as float32 BGR."""
    start, end = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    angle = rng.uniform(0.0, 2 * math.pi)
    xs, ys = _pixel_grid(image_size)
    ramp = xs * math.cos(angle) + ys * math.sin(angle)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    coarse_noise = rng.normal(0.0, 25.0, (4, 4, 3)).astype(np.float32)
    smooth_noise = cv2.resize(coarse_noise, (image_size, image_size), interpolation=cv2.INTER_CUBIC)
    return np.clip(start + ramp[..., None] * (end - start) + smooth_noise, 0, 255)


@cache
def _pixel_grid(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel x and y coordinates as float32 arrays (read-only, shared between images)."""
    ys, xs = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    xs.flags.writeable = False
    ys.flags.writeable = False
    return xs, ys


def _add_clutter(rng: np.random.Generator, image: np.ndarray) -> None:
    """Paint distractors in place: open polyline strokes and soft irregular blobs, none of them a class shape."""
    image_size = image.shape[0]
    for _ in range(int(rng.integers(1, 5))):
        steps = rng.normal(0.0, 25.0, (int(rng.integers(2, 5)), 2))
        points = rng.uniform(0, image_size, 2) + np.cumsum(steps, axis=0)
        color = tuple(float(channel) for channel in rng.uniform(0, 255, 3))
        cv2.polylines(image, [points.astype(np.int32)], False, color, int(rng.integers(1, 4)), cv2.LINE_8)
    for _ in range(int(rng.integers(0, 3))):
        radii = rng.uniform(8, 30) * rng.uniform(0.65, 1.35, 12)
        angles = 2 * math.pi * np.arange(12) / 12
        outline = rng.uniform(0, image_size, 2) + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        alpha = np.zeros(image.shape[:2], dtype=np.float32)
        cv2.fillPoly(alpha, [outline.astype(np.int32)], 1.0)
        alpha = rng.uniform(0.4, 0.8) * cv2.GaussianBlur(alpha, (0, 0), rng.uniform(2.0, 5.0))
        image[:] = image * (1 - alpha[..., None]) + rng.uniform(0, 255, 3) * alpha[..., None]

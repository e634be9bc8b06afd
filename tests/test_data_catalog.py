"""Dataset references and apply_dataset on mmdetection's own configs.

mmengine.hub and mmdet import torch (seconds), so they are imported inside the tests that use them: the spawned
workers of the concurrency test import this module and should start fast.
"""

from __future__ import annotations

import multiprocessing
import shutil
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from tsd_study.data.catalog import apply_dataset, resolve_dataset
from tsd_study.data.shapes import CLASSES, generate_shapes
from tsd_study.data.spec import DatasetError, DatasetSpec

ACCEPTED_FORMS = ("'shapes', 'shapes:N' or 'shapes:N:SEED'", "'coco2017' or 'coco2017:ROOT'", "a directory holding")


@pytest.fixture(scope="module")
def small_shapes(tmp_path_factory: pytest.TempPathFactory) -> DatasetSpec:
    return generate_shapes(tmp_path_factory.mktemp("data") / "small", num_images=10, seed=0)


def test_shapes_ref_generates_once_into_the_data_home(tmp_path: Path) -> None:
    spec = resolve_dataset("shapes:12:3", data_home=tmp_path)
    root = tmp_path / "shapes-12-s3-160"
    assert spec.name == root.name
    assert spec.train.ann_file == root / "train.json"
    assert spec.classes == CLASSES
    written = spec.train.ann_file.stat().st_mtime_ns
    assert resolve_dataset("shapes:12:3", data_home=tmp_path) == spec
    assert spec.train.ann_file.stat().st_mtime_ns == written


def test_shapes_defaults_and_data_home_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'shapes' and 'shapes:N' name the default folders; a small stand-in spares generating 2000 images."""
    monkeypatch.setenv("TSD_STUDY_DATA", str(tmp_path))
    generate_shapes(tmp_path / "shapes-2000-s0-160", num_images=4, seed=0)
    assert resolve_dataset("shapes").name == "shapes-2000-s0-160"
    assert resolve_dataset("shapes:6").name == "shapes-6-s0-160"


@pytest.mark.parametrize("ref", ["shapes:", "shapes:x", "shapes:10:-1", "shapes:1:2:3", "shapes:1"])
def test_malformed_shapes_refs(tmp_path: Path, ref: str) -> None:
    with pytest.raises(DatasetError, match=f"malformed reference '{ref}'"):
        resolve_dataset(ref, data_home=tmp_path)


def test_unknown_ref_lists_the_accepted_forms(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset reference 'imagenet'") as raised:
        resolve_dataset("imagenet", data_home=tmp_path)
    for form in ACCEPTED_FORMS:
        assert form in str(raised.value)


def test_directory_with_manifest(small_shapes: DatasetSpec) -> None:
    assert resolve_dataset(str(small_shapes.train.ann_file.parent)) == small_shapes


def test_directory_without_manifest(small_shapes: DatasetSpec, tmp_path: Path) -> None:
    root = tmp_path / "plain"
    shutil.copytree(small_shapes.train.ann_file.parent, root)
    (root / "dataset.json").unlink()
    spec = resolve_dataset(str(root))
    assert (spec.name, spec.classes) == ("plain", CLASSES)
    assert (spec.train.ann_file, spec.val.ann_file, spec.val.image_dir) == (
        root / "train.json",
        root / "val.json",
        root / "images",
    )
    (root / "val.json").unlink()
    with pytest.raises(DatasetError, match=f"^{root}: no dataset.json, and no val.json either"):
        resolve_dataset(str(root))


def test_coco2017_layout(small_shapes: DatasetSpec, tmp_path: Path) -> None:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        shutil.copy(getattr(small_shapes, split).ann_file, root / "annotations" / f"instances_{split}2017.json")
        (root / f"{split}2017").mkdir()
    spec = resolve_dataset(f"coco2017:{root}")
    assert (spec.name, spec.classes) == ("coco2017", CLASSES)
    assert spec.val.image_dir == root / "val2017"
    shutil.rmtree(root / "val2017")
    with pytest.raises(DatasetError, match=f"^{root / 'val2017'}: missing from the COCO 2017 layout"):
        resolve_dataset(f"coco2017:{root}")
    with pytest.raises(DatasetError, match="COCO 2017 root does not exist"):
        resolve_dataset(f"coco2017:{tmp_path / 'absent'}")


def test_coco2017_default_root_is_data_coco(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match=f"^{tmp_path / 'data' / 'coco'}: COCO 2017 root does not exist"):
        resolve_dataset("coco2017")


def resolve_after_barrier(barrier: Barrier, ref: str, home: Path, results: Queue) -> None:
    """Resolve `ref` once both workers are ready; put the spec, or the error, on `results`."""
    barrier.wait()
    try:
        results.put(resolve_dataset(ref, data_home=home))
    except Exception as error:  # handed to the test, which fails on it
        results.put(error)


def test_concurrent_resolves_generate_once(tmp_path: Path) -> None:
    """Two processes start together; without the lock the second rename onto the folder would fail."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    arguments = (barrier, "shapes:40:5", tmp_path, results)
    workers = [context.Process(target=resolve_after_barrier, args=arguments) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert outcomes[0] == outcomes[1] == resolve_dataset("shapes:40:5", data_home=tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [".shapes-40-s5-160.lock", "shapes-40-s5-160"]


@pytest.mark.parametrize(
    ("config", "heads"),
    [("mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py", 2), ("cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py", 4)],
)
def test_apply_dataset_on_mmdetection_configs(small_shapes: DatasetSpec, config: str, heads: int) -> None:
    from mmengine.hub import get_config

    cfg = get_config(f"mmdet::{config}")
    cfg.train_dataloader.dataset = dict(type="RepeatDataset", times=2, dataset=cfg.train_dataloader.dataset)
    apply_dataset(cfg, small_shapes)
    image_prefix = f"{small_shapes.train.image_dir}/"
    for loader, split in (("train_dataloader", "train"), ("val_dataloader", "val"), ("test_dataloader", "val")):
        dataset = cfg[loader].dataset
        dataset = dataset.get("dataset", dataset)
        assert dataset.data_root == ""
        assert dataset.ann_file == str(getattr(small_shapes, split).ann_file)
        assert dataset.data_prefix == dict(img=image_prefix)
        assert tuple(dataset.metainfo.classes) == CLASSES
    assert cfg.val_evaluator.ann_file == cfg.test_evaluator.ann_file == str(small_shapes.val.ann_file)
    roi_head = cfg.model.roi_head
    num_classes = [head.num_classes for key in ("bbox_head", "mask_head") for head in _as_list(roi_head[key])]
    assert num_classes == [len(CLASSES)] * heads


def _as_list(value: object) -> list:
    return list(value) if isinstance(value, list) else [value]


def test_applied_config_builds_mmdetection_datasets(small_shapes: DatasetSpec) -> None:
    """The real check: mmdetection's CocoDataset loads the applied config, RLE masks and all."""
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    from mmengine.hub import get_config

    register_all_modules()
    cfg = get_config("mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py")
    apply_dataset(cfg, small_shapes)
    train = DATASETS.build(cfg.train_dataloader.dataset)
    val = DATASETS.build(cfg.val_dataloader.dataset)
    assert (len(train), len(val)) == (8, 2)
    assert train.metainfo["classes"] == CLASSES
    sample = train[0]["data_samples"]
    assert len(sample.gt_instances) == len(sample.gt_instances.masks) > 0

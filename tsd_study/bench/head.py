"""Cost of TSD + PC over the sibling-head baseline: same backbone, same images, same machine, one process.

Inference is timed as Table 5 times it (forward + NMS per image, batch 1); training as one optimizer step on a
batch of two images with ground truth. Both models keep random weights: the comparison is about compute, and the
same images go through both.
"""
from __future__ import annotations

import statistics
import time

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from tsd_study.bench.latency import measure_latency
from tsd_study.runner import config_path


def build_detector(config: str, device: str) -> torch.nn.Module:
    """A detector from a packaged config, with random weights (no pretrained download)."""
    from mmdet.registry import MODELS

    cfg = Config.fromfile(config_path(config))
    init_default_scope(cfg.get("default_scope", "mmdet"))
    cfg.model.backbone.pop("init_cfg", None)
    return MODELS.build(cfg.model).to(device)


def demo_batches(num_images: int, height: int, width: int, num_classes: int, device: str,
                 images_per_batch: int = 1, seed: int = 0) -> list[dict]:
    """Random images with random ground truth, packed as mmengine data batches."""
    from mmdet.testing import demo_mm_inputs

    torch.manual_seed(seed)
    batches = []
    for _ in range(num_images // images_per_batch):
        batch = demo_mm_inputs(images_per_batch, [[3, height, width]] * images_per_batch,
                               num_items=[8] * images_per_batch, num_classes=num_classes)
        batch["inputs"] = [image.to(device) for image in batch["inputs"]]
        batches.append(batch)
    return batches


def time_train_step(model: torch.nn.Module, batches: list[dict], warmup: int = 1) -> float:
    """Median milliseconds of one SGD step (data preprocessing, forward with losses, backward, update)."""
    optim_wrapper = build_optim_wrapper(model, dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=1e-4)))
    model.train()
    times = []
    for index, batch in enumerate(batches):
        start = time.perf_counter()
        model.train_step(batch, optim_wrapper)
        if next(model.parameters()).is_cuda:
            torch.cuda.synchronize()
        if index >= warmup:
            times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def bench_head(baseline: str = "full/faster_rcnn", tsd: str = "full/tsd_pc", height: int = 800, width: int = 1216,
               num_images: int = 10, train_steps: int = 4, device: str = "cpu") -> dict:
    """Inference and training-step time of ``tsd`` over ``baseline``; prints a table and returns the numbers."""
    models = {"baseline": build_detector(baseline, device), "tsd": build_detector(tsd, device)}
    num_classes = models["baseline"].roi_head.bbox_head.num_classes
    inference = demo_batches(num_images + 3, height, width, num_classes, device)
    training = demo_batches(2 * train_steps, height, width, num_classes, device, images_per_batch=2, seed=1)
    result: dict = {"device": device if device == "cpu" else torch.cuda.get_device_name(),
                    "threads": torch.get_num_threads(), "image": f"{width}x{height}",
                    "baseline": baseline, "tsd": tsd}
    for name, model in models.items():
        result[f"{name}_inference_ms"] = measure_latency(model, inference, num_images=num_images, warmup=3)
        result[f"{name}_train_step_ms"] = time_train_step(model, training)
    result["inference_ratio"] = result["tsd_inference_ms"] / result["baseline_inference_ms"]
    result["train_step_ratio"] = result["tsd_train_step_ms"] / result["baseline_train_step_ms"]
    print(f"device {result['device']} ({result['threads']} threads), images {result['image']}")
    print(f"{'':22}{'baseline':>12}{'TSD + PC':>12}{'ratio':>8}")
    for kind in ("inference", "train_step"):
        print(f"{kind + ' (ms)':22}{result[f'baseline_{kind}_ms']:12.1f}{result[f'tsd_{kind}_ms']:12.1f}"
              f"{result[f'{kind}_ratio']:8.3f}")
    return result

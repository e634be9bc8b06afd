"""Cost of TSD + PC over the sibling-head baseline: same backbone, same images, same machine, one process.

Inference is timed as Table 5 times it (forward + NMS per image, batch 1); training as one optimizer step on a
batch of two images with ground truth. The two models take turns on every image (which one goes first alternates),
so a change in the machine's load during the run affects both alike. Both keep random weights: the comparison is
about compute, and the same images go through both.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from mmengine.optim import build_optim_wrapper

from tsd_study.bench.latency import elapsed_ms
from tsd_study.config_loading import read_config
from tsd_study.runner import build_model

MODELS = ("baseline", "tsd")


def build_detector(config: str, device: str) -> torch.nn.Module:
    """A detector from a packaged config, with random weights (no pretrained download)."""
    cfg = read_config(config)
    cfg.model.backbone.pop("init_cfg", None)
    return build_model(cfg).to(device)


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


def time_in_turns(steps: dict[str, Callable[[dict], object]], batches: list[dict], device: torch.device,
                  warmup: int) -> dict[str, float]:
    """Median milliseconds of each named step over ``batches`` after ``warmup``; the steps take turns on each batch,
    in alternating order."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for index, batch in enumerate(batches):
        order = list(steps) if index % 2 == 0 else list(reversed(steps))
        for name in order:
            milliseconds = elapsed_ms(lambda: steps[name](batch), device)
            if index >= warmup:
                times[name].append(milliseconds)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_head(baseline: str = "full/faster_rcnn", tsd: str = "full/tsd_pc", height: int = 800, width: int = 1216,
               num_images: int = 10, train_steps: int = 4, device: str = "cpu") -> dict:
    """Inference and training-step time of ``tsd`` over ``baseline``; prints a table and returns the numbers."""
    models = {"baseline": build_detector(baseline, device), "tsd": build_detector(tsd, device)}
    torch_device = next(models["baseline"].parameters()).device
    num_classes = models["baseline"].roi_head.bbox_head.num_classes
    inference = demo_batches(num_images + 2, height, width, num_classes, device)
    training = demo_batches(2 * (train_steps + 1), height, width, num_classes, device, images_per_batch=2, seed=1)
    for model in models.values():
        model.eval()
    with torch.no_grad():
        inference_ms = time_in_turns({name: model.test_step for name, model in models.items()}, inference,
                                     torch_device, warmup=2)
    optim_wrappers = {name: build_optim_wrapper(model, dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=1e-4)))
                      for name, model in models.items()}
    for model in models.values():
        model.train()
    train_ms = time_in_turns({name: lambda batch, name=name: models[name].train_step(batch, optim_wrappers[name])
                              for name in models}, training, torch_device, warmup=1)
    result: dict = {"device": device if device == "cpu" else torch.cuda.get_device_name(),
                    "threads": torch.get_num_threads(), "image": f"{width}x{height}",
                    "baseline": baseline, "tsd": tsd}
    for name in MODELS:
        result[f"{name}_inference_ms"] = inference_ms[name]
        result[f"{name}_train_step_ms"] = train_ms[name]
    result["inference_ratio"] = result["tsd_inference_ms"] / result["baseline_inference_ms"]
    result["train_step_ratio"] = result["tsd_train_step_ms"] / result["baseline_train_step_ms"]
    print(f"device {result['device']} ({result['threads']} threads), images {result['image']}")
    print(f"{'':22}{'baseline':>12}{'TSD + PC':>12}{'ratio':>8}")
    for kind in ("inference", "train_step"):
        print(f"{kind + ' (ms)':22}{result[f'baseline_{kind}_ms']:12.1f}{result[f'tsd_{kind}_ms']:12.1f}"
              f"{result[f'{kind}_ratio']:8.3f}")
    return result

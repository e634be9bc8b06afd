"""Inference latency as Table 5 measures it: network forward plus post-processing (NMS), one image at a time."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def elapsed_ms(call: Callable[[], object], device: torch.device) -> float:
    """Milliseconds ``call()`` takes, its queued CUDA work included."""
    _synchronize(device)
    start = time.perf_counter()
    call()
    _synchronize(device)
    return 1000.0 * (time.perf_counter() - start)


@torch.no_grad()
def measure_latency(model: nn.Module, batches: Iterable[dict], num_images: int = 50, warmup: int = 5) -> float:
    """Median milliseconds per image of ``model.test_step`` (preprocessing, forward, NMS) on batch-size-1 batches.

    ``batches`` yields mmengine data batches of one image (e.g. a test dataloader with ``batch_size=1``); the first
    ``warmup`` are run but not timed.
    """
    model.eval()
    device = next(model.parameters()).device
    times: list[float] = []
    for index, batch in enumerate(batches):
        if index >= warmup + num_images:
            break
        milliseconds = elapsed_ms(lambda: model.test_step(batch), device)
        if index >= warmup:
            times.append(milliseconds)
    if not times:
        raise ValueError(f"measure_latency: fewer than {warmup + 1} images to time")
    return statistics.median(times)

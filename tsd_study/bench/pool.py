"""Benchmark: forward + backward of our deformable RoI pooling against mmcv's RoIAlign on one FPN level.

Both ops pool the same features and RoIs with the same sampling ratio; ours gets pointwise offsets and computes
gradients for the features and the offsets, RoIAlign (``aligned=True``) for the features only. Times are the median
of ``repeats`` runs after one warm-up run. Run ``tsd-study bench pool``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from mmcv.ops import RoIAlign
from torch import Tensor

from tsd_study.bench.latency import elapsed_ms
from tsd_study.models.deform_roi_pool import deform_roi_pool

IMAGE_HEIGHT, IMAGE_WIDTH = 800, 1216
LEVEL_STRIDE = 8
# mmdet's FPN RoI mapping (finest_scale 56) sends boxes with sqrt(area) in [112, 224) to the stride-8 level.
MIN_ROI_SCALE, MAX_ROI_SCALE = 112.0, 224.0
BATCH_SIZES = (1, 2)
OFFSET_STD = 0.1


def level_rois(num_rois_per_image: int, batch: int, generator: torch.Generator) -> Tensor:
    """RoIs (batch * num_rois_per_image, 5) of the sizes mmdet assigns to the stride-8 level, centred in the image."""
    count = num_rois_per_image * batch
    scale = torch.empty(count).uniform_(MIN_ROI_SCALE, MAX_ROI_SCALE, generator=generator)
    aspect = torch.empty(count).uniform_(0.5, 2.0, generator=generator).sqrt()
    half_width, half_height = scale * aspect / 2, scale / aspect / 2
    centre_x = torch.rand(count, generator=generator) * IMAGE_WIDTH
    centre_y = torch.rand(count, generator=generator) * IMAGE_HEIGHT
    image = torch.arange(batch).repeat_interleave(num_rois_per_image).float()
    return torch.stack(
        [image, centre_x - half_width, centre_y - half_height, centre_x + half_width, centre_y + half_height], dim=1
    )


def median_seconds(step: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Median wall time of ``step`` over ``repeats`` runs, after one warm-up run."""
    step()
    return statistics.median(elapsed_ms(step, device) for _ in range(repeats)) / 1000.0


def bench_level(
    batch: int, num_rois: int, channels: int, output_size: int, sampling_ratio: int, repeats: int, device: torch.device
) -> dict[str, float | int]:
    """Forward + backward times of both ops on a ``batch`` x ``channels`` stride-8 map with ``num_rois`` per image."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(
        batch, channels, IMAGE_HEIGHT // LEVEL_STRIDE, IMAGE_WIDTH // LEVEL_STRIDE, generator=generator
    ).to(device)
    rois = level_rois(num_rois, batch, generator).to(device)
    offsets = (OFFSET_STD * torch.randn(len(rois), 2, output_size, output_size, generator=generator)).to(device)
    grad_output = torch.randn(len(rois), channels, output_size, output_size, generator=generator).to(device)
    roi_align = RoIAlign(output_size, 1 / LEVEL_STRIDE, sampling_ratio, aligned=True)

    def ours() -> None:
        pooled = deform_roi_pool(
            features.detach().requires_grad_(), rois, offsets.detach().requires_grad_(), output_size,
            1 / LEVEL_STRIDE, sampling_ratio,
        )
        pooled.backward(grad_output)

    def reference() -> None:
        roi_align(features.detach().requires_grad_(), rois).backward(grad_output)

    ours_s = median_seconds(ours, repeats, device)
    roi_align_s = median_seconds(reference, repeats, device)
    return {"batch": batch, "num_rois": len(rois), "ours_s": ours_s, "roi_align_s": roi_align_s,
            "ratio": ours_s / roi_align_s}


def bench_pool(
    num_rois: int = 512,
    channels: int = 256,
    output_size: int = 7,
    sampling_ratio: int = 4,
    repeats: int = 5,
    device: str = "cpu",
) -> dict[str, object]:
    """Time both ops on a 1-image and a 2-image stride-8 level (``num_rois`` per image); print and return the table."""
    torch_device = torch.device(device)
    rows = [
        bench_level(batch, num_rois, channels, output_size, sampling_ratio, repeats, torch_device)
        for batch in BATCH_SIZES
    ]
    result = {"device": device, "threads": torch.get_num_threads(), "repeats": repeats, "rows": rows}
    print(format_table(result))
    return result


def format_table(result: dict[str, object]) -> str:
    """The benchmark result as a plain-text table."""
    lines = [
        f"deform_roi_pool (pointwise offsets) vs mmcv RoIAlign, forward + backward, device={result['device']}, "
        f"threads={result['threads']}, median of {result['repeats']}",
        f"{'images':>6} {'rois':>6} {'ours [s]':>10} {'RoIAlign [s]':>13} {'ours/RoIAlign':>14}",
    ]
    for row in result["rows"]:
        lines.append(
            f"{row['batch']:>6} {row['num_rois']:>6} {row['ours_s']:>10.4f} {row['roi_align_s']:>13.4f} "
            f"{row['ratio']:>14.3f}"
        )
    return "\n".join(lines)

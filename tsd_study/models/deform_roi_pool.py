"""Deformable RoI pooling with mmcv's semantics, including a CPU implementation.

TSD pools the features of its derived proposals with deformable RoI pooling (as in the paper and the released code).
mmcv 2.1 only has CUDA (and NPU/MLU) kernels for it, so CUDA tensors go to ``mmcv.ops.deform_roi_pool`` and every
other device uses the pure-PyTorch implementation below, which computes what mmcv's CUDA kernel
(``deform_roi_pool_cuda_kernel.cuh`` with ``bilinear_interpolate`` from ``common_cuda_helper.hpp``) computes:

* RoI ``(b, x1, y1, x2, y2)`` starts at ``x1 * spatial_scale - 0.5`` (the "aligned" convention) and its size is
  not clamped; bin size = RoI size / output size.
* Bin ``(i, j)`` is shifted by ``gamma * roi_width * offset_x[i, j]`` and ``gamma * roi_height * offset_y[i, j]``.
* Each bin averages a fixed ``sampling_ratio x sampling_ratio`` grid of points at ``(k + 0.5) / sampling_ratio``
  of the bin.
* A point with ``y < -1`` or ``y > H`` (``x`` likewise) contributes 0; coordinates in ``[-1, 0]`` clamp to 0 and
  coordinates ``>= H - 1`` clamp to ``H - 1`` (the last row/column extends); otherwise bilinear interpolation.

Gradients flow to the features and to the offsets by autograd. They are the exact derivatives of the forward pass.
mmcv's CUDA backward differs in one place: it computes the offset gradient with the unclamped sample coordinate, so
for points in the border bands ``-1 < y < 0`` and ``H - 1 < y < H`` (``x`` likewise) its offset gradient is not the
derivative of its own forward pass (which is flat there in that direction). Interior points agree.

The implementation turns each output bin into a weighted sum of ``4 * sampling_ratio**2`` feature-map pixels (four
bilinear corners per sample point) and evaluates all bins at once with ``torch.nn.functional.embedding_bag`` over a
channels-last copy of the features. Its backward (:class:`_WeightedPixelSum`) scatters the feature gradient with
``index_add_`` and gathers the weight gradient, which autograd carries on to the offsets; on CPU this is several
times faster than ``embedding_bag``'s own sort-based backward. ``tsd-study bench pool`` compares the whole
op's speed with RoIAlign.
"""

from __future__ import annotations

import mmcv.ops
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

ROI_COLUMNS = 5


def deform_roi_pool(
    features: Tensor,
    rois: Tensor,
    offsets: Tensor | None,
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int = 4,
    gamma: float = 0.1,
) -> Tensor:
    """Pool ``features`` (B, C, H, W) over ``rois`` (n, 5) into (n, C, out_h, out_w), each bin shifted by its offset.

    ``offsets`` is (n, 2, out_h, out_w) (pointwise, x first), (n, 2) (one translation per RoI, tiled over the bins)
    or None (no shift: RoIAlign with ``aligned=True``). Offsets are in units of ``gamma`` times the RoI size.
    """
    out_h, out_w = _pair(output_size)
    _check_inputs(features, rois, offsets, out_h, out_w, sampling_ratio)
    rois = rois.to(features.dtype)
    if offsets is not None:
        offsets = _pointwise_offsets(offsets, out_h, out_w)
    if features.is_cuda:
        if offsets is not None:
            offsets = offsets.contiguous()
        return mmcv.ops.deform_roi_pool(
            features, rois, offsets, (out_h, out_w), spatial_scale, sampling_ratio, gamma
        )
    return _deform_roi_pool_torch(features, rois, offsets, out_h, out_w, spatial_scale, sampling_ratio, gamma)


class DeformRoIPool(nn.Module):
    """Module form of :func:`deform_roi_pool`."""

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float,
        sampling_ratio: int = 4,
        gamma: float = 0.1,
    ) -> None:
        super().__init__()
        _check_sampling_ratio(sampling_ratio)
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.gamma = float(gamma)

    def forward(self, features: Tensor, rois: Tensor, offsets: Tensor | None = None) -> Tensor:
        """Pool ``features`` over ``rois`` with optional pointwise or proposal-wise ``offsets``."""
        return deform_roi_pool(
            features, rois, offsets, self.output_size, self.spatial_scale, self.sampling_ratio, self.gamma
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, gamma={self.gamma}"
        )


def _check_sampling_ratio(sampling_ratio: int) -> None:
    if sampling_ratio <= 0:
        raise ValueError(
            f"deform_roi_pool: sampling_ratio must be > 0 (a fixed grid of samples per bin), got {sampling_ratio}; "
            "mmcv's adaptive sampling (sampling_ratio=0) is not supported"
        )


def _check_inputs(
    features: Tensor, rois: Tensor, offsets: Tensor | None, out_h: int, out_w: int, sampling_ratio: int
) -> None:
    """Raise ValueError naming the argument whose shape, dtype or device is wrong."""
    _check_sampling_ratio(sampling_ratio)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"deform_roi_pool: output_size must be positive, got {(out_h, out_w)}")
    if features.dim() != 4 or not features.is_floating_point():
        raise ValueError(
            f"deform_roi_pool: features must be a floating-point (B, C, H, W) tensor, "
            f"got shape {tuple(features.shape)} and dtype {features.dtype}"
        )
    if rois.dim() != 2 or rois.shape[1] != ROI_COLUMNS:
        raise ValueError(
            f"deform_roi_pool: rois must have shape (n, 5) = (batch index, x1, y1, x2, y2), got {tuple(rois.shape)}"
        )
    if rois.device != features.device:
        raise ValueError(f"deform_roi_pool: rois are on {rois.device} but features are on {features.device}")
    if offsets is None:
        return
    num_rois = rois.shape[0]
    if tuple(offsets.shape) not in ((num_rois, 2, out_h, out_w), (num_rois, 2)):
        raise ValueError(
            f"deform_roi_pool: offsets must have shape (n, 2, out_h, out_w) = {(num_rois, 2, out_h, out_w)} "
            f"(pointwise) or (n, 2) = {(num_rois, 2)} (proposal-wise), got {tuple(offsets.shape)}"
        )
    if offsets.dtype != features.dtype or offsets.device != features.device:
        raise ValueError(
            f"deform_roi_pool: offsets ({offsets.dtype} on {offsets.device}) must match the features' dtype and "
            f"device ({features.dtype} on {features.device})"
        )


def _pointwise_offsets(offsets: Tensor, out_h: int, out_w: int) -> Tensor:
    """Tile proposal-wise (n, 2) offsets over the bins; pointwise (n, 2, out_h, out_w) offsets pass unchanged."""
    if offsets.dim() == 2:
        return offsets[:, :, None, None].expand(-1, -1, out_h, out_w)
    return offsets


def _deform_roi_pool_torch(
    features: Tensor,
    rois: Tensor,
    offsets: Tensor | None,
    out_h: int,
    out_w: int,
    spatial_scale: float,
    sampling_ratio: int,
    gamma: float,
) -> Tensor:
    """Deformable RoI pooling as one ``embedding_bag`` over channels-last pixels (any device, autograd gradients)."""
    batch, channels, height, width = features.shape
    batch_index = _batch_index(rois, batch)
    x, y = _sample_coordinates(rois, offsets, out_h, out_w, spatial_scale, sampling_ratio, gamma)
    x_index, x_weight = _bilinear_axis(x, width)
    y_index, y_weight = _bilinear_axis(y, height)
    # (n, out_h, out_w, s, s, 2, 2): each bin sums 4 * s * s (pixel, weight) pairs, the two rows x two columns
    # around each of its s x s sample points.
    row_start = (batch_index.view(-1, 1, 1, 1, 1, 1, 1) * height + y_index[..., :, None]) * width
    pixel_index = row_start + x_index[..., None, :]
    pixel_weight = y_weight[..., :, None] * x_weight[..., None, :] / sampling_ratio**2
    pixels_per_bin = 4 * sampling_ratio**2
    pixels = features.permute(0, 2, 3, 1).contiguous().view(batch * height * width, channels)
    bins = _WeightedPixelSum.apply(
        pixels, pixel_index.reshape(-1, pixels_per_bin), pixel_weight.reshape(-1, pixels_per_bin)
    )
    # (n, C, out_h, out_w) in channels-last memory: callers copy it into place anyway (one copy, not two)
    return bins.view(len(rois), out_h, out_w, channels).permute(0, 3, 1, 2)


class _WeightedPixelSum(torch.autograd.Function):
    """``bins[b] = sum_k weight[b, k] * pixels[index[b, k]]``: embedding_bag forward, scatter/gather backward."""

    CHUNK_ELEMENTS = 1 << 22  # floats materialised at once in backward (16 MiB in float32)

    @staticmethod
    def forward(ctx, pixels: Tensor, index: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(pixels, index, weight)
        return F.embedding_bag(index, pixels, per_sample_weights=weight, mode="sum")

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_bins: Tensor) -> tuple[Tensor | None, None, Tensor | None]:
        pixels, index, weight = ctx.saved_tensors
        grad_pixels = torch.zeros_like(pixels) if ctx.needs_input_grad[0] else None
        grad_weight = torch.empty_like(weight) if ctx.needs_input_grad[2] else None
        per_bin = index.shape[1] * pixels.shape[1]
        step = max(1, _WeightedPixelSum.CHUNK_ELEMENTS // max(per_bin, 1))
        for start in range(0, index.shape[0], step):
            chunk = slice(start, start + step)
            chunk_index, chunk_grad = index[chunk], grad_bins[chunk]
            if grad_pixels is not None:
                contributions = weight[chunk, :, None] * chunk_grad[:, None, :]
                grad_pixels.index_add_(0, chunk_index.reshape(-1), contributions.reshape(-1, pixels.shape[1]))
            if grad_weight is not None:
                grad_weight[chunk] = torch.einsum("bkc,bc->bk", pixels[chunk_index], chunk_grad)
        return grad_pixels, None, grad_weight


def _batch_index(rois: Tensor, batch: int) -> Tensor:
    """The RoIs' image indices as int64, checked to name an image of the batch."""
    batch_index = rois[:, 0].long()
    if rois.shape[0] and (batch_index.min() < 0 or batch_index.max() >= batch):
        raise ValueError(
            f"deform_roi_pool: rois[:, 0] must be image indices in [0, {batch}), "
            f"got values in [{int(batch_index.min())}, {int(batch_index.max())}]"
        )
    return batch_index


def _sample_coordinates(
    rois: Tensor,
    offsets: Tensor | None,
    out_h: int,
    out_w: int,
    spatial_scale: float,
    sampling_ratio: int,
    gamma: float,
) -> tuple[Tensor, Tensor]:
    """Feature-map x and y of every sample point, each broadcastable to (n, out_h, out_w, s, s) (s = sampling_ratio).

    Dimension 3 indexes the sample row inside a bin, dimension 4 the sample column.
    """
    scaled = rois[:, 1:] * spatial_scale - 0.5
    start_x, start_y, end_x, end_y = scaled.unbind(dim=1)
    roi_width, roi_height = end_x - start_x, end_y - start_y
    if offsets is not None:
        start_x = start_x[:, None, None] + gamma * roi_width[:, None, None] * offsets[:, 0]
        start_y = start_y[:, None, None] + gamma * roi_height[:, None, None] * offsets[:, 1]
    else:
        start_x, start_y = start_x[:, None, None], start_y[:, None, None]
    in_bin = (torch.arange(sampling_ratio, dtype=rois.dtype, device=rois.device) + 0.5) / sampling_ratio
    bins_x = torch.arange(out_w, dtype=rois.dtype, device=rois.device)[:, None] + in_bin  # (out_w, s)
    bins_y = torch.arange(out_h, dtype=rois.dtype, device=rois.device)[:, None] + in_bin  # (out_h, s)
    x = start_x[..., None, None] + (roi_width / out_w).view(-1, 1, 1, 1, 1) * bins_x.view(1, 1, out_w, 1, -1)
    y = start_y[..., None, None] + (roi_height / out_h).view(-1, 1, 1, 1, 1) * bins_y.view(1, out_h, 1, -1, 1)
    return x, y


def _bilinear_axis(coord: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Pixel indices (..., 2) and weights (..., 2) of the two neighbours of ``coord`` along an axis of ``size``.

    Follows mmcv: outside [-1, size] both weights are 0; otherwise the coordinate is clamped to [0, size - 1].
    """
    inside = ((coord >= -1) & (coord <= size)).to(coord.dtype)
    clamped = coord.clamp(0, size - 1)
    low = clamped.detach().floor().clamp(0, max(size - 2, 0))
    high_weight = clamped - low
    low = low.long()
    index = torch.stack([low, (low + 1).clamp(max=size - 1)], dim=-1)
    weight = torch.stack([(1 - high_weight) * inside, high_weight * inside], dim=-1)
    return index, weight

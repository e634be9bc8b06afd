"""Tests for tsd_study.models.deform_roi_pool: mmcv semantics on CPU, gradients, CUDA parity and input errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from mmcv.ops import RoIAlign

from tsd_study.models.deform_roi_pool import DeformRoIPool, deform_roi_pool

GAMMA = 0.1  # the released code's offset scale
MAP_HEIGHT, MAP_WIDTH = 12, 15

# Boxes in feature-map pixels (multiply by 1 / spatial_scale for image coordinates):
# (image index, x1, y1, x2, y2).
MAP_BOXES = [
    (0, 1.3, 2.2, 8.7, 9.1),  # inside
    (1, -5.5, -3.2, 4.1, 6.3),  # negative coordinates
    (2, 10.2, 8.4, 18.9, 15.7),  # past the right and bottom edges
    (0, 20.0, 16.0, 26.0, 22.0),  # entirely outside, beyond the bottom-right corner
    (1, -12.0, -9.0, -4.0, -3.0),  # entirely outside, before the top-left corner
    (2, 5.0, 5.0, 5.2, 5.1),  # smaller than a pixel
    (1, -2.0, -2.0, 17.0, 14.0),  # larger than the map
]


def image_rois(spatial_scale: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """MAP_BOXES in image coordinates for a level of ``spatial_scale``."""
    rois = torch.tensor(MAP_BOXES, dtype=dtype)
    rois[:, 1:] /= spatial_scale
    return rois


def random_features(batch: int, channels: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(batch, channels, MAP_HEIGHT, MAP_WIDTH, dtype=dtype, generator=torch.Generator().manual_seed(0))


def random_offsets(*shape: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return scale * torch.randn(*shape, dtype=torch.float64, generator=generator)


def sample_points(
    roi: list[float],
    offset_x: float,
    offset_y: float,
    bin_row: int,
    bin_col: int,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
) -> Iterator[tuple[float, float]]:
    """(y, x) of the sample points of one bin, written as mmcv's CUDA kernel writes it."""
    start_x, start_y = roi[1] * spatial_scale - 0.5, roi[2] * spatial_scale - 0.5
    roi_width = roi[3] * spatial_scale - 0.5 - start_x
    roi_height = roi[4] * spatial_scale - 0.5 - start_y
    bin_height, bin_width = roi_height / output_size[0], roi_width / output_size[1]
    start_x += GAMMA * roi_width * offset_x
    start_y += GAMMA * roi_height * offset_y
    for iy in range(sampling_ratio):
        y = start_y + bin_row * bin_height + (iy + 0.5) * bin_height / sampling_ratio
        for ix in range(sampling_ratio):
            yield y, start_x + bin_col * bin_width + (ix + 0.5) * bin_width / sampling_ratio


def bilinear_reference(plane: list[list[float]], y: float, x: float) -> float:
    """mmcv's bilinear_interpolate on a list-of-rows plane."""
    height, width = len(plane), len(plane[0])
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * plane[y_low][x_low]
        + hy * lx * plane[y_low][x_high]
        + ly * hx * plane[y_high][x_low]
        + ly * lx * plane[y_high][x_high]
    )


def reference_pool(
    features: torch.Tensor,
    rois: torch.Tensor,
    offsets: torch.Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
) -> torch.Tensor:
    """Deformable RoI pooling as plain python loops over RoIs, channels, bins and sample points."""
    planes, roi_rows, offset_rows = features.tolist(), rois.tolist(), offsets.tolist()
    output = torch.zeros(len(roi_rows), features.shape[1], *output_size, dtype=torch.float64)
    for n, roi in enumerate(roi_rows):
        for c in range(features.shape[1]):
            plane = planes[int(roi[0])][c]
            for row in range(output_size[0]):
                for col in range(output_size[1]):
                    points = sample_points(
                        roi,
                        offset_rows[n][0][row][col],
                        offset_rows[n][1][row][col],
                        row,
                        col,
                        output_size,
                        spatial_scale,
                        sampling_ratio,
                    )
                    total = sum(bilinear_reference(plane, y, x) for y, x in points)
                    output[n, c, row, col] = total / sampling_ratio**2
    return output


def bin_points(
    rois: torch.Tensor, offsets: torch.Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int
) -> list[list[tuple[float, float]]]:
    """The (y, x) sample points of every bin, in (roi, row, col) order."""
    return [
        list(
            sample_points(
                roi, offset[0][row][col], offset[1][row][col], row, col, output_size, spatial_scale, sampling_ratio
            )
        )
        for roi, offset in zip(rois.tolist(), offsets.tolist())
        for row in range(output_size[0])
        for col in range(output_size[1])
    ]


@pytest.mark.parametrize("spatial_scale", [1.0, 0.25, 0.125])
@pytest.mark.parametrize("offset_kind", ["pointwise", "proposal-wise", "none"])
def test_zero_offsets_equal_roi_align(spatial_scale: float, offset_kind: str) -> None:
    features, rois = random_features(3, 4), image_rois(spatial_scale)
    zero_offsets = {
        "pointwise": torch.zeros(len(rois), 2, 7, 7, dtype=torch.float64),
        "proposal-wise": torch.zeros(len(rois), 2, dtype=torch.float64),
        "none": None,
    }[offset_kind]
    pooled = deform_roi_pool(features, rois, zero_offsets, 7, spatial_scale, sampling_ratio=4)
    aligned = RoIAlign(7, spatial_scale, 4, aligned=True)(features, rois)
    assert aligned.abs().sum() > 0
    torch.testing.assert_close(pooled, aligned, atol=1e-6, rtol=0)


def test_proposal_wise_offsets_equal_tiled_pointwise_offsets() -> None:
    features, rois = random_features(3, 4), image_rois(0.5)
    translation = random_offsets(len(rois), 2)
    tiled = translation[:, :, None, None].expand(-1, -1, 7, 7)
    proposal_wise = deform_roi_pool(features, rois, translation, 7, 0.5)
    pointwise = deform_roi_pool(features, rois, tiled, 7, 0.5)
    torch.testing.assert_close(proposal_wise, pointwise, atol=1e-12, rtol=0)


@pytest.mark.parametrize("spatial_scale", [1.0, 0.125])
def test_proposal_wise_pooling_equals_roi_align_of_translated_box(spatial_scale: float) -> None:
    features, rois = random_features(3, 4), image_rois(spatial_scale)
    translation = random_offsets(len(rois), 2, scale=3.0)
    size = torch.stack([rois[:, 3] - rois[:, 1], rois[:, 4] - rois[:, 2]], dim=1)
    translated = rois.clone()
    translated[:, 1:] += (GAMMA * translation * size).repeat(1, 2)
    pooled = deform_roi_pool(features, rois, translation, 7, spatial_scale, gamma=GAMMA)
    aligned = RoIAlign(7, spatial_scale, 4, aligned=True)(features, translated)
    torch.testing.assert_close(pooled, aligned, atol=1e-6, rtol=0)


def test_matches_brute_force_loops() -> None:
    output_size, spatial_scale, sampling_ratio = (3, 2), 0.5, 3
    features, rois = random_features(3, 2), image_rois(spatial_scale)
    offsets = random_offsets(len(rois), 2, *output_size, scale=2.0)
    pooled = deform_roi_pool(features, rois, offsets, output_size, spatial_scale, sampling_ratio, GAMMA)
    expected = reference_pool(features, rois, offsets, output_size, spatial_scale, sampling_ratio)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(pooled, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize(("sample_y", "sample_x"), [(MAP_HEIGHT, -1), (-1, MAP_WIDTH)])
def test_sample_exactly_on_the_outer_border_still_counts(sample_y: int, sample_x: int) -> None:
    features = random_features(1, 2)
    # One bin, one sample at the RoI centre: x1 * 1 - 0.5 + (x2 - x1) / 2 = sample_x.
    rois = torch.tensor([[0, sample_x - 0.5, sample_y - 0.5, sample_x + 1.5, sample_y + 1.5]], dtype=torch.float64)
    pooled = deform_roi_pool(features, rois, None, 1, 1.0, sampling_ratio=1)
    expected = reference_pool(features, rois, torch.zeros(1, 2, 1, 1), (1, 1), 1.0, 1)
    assert expected.abs().min() > 0
    torch.testing.assert_close(pooled, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("pointwise", [True, False], ids=["pointwise", "proposal-wise"])
def test_gradients_match_finite_differences(pointwise: bool) -> None:
    output_size, spatial_scale, sampling_ratio = (3, 2), 1.0, 2
    features = random_features(3, 2).requires_grad_()
    rois = image_rois(spatial_scale)
    offset_shape = (len(rois), 2, *output_size) if pointwise else (len(rois), 2)
    offsets = random_offsets(*offset_shape, scale=0.7).requires_grad_()
    tiled = offsets.detach() if pointwise else offsets.detach()[:, :, None, None].expand(-1, -1, *output_size)
    coordinates = [
        c
        for points in bin_points(rois, tiled, output_size, spatial_scale, sampling_ratio)
        for point in points
        for c in point
    ]
    # The op is not differentiable where a coordinate crosses an integer (pixel row/column, -1, 0, H - 1, H);
    # gradcheck's steps (1e-6 in an offset) move a coordinate by less than 1e-5.
    assert min(abs(c - round(c)) for c in coordinates) > 1e-4
    assert any(-1 < c < 0 for c in coordinates)

    def pool(features: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return deform_roi_pool(features, rois, offsets, output_size, spatial_scale, sampling_ratio, GAMMA)

    assert torch.autograd.gradcheck(pool, (features, offsets))


def test_float32_agrees_with_float64() -> None:
    features, rois = random_features(3, 4), image_rois(0.25)
    offsets = random_offsets(len(rois), 2, 7, 7)
    single = deform_roi_pool(features.float(), rois.float(), offsets.float(), 7, 0.25)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), deform_roi_pool(features, rois, offsets, 7, 0.25), atol=1e-5, rtol=1e-5)


def test_empty_rois_give_empty_output_and_zero_gradient() -> None:
    features = random_features(2, 4).requires_grad_()
    offsets = torch.zeros(0, 2, 7, 7, dtype=torch.float64, requires_grad=True)
    pooled = deform_roi_pool(features, image_rois(1.0)[:0], offsets, 7, 1.0)
    assert pooled.shape == (0, 4, 7, 7)
    pooled.sum().backward()
    assert features.grad is not None and not features.grad.any()


def test_module_matches_function() -> None:
    features, rois = random_features(3, 4), image_rois(0.125)
    offsets = random_offsets(len(rois), 2, 7, 7)
    pool = DeformRoIPool(7, 0.125, sampling_ratio=2, gamma=0.2)
    torch.testing.assert_close(
        pool(features, rois, offsets), deform_roi_pool(features, rois, offsets, 7, 0.125, 2, 0.2), atol=0, rtol=0
    )


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cpu_matches_mmcv_cuda() -> None:
    output_size, spatial_scale, sampling_ratio = (7, 7), 0.25, 4
    features = random_features(3, 8, dtype=torch.float32)
    rois = image_rois(spatial_scale, dtype=torch.float32)
    offsets = random_offsets(len(rois), 2, *output_size).float()
    grad_output = torch.randn(len(rois), 8, *output_size, generator=torch.Generator().manual_seed(2))
    results = {}
    for device in ("cpu", "cuda"):
        leaf_features = features.to(device).requires_grad_()
        leaf_offsets = offsets.to(device).requires_grad_()
        pooled = deform_roi_pool(
            leaf_features, rois.to(device), leaf_offsets, output_size, spatial_scale, sampling_ratio, GAMMA
        )
        pooled.backward(grad_output.to(device))
        results[device] = [t.cpu() for t in (pooled, leaf_features.grad, leaf_offsets.grad)]
    (cpu_out, cpu_feature_grad, cpu_offset_grad), (cuda_out, cuda_feature_grad, cuda_offset_grad) = (
        results["cpu"],
        results["cuda"],
    )
    torch.testing.assert_close(cpu_out, cuda_out, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cpu_feature_grad, cuda_feature_grad, atol=1e-4, rtol=1e-4)
    # mmcv's offset gradient uses the unclamped coordinate in the border bands: compare interior bins only.
    interior = torch.tensor(
        [
            all(0 < y < MAP_HEIGHT - 1 and 0 < x < MAP_WIDTH - 1 for y, x in points)
            for points in bin_points(rois.double(), offsets.double(), output_size, spatial_scale, sampling_ratio)
        ]
    ).view(len(rois), *output_size)
    assert interior.any()
    torch.testing.assert_close(
        cpu_offset_grad.permute(0, 2, 3, 1)[interior],
        cuda_offset_grad.permute(0, 2, 3, 1)[interior],
        atol=1e-4,
        rtol=1e-4,
    )
    proposal_wise = offsets[:, :, 0, 0]
    torch.testing.assert_close(
        deform_roi_pool(features, rois, proposal_wise, output_size, spatial_scale),
        deform_roi_pool(features.cuda(), rois.cuda(), proposal_wise.cuda(), output_size, spatial_scale).cpu(),
        atol=1e-4,
        rtol=1e-4,
    )


@pytest.mark.parametrize(
    ("offset_shape", "message"),
    [
        ((7, 2, 7, 6), "offsets must have shape"),
        ((7, 2, 1), "offsets must have shape"),
        ((6, 2), "offsets must have shape"),
    ],
)
def test_wrong_offset_shape_is_rejected(offset_shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deform_roi_pool(random_features(3, 4), image_rois(1.0), torch.zeros(offset_shape, dtype=torch.float64), 7, 1.0)


@pytest.mark.parametrize("sampling_ratio", [0, -1])
def test_non_positive_sampling_ratio_is_rejected(sampling_ratio: int) -> None:
    with pytest.raises(ValueError, match="sampling_ratio must be > 0"):
        deform_roi_pool(random_features(3, 4), image_rois(1.0), None, 7, 1.0, sampling_ratio=sampling_ratio)
    with pytest.raises(ValueError, match="sampling_ratio must be > 0"):
        DeformRoIPool(7, 1.0, sampling_ratio=sampling_ratio)


@pytest.mark.parametrize("roi_shape", [(7, 4), (7, 6), (5,)])
def test_rois_not_n_by_5_are_rejected(roi_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"rois must have shape \(n, 5\)"):
        deform_roi_pool(random_features(3, 4), torch.zeros(roi_shape, dtype=torch.float64), None, 7, 1.0)


def test_roi_image_index_outside_the_batch_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"image indices in \[0, 2\)"):
        deform_roi_pool(random_features(2, 4), image_rois(1.0), None, 7, 1.0)


def test_offsets_of_another_dtype_are_rejected() -> None:
    rois = image_rois(1.0)
    with pytest.raises(ValueError, match="must match the features' dtype"):
        deform_roi_pool(random_features(3, 4), rois, torch.zeros(len(rois), 2, dtype=torch.float32), 7, 1.0)

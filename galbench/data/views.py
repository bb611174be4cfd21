"""Views of galaxy images for self-supervised learning: changes a telescope could make, never new colours.

Two views of one galaxy must differ in what does not matter for its morphology and agree on what does.
For galaxies the things that do not matter are orientation (the sky has no up), the exact centring and
apparent size of the cutout, the seeing (a Gaussian PSF), the sky noise and a small calibration error per
band. Colour does matter (it tells old red populations from young blue ones), so there is no hue jitter, no
saturation change and no grayscale: every operation here acts on each band on its own, and an image with
signal in one band keeps exactly zero in the others (noise aside). Shapes are not stretched either: the
crops are square, so an elliptical never looks like a disc.

Everything runs batched on the images' device, with one draw per sample from a `torch.Generator`, so the
same generator state gives the same views. uint8 images come back as uint8 (rounded), float images as
float; the full scale is 255 for uint8 and 1.0 for float images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from galbench.data.tensors import augment


@dataclass(frozen=True)
class ViewParams:
    """How two views of a galaxy may differ (the suite's `[[pretrained]] views` table, same defaults)."""

    flips: bool = True  # mirror images (a galaxy and its mirror image are the same kind of galaxy)
    rot90: bool = True  # quarter turns; with flips all eight symmetries of the square
    shift: int = 4  # whole-pixel shifts up to this many pixels, edges replicated
    # side of a square crop as a fraction of the image, resized back (area 1/4 to 1: narrower than SimCLR's
    # 0.08 to 1; on the GZ1 sample [0.5, 1] gave better probes than [0.8, 1] or [0.35, 1])
    zoom: tuple[float, float] = (0.5, 1.0)
    blur_sigma: tuple[float, float] = (0.1, 1.5)  # Gaussian PSF sigma in pixels, the same for every band
    noise: float = 0.02  # sky-like Gaussian noise: sigma up to this fraction of the full scale
    band_scale: float = 0.1  # each band's brightness times a factor in [1 - band_scale, 1 + band_scale]


def _uniform(generator: torch.Generator, shape: tuple, low: float, high: float, device) -> torch.Tensor:
    draw = torch.rand(shape, generator=generator, device=generator.device).to(device)
    return low + (high - low) * draw


def zoom_matrices(side: torch.Tensor, centre: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resampling along one axis, as (B, size, size) matrices: a crop of `side` (fraction of the axis)
    centred at `centre` (in [-1, 1] coordinates), resized to the full axis; edges clamp, as grid_sample's
    border padding with align_corners=False."""
    device = side.device
    output = (2 * torch.arange(size, device=device, dtype=torch.float32) + 1) / size - 1
    source = ((side[:, None] * output[None, :] + centre[:, None] + 1) * size - 1) / 2
    source = source.clamp(0, size - 1)
    low = source.floor()
    weight = source - low
    low = low.long()
    high = (low + 1).clamp(max=size - 1)
    matrix = torch.zeros(side.shape[0], size, size, device=device)
    matrix.scatter_add_(2, low[..., None], (1 - weight)[..., None])
    matrix.scatter_add_(2, high[..., None], weight[..., None])
    return matrix


def blur_matrices(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """A Gaussian blur along one axis, as (B, size, size) matrices (sigma in pixels; edges replicated)."""
    device = sigma.device
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-offsets[None, :] ** 2 / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # (B, K)
    rows = torch.arange(size, device=device)
    columns = (rows[:, None] + offsets.long()[None, :]).clamp(0, size - 1)  # (size, K)
    matrix = torch.zeros(sigma.shape[0], size, size, device=device)
    matrix.scatter_add_(2, columns.expand(sigma.shape[0], -1, -1),
                        kernel[:, None, :].expand(-1, size, -1).contiguous())
    return matrix


def resample(images: torch.Tensor, along_rows: torch.Tensor, along_columns: torch.Tensor) -> torch.Tensor:
    """Apply one linear map per image along each axis (B, H, H) and (B, W, W): the same for every band."""
    batch, channels, height, width = images.shape
    # two batched products with the bands side by side: faster than broadcasting over the bands
    rows = torch.bmm(along_rows, images.transpose(1, 2).reshape(batch, height, channels * width))
    rows = rows.reshape(batch, height, channels, width).transpose(1, 2).reshape(batch, channels * height, width)
    return torch.bmm(rows, along_columns.transpose(1, 2)).reshape(batch, channels, height, width)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur every image with its own Gaussian (sigma in pixels, one per image), each band separately."""
    height, width = images.shape[-2:]
    return resample(images, blur_matrices(sigma, height), blur_matrices(sigma, width))


def make_view(images: torch.Tensor, generator: torch.Generator, params: ViewParams = ViewParams()) -> torch.Tensor:
    """One random view of every image in a batch (N, 3, H, W); same dtype, shape and device as the input."""
    integer = images.dtype == torch.uint8
    full_scale = 255.0 if integer else 1.0
    batch, channels = images.shape[:2]
    # whole-pixel moves first, exactly (a gather); the operations after them interpolate
    views = augment(images, generator, params.flips, params.rot90, params.shift).float()
    height, width = images.shape[-2:]
    # zoom and blur are separable linear maps: one matrix per image and axis, composed, applied at once
    along_rows = along_columns = None
    if tuple(params.zoom) != (1.0, 1.0):
        side = _uniform(generator, (batch,), *params.zoom, images.device)
        # the crop's centre may move as far as keeps the crop inside the image
        centre = _uniform(generator, (batch, 2), -1.0, 1.0, images.device) * (1 - side)[:, None]
        along_rows, along_columns = zoom_matrices(side, centre[:, 1], height), zoom_matrices(side, centre[:, 0], width)
    if params.blur_sigma[1] > 0:
        sigma = _uniform(generator, (batch,), *params.blur_sigma, images.device)
        blur_rows, blur_columns = blur_matrices(sigma, height), blur_matrices(sigma, width)
        along_rows = blur_rows if along_rows is None else blur_rows @ along_rows
        along_columns = blur_columns if along_columns is None else blur_columns @ along_columns
    if along_rows is not None:
        views = resample(views, along_rows, along_columns)
    if params.band_scale > 0:
        scale = _uniform(generator, (batch, channels, 1, 1), 1 - params.band_scale, 1 + params.band_scale,
                         images.device)
        views = views * scale
    if params.noise > 0:
        sigma = _uniform(generator, (batch, 1, 1, 1), 0.0, params.noise * full_scale, images.device)
        noise = torch.randn(views.shape, generator=generator, device=generator.device).to(images.device)
        views = views + sigma * noise
    if integer:
        return views.round_().clamp_(0, 255).to(torch.uint8)
    return views.to(images.dtype)

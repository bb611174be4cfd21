"""Views for self-supervised learning: shapes and dtypes kept, seeded, and no operation mixes the bands."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from galbench.data.views import ViewParams, gaussian_blur, make_view

ALL_ON = ViewParams(flips=True, rot90=True, shift=3, zoom=(0.7, 0.95), blur_sigma=(0.5, 2.0), noise=0.0,
                    band_scale=0.2)


def _images(dtype=torch.uint8, n=6, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=generator, dtype=torch.uint8)
    return images if dtype == torch.uint8 else images.to(dtype) / 255


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_views_keep_shape_dtype_and_device(dtype):
    images = _images(dtype)
    view = make_view(images, torch.Generator().manual_seed(0), ViewParams())
    assert view.shape == images.shape and view.dtype == images.dtype and view.device == images.device
    assert not torch.equal(view, images)
    if dtype == torch.float32:  # float images stay on their own scale (full scale 1.0, not 255)
        assert view.abs().max() < 2


def test_views_are_seeded():
    images = _images()
    first = make_view(images, torch.Generator().manual_seed(5))
    again = make_view(images, torch.Generator().manual_seed(5))
    other = make_view(images, torch.Generator().manual_seed(6))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # two views drawn one after the other from one generator differ (the two views of SSL)
    generator = torch.Generator().manual_seed(5)
    assert not torch.equal(make_view(images, generator), make_view(images, generator))


def test_signal_in_one_band_keeps_the_other_bands_at_zero():
    images = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    images[:, 1, 8:24, 10:20] = 200
    for seed in range(5):
        view = make_view(images, torch.Generator().manual_seed(seed), ALL_ON)
        assert view[:, 0].eq(0).all() and view[:, 2].eq(0).all()
        assert view[:, 1].sum() > 0


def test_each_band_of_a_view_depends_on_that_band_only():
    images = _images(torch.float32)
    changed = images.clone()
    changed[:, 0] = torch.rand(changed[:, 0].shape, generator=torch.Generator().manual_seed(9))
    changed[:, 2] = 0
    params = dataclasses.replace(ALL_ON, noise=0.05)  # noise too: same generator state, same noise draws
    a = make_view(images, torch.Generator().manual_seed(1), params)
    b = make_view(changed, torch.Generator().manual_seed(1), params)
    torch.testing.assert_close(a[:, 1], b[:, 1], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 0], b[:, 0])


def test_without_interpolating_steps_a_view_is_one_of_the_eight_symmetries():
    images = _images(n=16)
    params = ViewParams(flips=True, rot90=True, shift=0, zoom=(1.0, 1.0), blur_sigma=(0.0, 0.0), noise=0.0,
                        band_scale=0.0)
    view = make_view(images, torch.Generator().manual_seed(3), params)
    seen = set()
    for original, turned in zip(images, view, strict=True):
        candidates = [torch.rot90(flipped, k, dims=(1, 2)) for flipped in (original, original.flip(2))
                      for k in range(4)]
        matches = [k for k, candidate in enumerate(candidates) if torch.equal(candidate, turned)]
        assert matches
        seen.add(matches[0])
    assert len(seen) > 3  # the draws reach many of the eight


def test_zoom_magnifies_the_centre_of_a_centred_source():
    images = torch.zeros(64, 3, 33, 33)
    images[:, :, 14:19, 14:19] = 1.0  # a 5x5 source in the middle
    params = ViewParams(flips=False, rot90=False, shift=0, zoom=(0.5, 0.5), blur_sigma=(0.0, 0.0), noise=0.0,
                        band_scale=0.0)
    view = make_view(images, torch.Generator().manual_seed(0), params)
    # a crop of half the side shows the source at twice the size: four times the total flux where the crop
    # holds all of it, less where the crop's edge cuts it, never more
    flux = view.sum((1, 2, 3)) / images.sum((1, 2, 3))
    assert torch.all(flux <= 4.0 + 1e-4)
    assert (flux > 4.0 - 1e-4).sum() >= 10
    # every crop lies inside the image: a gradient keeps its range
    ramp = torch.linspace(0, 1, 33).expand(8, 3, 33, 33).contiguous()
    zoomed = make_view(ramp, torch.Generator().manual_seed(1), params)
    assert zoomed.min() >= 0 and zoomed.max() <= 1 and (zoomed[..., -1] - zoomed[..., 0]).min() > 0.4


def test_gaussian_blur_matches_a_direct_convolution():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 20, 20)
    sigma = torch.tensor([0.7, 1.6])
    blurred = gaussian_blur(images, sigma)
    for index in range(2):
        radius = max(1, int(torch.ceil(3 * sigma.max())))
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-offsets**2 / (2 * sigma[index] ** 2))
        kernel2d = torch.outer(kernel, kernel) / kernel.sum() ** 2
        padded = torch.nn.functional.pad(images[index:index + 1], (radius,) * 4, mode="replicate")
        for band in range(3):
            expected = torch.nn.functional.conv2d(padded[:, band:band + 1], kernel2d[None, None])[0, 0]
            torch.testing.assert_close(blurred[index, band], expected, rtol=1e-5, atol=1e-5)
    # flux is conserved away from the edges and a constant image stays constant
    constant = torch.full((1, 3, 16, 16), 0.4)
    torch.testing.assert_close(gaussian_blur(constant, torch.tensor([1.2])), constant)


def test_noise_has_the_asked_for_scale():
    images = torch.full((400, 3, 16, 16), 128, dtype=torch.uint8)
    params = ViewParams(flips=False, rot90=False, shift=0, zoom=(1.0, 1.0), blur_sigma=(0.0, 0.0), noise=0.04,
                        band_scale=0.0)
    view = make_view(images, torch.Generator().manual_seed(0), params).float() - 128
    # per image sigma ~ U(0, 0.04 * 255): the mean of sigma^2 is (0.04 * 255)^2 / 3
    assert view.pow(2).mean().item() == pytest.approx((0.04 * 255) ** 2 / 3, rel=0.1)
    assert view.mean().abs() < 0.1


def test_the_suites_views_table_has_the_same_defaults():
    from galbench.experiment.suite import ViewsSection

    assert ViewParams(**ViewsSection().model_dump()) == ViewParams()

"""Science images to 8-bit colour: one stretch, chosen by name, applied alike at import and at classify.

A stretch spec is a string (`--stretch`), parsed into a JSON-able dict that travels in a model's metadata:

- `minmax` (the default): linear from the image's lowest to its highest pixel, all bands together;
- `percentile[:P]`: linear over the central P per cent of the pixel values (default 99.5), all bands
  together, clipped outside (astropy.visualization.PercentileInterval);
- `lupton[:q=Q,stretch=S,minimum=M]`: the Lupton et al. (2004) asinh colour mapping of SDSS
  (astropy.visualization.make_lupton_rgb; defaults Q=8, stretch=0.5, minimum=0), bands in the file's
  order mapped to R, G, B.

`format_stretch` writes a parsed spec back as its canonical string (every parameter given), the form a
catalog's `STRETCH` header holds.

Non-finite pixels (NaN, inf: masked or missing data) are filled with the median of the finite pixels of
their band before stretching, and counted; an image with a band that has no finite pixel is unusable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULTS = {"minmax": {}, "percentile": {"percent": 99.5}, "lupton": {"q": 8.0, "stretch": 0.5, "minimum": 0.0}}


def parse_stretch(spec: str | None) -> dict:
    """A stretch spec string (None for the default) as a dict: {"kind": ..., parameters...}."""
    from galbench.errors import GalbenchError

    text = (spec or "minmax").strip()
    kind, _, arguments = text.partition(":")
    if kind not in DEFAULTS:
        raise GalbenchError(f"unknown stretch {kind!r}", where="--stretch", fix=f"one of {', '.join(DEFAULTS)}")
    result = {"kind": kind, **DEFAULTS[kind]}
    for item in filter(None, (part.strip() for part in arguments.split(","))):
        key, sep, value = item.partition("=")
        if not sep and kind == "percentile":
            key, value = "percent", key
        if key not in DEFAULTS[kind]:
            raise GalbenchError(f"stretch {kind} has no parameter {key!r}", where="--stretch",
                                fix=f"parameters: {', '.join(DEFAULTS[kind]) or 'none'}")
        try:
            result[key] = float(value)
        except ValueError:
            raise GalbenchError(f"stretch parameter {key}={value!r} is not a number", where="--stretch") from None
    if kind == "percentile" and not 0 < result["percent"] <= 100:
        raise GalbenchError("the percentile stretch keeps between 0 and 100 per cent", where="--stretch")
    return result


def format_stretch(stretch: dict) -> str:
    """The canonical spec string of a parsed stretch: `parse_stretch(format_stretch(s)) == s`."""
    kind = stretch["kind"]
    if kind == "percentile":
        return f"percentile:{_number(stretch['percent'])}"
    parameters = ",".join(f"{key}={_number(stretch[key])}" for key in DEFAULTS[kind])
    return f"{kind}:{parameters}" if parameters else kind


def _number(value: float) -> str:
    """The shortest text that reads back as the same float, without a trailing '.0'."""
    return repr(float(value)).removesuffix(".0")


def fill_non_finite(bands: np.ndarray) -> tuple[np.ndarray, int]:
    """Float (3, H, W) bands with non-finite pixels set to their band's finite median; and how many there were."""
    bands = np.array(bands, dtype=np.float64)
    bad = ~np.isfinite(bands)
    count = int(bad.sum())
    for band, mask in zip(bands, bad, strict=True):
        if mask.all():
            raise ValueError("a band of the FITS image has no finite pixel")
        if mask.any():
            band[mask] = np.median(band[~mask])
    return bands, count


def stretch_bands(bands: np.ndarray, stretch: dict) -> np.ndarray:
    """Finite float (3, H, W) bands to uint8 (H, W, 3) with a parsed stretch."""
    kind = stretch["kind"]
    if kind == "lupton":
        from astropy.visualization import make_lupton_rgb

        return make_lupton_rgb(bands[0], bands[1], bands[2], minimum=stretch["minimum"], stretch=stretch["stretch"],
                               Q=stretch["q"])
    if kind == "percentile":
        from astropy.visualization import PercentileInterval

        low, high = PercentileInterval(stretch["percent"]).get_limits(bands)
    else:
        low, high = float(bands.min()), float(bands.max())
    scaled = np.clip((bands - low) / (high - low or 1.0), 0.0, 1.0)
    return (scaled * 255).round().astype(np.uint8).transpose(1, 2, 0)


def load_fits_image(path: Path, stretch: dict | None = None) -> tuple[np.ndarray, int]:
    """The first image HDU of a FITS file as uint8 (H, W, 3), and the count of filled non-finite pixels.

    Shapes (H, W) (one band, repeated), (3, H, W) and (H, W, 3) are accepted; uint8 data pass unstretched.
    Raises ValueError where the file holds no usable image.
    """
    from astropy.io import fits

    with fits.open(path) as hdul:
        data = next((np.asarray(hdu.data) for hdu in hdul if hdu.data is not None and hdu.is_image), None)
    if data is None:
        raise ValueError("FITS file holds no image")
    if data.ndim == 3 and data.shape[-1] == 3 and data.shape[0] != 3:
        data = data.transpose(2, 0, 1)
    if data.ndim == 2:
        data = np.repeat(data[None], 3, axis=0)
    if data.ndim != 3 or data.shape[0] != 3:
        raise ValueError(f"FITS image has shape {data.shape}, expected (H, W), (3, H, W) or (H, W, 3)")
    if data.dtype == np.uint8:
        return np.ascontiguousarray(data.transpose(1, 2, 0)), 0
    bands, filled = fill_non_finite(data)
    return stretch_bands(bands, stretch or parse_stretch(None)), filled

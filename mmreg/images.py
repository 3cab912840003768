"""The one image loader: files and in-memory images as a viewer shows them, in 8-bit RGB.

Datasets open files with ``open_image`` (EXIF orientation applied, first frame
of an animation); the core turns every sample's image into RGB with ``to_rgb``
(bit depth scaled, transparency composited onto ``data.background``) before
augmentation and preprocessing, so every dataset, built-in or third-party,
feeds the model the same pixels a viewer shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageColor, ImageOps

from .errors import ConfigError, DataError

RGB = tuple[int, int, int]
WHITE: RGB = (255, 255, 255)

# 16-bit unsigned integer modes: a value v is shown as v / 257 (65535 -> 255), as viewers do.
SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Modes with an alpha channel (premultiplied ones included); PIL unpremultiplies when converting to RGBA.
ALPHA = frozenset({"RGBA", "LA", "PA", "RGBa"})
# Modes PIL converts to RGB itself, with nothing to composite.
DIRECT = frozenset({"RGB", "L", "1", "P", "CMYK", "YCbCr", "RGBX", "HSV"})
REFUSED = {
    "I": "32-bit integer: its range is not known",
    "F": "32-bit float: its range is not known",
    "LAB": "CIE L*a*b*: needs a colour profile to show as RGB",
}


def parse_colour(text: str) -> RGB:
    """A colour name or hex code ("white", "#808080") as (r, g, b) in 0-255; ConfigError if unknown.

    Parsed by ``PIL.ImageColor.getrgb`` (CSS3 names, #rgb, #rrggbb, rgb(...)).
    """
    try:
        r, g, b, *_ = ImageColor.getrgb(text)
    except ValueError:
        raise ConfigError(f"unknown colour '{text}'; give a name such as white or a hex code such as #808080") from None
    return (r, g, b)


def open_image(source: str | Path | IO[bytes]) -> Image.Image:
    """Read an image file as a viewer shows it, still in its own mode (``to_rgb`` makes it RGB).

    Decodes the whole first frame (so a truncated file fails here, not mid-run),
    then applies the EXIF orientation (``PIL.ImageOps.exif_transpose``, tags 1-8);
    ``format`` ("PNG", "JPEG") stays that of the file.
    Raises what PIL raises for unreadable files (OSError, SyntaxError, ValueError).
    """
    with Image.open(source) as image:
        image.seek(0)  # the first frame of an animated GIF, PNG or WebP
        image.load()
        oriented = ImageOps.exif_transpose(image)  # a loaded copy: the file can close
        oriented.format = image.format  # kept for `mmreg data inspect`'s summary of formats
        return oriented


def to_rgb(image: Image.Image, background: RGB = WHITE) -> Image.Image:
    """``image`` in 8-bit RGB, the same size.

    16-bit integer modes (``I;16*``) are scaled from their type's full range
    (v -> v / 257, rounded); RGBA, LA, PA, palette images with a transparent
    index and images with a ``transparency`` entry are composited (alpha
    blending, ``Image.alpha_composite``) onto ``background``; CMYK, grayscale,
    palette and other modes are converted by PIL. Raises DataError naming the
    mode for modes with no fixed range (``I``, ``F``) or no RGB conversion.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in SIXTEEN_BIT:
        values = np.asarray(image).astype(np.float64)
        gray = Image.fromarray(np.rint(values / 257).astype(np.uint8), "L")
        if "transparency" not in image.info:
            return gray.convert("RGB")
        alpha = np.where(np.asarray(image) == image.info["transparency"], 0, 255).astype(np.uint8)
        gray.putalpha(Image.fromarray(alpha, "L"))
        return _composite(gray.convert("RGBA"), background)
    if mode in REFUSED:
        raise DataError(f"image mode '{mode}' ({REFUSED[mode]}) cannot be shown as RGB; save the image as 8- or 16-bit")
    if mode in ALPHA or "transparency" in image.info:
        return _composite(image.convert("RGBA"), background)
    if mode in DIRECT:
        return image.convert("RGB")
    raise DataError(f"image mode '{mode}' cannot be shown as RGB; save the image as 8- or 16-bit RGB or grayscale")


def load_image(source: str | Path | IO[bytes], background: RGB = WHITE) -> Image.Image:
    """``open_image`` then ``to_rgb``: a file as the model receives it before augmentation."""
    return to_rgb(open_image(source), background)


def read_image_files(paths: Sequence[str | Path]) -> list[Image.Image]:
    """Image files given on the command line, in RGB as a viewer shows them; a DataError naming
    the first that cannot be read."""
    loaded = []
    for path in paths:
        try:
            loaded.append(to_rgb(open_image(path)))
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"image {path} cannot be read ({type(exc).__name__}: {exc}); give an image file") from None
    return loaded


def _composite(rgba: Image.Image, background: RGB) -> Image.Image:
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (*background, 255)), rgba).convert("RGB")


__all__ = ["WHITE", "load_image", "open_image", "parse_colour", "to_rgb"]

"""Checks that a saved figure is a valid PNG of the figure drawn, not merely a non-empty file.

Imported by the figure tests (``from figure_checks import ...``); pytest puts ``tests/`` on the
path as the folder of ``conftest.py``.
"""

import struct
from pathlib import Path

import numpy as np
from matplotlib.image import imread

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """``(width, height)`` in pixels from the PNG header (signature, then the IHDR chunk)."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path}: not a PNG (signature {head[:8]!r})"
    length, chunk = struct.unpack(">I4s", head[8:16])
    assert chunk == b"IHDR" and length == 13, f"{path}: first chunk is {chunk!r}, not IHDR"
    return struct.unpack(">II", head[16:24])


def assert_png(path, fig=None, min_colours: int = 50) -> tuple[int, int]:
    """``path`` is a PNG that decodes to the size its header states and is not a blank canvas
    (at least ``min_colours`` distinct colours). With ``fig``: the image is that figure saved
    with ``bbox_inches="tight"``, i.e. its size is the figure's tight box (padded by 0.1 inch)
    at one resolution in both directions. Returns ``(width, height)``."""
    width, height = png_size(path)
    pixels = imread(path)
    assert pixels.shape[:2] == (height, width), f"{path}: decodes to {pixels.shape[:2]}, header says {(height, width)}"
    rgba = np.round(pixels * 255).astype(np.uint8) if pixels.dtype != np.uint8 else pixels
    rgba = np.ascontiguousarray(np.pad(rgba, ((0, 0), (0, 0), (0, 4 - rgba.shape[-1]))))  # RGB -> RGBA
    colours = len(np.unique(rgba.view(np.uint32)))  # one integer per pixel
    assert colours >= min_colours, f"{path}: only {colours} distinct colours: nothing drawn"
    if fig is not None:
        box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.1)
        dpi = width / box.width
        assert 50 <= dpi <= 600, f"{path}: {width} px for a {box.width:.2f} in wide figure"
        assert abs(height - box.height * dpi) <= 2, f"{path}: {width}x{height} px is not the figure's {box.width:.2f}x{box.height:.2f} in"
    return width, height

"""The size of a scene's window and pictures, in pixels: one check for every output."""
from __future__ import annotations

from ..errors import Viz3dError

DEFAULT_SIZE = (1024, 768)
MIN_SIDE, MAX_SIDE = 16, 16384


def check_size(size) -> tuple[int, int]:
    """``size`` as ``(width, height)`` ints, each from 16 to 16384 pixels, or `Viz3dError` saying why.

    >>> check_size((640.0, 480))
    (640, 480)
    >>> check_size((8, 8))
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: image size must be between 16 and 16384 pixels per side, got 8x8
    """
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise Viz3dError(f"image size must be (width, height) in pixels, got {size!r}") from None
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise Viz3dError(f"image size must be between {MIN_SIDE} and {MAX_SIDE} pixels per side, got {width}x{height}")
    return width, height

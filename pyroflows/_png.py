"""A small PNG writer (zlib and struct only) and the image grids of ``pyroflows sample --png``.

PNG: the 8-byte signature, then chunks ``length, type, data, CRC-32``: ``IHDR`` (width,
height, bit depth 8, colour type 0 grey or 2 RGB), one ``IDAT`` holding the zlib-compressed
scanlines (each prefixed by filter type 0), and ``IEND`` (W3C, "Portable Network Graphics
Specification", 2003).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__: list[str] = []

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _png_bytes(pixels: np.ndarray) -> bytes:
    """The PNG file of ``pixels``: ``uint8`` of shape ``(H, W)`` (grey) or ``(H, W, 3)`` (RGB)."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"PNG pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        colour = 0
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        colour = 2
    else:
        raise ValueError(f"PNG pixels must have shape (H, W) or (H, W, 3), got {pixels.shape}")
    height, width = pixels.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"a PNG needs at least one pixel, got shape {pixels.shape}")
    rows = np.ascontiguousarray(pixels).reshape(height, -1)
    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 9))
        + _chunk(b"IEND", b"")
    )


def _write_png(path: str | os.PathLike, pixels: np.ndarray) -> Path:
    """Write ``pixels`` (see :func:`_png_bytes`) to ``path``; return the path."""
    path = Path(path)
    path.write_bytes(_png_bytes(pixels))
    return path


def _to_pixels(images: np.ndarray, levels: int | None) -> np.ndarray:
    r"""Samples in ``[0, 1)`` (any real values) as ``uint8`` grey values in ``[0, 255]``.

    With ``levels`` :math:`L` each value goes to its level :math:`\lfloor L x \rfloor`,
    clipped to :math:`[0, L - 1]`, scaled to :math:`255 k / (L - 1)`; without, to
    :math:`255 x`, clipped; NaN becomes 0.
    """
    values = np.nan_to_num(np.asarray(images, dtype=np.float64), nan=0.0)
    if levels is not None and levels > 1:
        k = np.clip(np.floor(values * levels), 0, levels - 1)
        return np.round(k * 255.0 / (levels - 1)).astype(np.uint8)
    return np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def _image_grid(pixels: np.ndarray, columns: int | None = None, gap: int = 1) -> np.ndarray:
    r"""Images ``(N, C, H, W)`` (``uint8``, C = 1 or 3) tiled ``rows x columns`` with a gap.

    ``columns`` defaults to :math:`\lceil \sqrt N \rceil`; the rows are as many as needed;
    empty cells and the gaps are black. Returns ``(rows (H + gap) - gap, ...)`` pixels of
    shape ``(h, w)`` (grey) or ``(h, w, 3)`` (RGB).
    """
    if pixels.ndim != 4 or pixels.shape[1] not in (1, 3):
        raise ValueError(
            "an image grid needs images of shape (N, C, H, W) with C = 1 (grey) or 3 (RGB), "
            f"got shape {pixels.shape}"
        )
    count, channels, height, width = pixels.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.zeros(
        (channels, rows * (height + gap) - gap, columns * (width + gap) - gap), np.uint8
    )
    for index in range(count):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        grid[:, top : top + height, left : left + width] = pixels[index]
    return grid[0] if channels == 1 else grid.transpose(1, 2, 0)

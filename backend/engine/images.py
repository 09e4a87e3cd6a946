"""Small image helpers: contact sheets and PNG writing (PIL), no torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def contact_sheet(images: list[np.ndarray], columns: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile equally sized (H, W, C) uint8 images into one grid on a white background."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    h, w, c = images[0].shape
    columns = columns or len(images)
    rows = -(-len(images) // columns)
    sheet = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for k, img in enumerate(images):
        r, col = divmod(k, columns)
        sheet[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = img
    return sheet


def save_png(image: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(image).save(tmp)
    tmp.replace(path)
    return path

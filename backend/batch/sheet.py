"""The batch's contact sheet: one captioned tile per finished prompt (PIL only)."""

from __future__ import annotations

import math
from pathlib import Path


def contact_sheet(tiles: list[tuple[str, Path | None]], path: Path, size: int = 160) -> Path:
    """A grid of one image per prompt (its views or last preview; grey when none), captioned by file name."""
    from PIL import Image, ImageDraw

    cols = max(1, math.ceil(math.sqrt(len(tiles))))
    rows = max(1, math.ceil(len(tiles) / cols))
    caption = 14
    sheet = Image.new("RGB", (cols * size, rows * (size + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (label, image_path) in enumerate(tiles):
        x, y = (i % cols) * size, (i // cols) * (size + caption)
        tile = Image.new("RGB", (size, size), (128, 128, 128))
        if image_path is not None and image_path.exists():
            with Image.open(image_path) as img:
                img = img.convert("RGBA")
                img.thumbnail((size, size))
                tile.paste(img, ((size - img.width) // 2, (size - img.height) // 2), img)
        sheet.paste(tile, (x, y))
        draw.text((x + 2, y + size + 1), label[: size // 6], fill=(0, 0, 0))
    sheet.save(path)
    return path


def tile_image(asset: Path) -> Path | None:
    """The picture of one asset: its ``<stem>_views.png``, else the last preview the batch kept, else None."""
    views = asset.with_name(f"{asset.stem}_views.png")
    preview = asset.parent / "previews" / f"{asset.stem}.png"
    return views if views.exists() else preview if preview.exists() else None


def write_contact_sheet(assets: list[Path], out_dir: Path) -> Path | None:
    """``contact_sheet.png`` in ``out_dir`` of the assets that exist; None when none does."""
    tiles = [(a.stem, tile_image(a)) for a in assets if a.exists()]
    return contact_sheet(tiles, out_dir / "contact_sheet.png") if tiles else None

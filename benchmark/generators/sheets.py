"""Labelled picture sheets of a generator's output that a person can read: real rare-class images beside synthetic
ones, and the synthetic images closest to a training image (each above that image), upscaled by nearest neighbour.

Written by the audit (:func:`benchmark.generators.audit.audit`) into the generator's run folder as SAMPLE_SHEET_PNG
and CLOSEST_SHEET_PNG; the collector copies one of each per generator into its output (``samples/``) and the report
shows them.
"""

from pathlib import Path

import numpy as np

SAMPLE_SHEET_PNG = "sample_sheet.png"
CLOSEST_SHEET_PNG = "closest_pairs_sheet.png"
SCALE = 4          # pixels per image pixel (a 28-px image becomes 112 px)
COLUMNS = 8        # images per row; the synthetic panel is COLUMNS × COLUMNS
GAP = 4            # pixels between tiles
MARGIN = 10        # pixels around a panel
BACKGROUND = 255
TEXT = 0
_FONT_SIZE = 15


def _font(size: int = _FONT_SIZE):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # FreeType build of Pillow ≥ 10.1
    except (TypeError, OSError):
        return ImageFont.load_default()


def _as_display(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 → (N, H, W) grey or (N, H, W, 3) RGB for display (other channel counts: the first)."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {images.shape}")
    if images.shape[1] == 3:
        return images.transpose(0, 2, 3, 1)
    return images[:, 0]


def _tile_panel(images: np.ndarray, columns: int, scale: int, rows: int | None = None,
                captions: list[str] | None = None):
    """One panel (PIL image, mode L or RGB): `images` upscaled `scale`× in a grid of `columns`, each optionally with
    a caption line under it."""
    from PIL import Image, ImageDraw

    shown = _as_display(images)
    mode = "RGB" if shown.ndim == 4 else "L"
    fill = (BACKGROUND,) * 3 if mode == "RGB" else BACKGROUND
    h, w = shown.shape[1] * scale, shown.shape[2] * scale
    caption_h = _FONT_SIZE + 4 if captions else 0
    rows = rows or max(1, -(-len(shown) // columns))
    panel = Image.new(mode, (columns * (w + GAP) - GAP, rows * (h + caption_h + GAP) - GAP), fill)
    draw, font = ImageDraw.Draw(panel), _font(_FONT_SIZE - 3)
    for i, image in enumerate(shown[:rows * columns]):
        x, y = (i % columns) * (w + GAP), (i // columns) * (h + caption_h + GAP)
        tile = Image.fromarray(image, mode).resize((w, h), Image.NEAREST)
        panel.paste(tile, (x, y))
        if captions:
            draw.text((x + 2, y + h + 1), captions[i], fill=(TEXT,) * 3 if mode == "RGB" else TEXT, font=font)
    return panel


def _titled(panels: list, titles: list[str], heading: str):
    """Panels side by side, each under its title, all under `heading`."""
    from PIL import Image, ImageDraw

    mode = "RGB" if any(p.mode == "RGB" for p in panels) else "L"
    panels = [p.convert(mode) for p in panels]
    fill = (BACKGROUND,) * 3 if mode == "RGB" else BACKGROUND
    ink = (TEXT,) * 3 if mode == "RGB" else TEXT
    line = _FONT_SIZE + 8
    width = sum(p.width for p in panels) + MARGIN * (len(panels) + 1)
    height = max(p.height for p in panels) + 2 * line + 2 * MARGIN
    sheet = Image.new(mode, (width, height), fill)
    draw, font = ImageDraw.Draw(sheet), _font()
    draw.text((MARGIN, MARGIN // 2), heading, fill=ink, font=_font(_FONT_SIZE + 2))
    x = MARGIN
    for panel, title in zip(panels, titles):
        draw.text((x, MARGIN + line), title, fill=ink, font=font)
        sheet.paste(panel, (x, MARGIN + 2 * line))
        x += panel.width + MARGIN
    return sheet


def sample_sheet(real_rare: np.ndarray, synthetic: np.ndarray, heading: str, path, scale: int = SCALE,
                 columns: int = COLUMNS) -> Path:
    """Left: the real rare-class training images the generator was fitted on (up to columns²); right: the first
    columns² synthetic images of the bank. Written as a PNG at `path`."""
    n = columns * columns
    real, syn = np.asarray(real_rare)[:n], np.asarray(synthetic)[:n]
    rows = max(-(-len(real) // columns), -(-len(syn) // columns), 1)
    panels = [_tile_panel(real, columns, scale, rows), _tile_panel(syn, columns, scale, rows)]
    titles = [f"real rare-class training images ({len(real)} of {len(real_rare)})",
              f"synthetic ({len(syn)} of {len(synthetic)} in the bank)"]
    return _save(_titled(panels, titles, heading), path)


def closest_pairs_sheet(synthetic: np.ndarray, train: np.ndarray, nearest_index: np.ndarray,
                        distance: np.ndarray, copy_threshold: float, heading: str, path, n: int = 16,
                        scale: int = SCALE, columns: int = COLUMNS) -> Path:
    """The `n` synthetic images nearest to a training image (pixel distance), each row of synthetic images above
    the row of their nearest training images; captions give the distance (`*` when at or below the copy
    threshold)."""
    order = np.argsort(np.asarray(distance), kind="stable")[:n]
    syn, near = np.asarray(synthetic)[order], np.asarray(train)[np.asarray(nearest_index)[order]]
    images, captions = [], []
    for start in range(0, len(order), columns):
        rows = order[start:start + columns]
        pad = columns - len(rows)
        blank = np.full((pad, *syn.shape[1:]), BACKGROUND, np.uint8)
        images += [syn[start:start + columns], blank, near[start:start + columns], blank]
        captions += [f"syn d={distance[i]:.3f}{'*' if distance[i] <= copy_threshold else ''}" for i in rows]
        captions += [""] * pad + ["nearest train"] * len(rows) + [""] * pad
    panel = _tile_panel(np.concatenate(images), columns, scale, captions=captions)
    title = (f"the {len(order)} synthetic images closest to a training image, each above it; d = pixel distance "
             f"(RMS, [0,1] scale); * = at or below the copy threshold {copy_threshold:.3f}")
    return _save(_titled([panel], [title], heading), path)


def _save(image, path) -> Path:
    import io

    from benchmark.run.run_dir import write_bytes_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    write_bytes_atomic(path, buf.getvalue())
    return path

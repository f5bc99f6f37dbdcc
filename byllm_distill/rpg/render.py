"""Draw a Map: as the ASCII grid Jaseci's RPG example uses, or as a PNG.

The ASCII grid has `.` floor, `B` wall or obstacle, `E` enemy, `P` player, inside a `B`
border: `height + 2` rows of `width + 2` characters joined by "\\n"; row 0 is the border
above y=1 and column 0 the border left of x=1. What each tile holds comes from
`checks.map_cells`, so a render always agrees with the validators. A value that is not a
Map raises ValueError naming what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from byllm_distill.rpg.checks import MapView, map_cells

TILE_CHARS = {"floor": ".", "border": "B", "wall": "B", "obstacle": "B", "enemy": "E",
              "player": "P"}
TILE_PX = 16
# Floor-coloured tiles under the round enemy and player tokens; walls and obstacles are
# told apart by shade although both are `B` in the ASCII form.
COLOURS = {"floor": (236, 224, 196), "border": (40, 36, 48), "wall": (96, 84, 72),
           "obstacle": (150, 140, 128), "enemy": (206, 40, 48), "player": (36, 110, 220)}


def _kinds(map: Any) -> tuple[MapView, list[list[str]]]:
    """Tile kinds for the whole bordered grid, row by row from y=0 to y=height+1."""
    view = MapView.parse(map)
    cells = map_cells(view)
    rows = []
    for y in range(view.height + 2):
        row = []
        for x in range(view.width + 2):
            on_border = x in (0, view.width + 1) or y in (0, view.height + 1)
            row.append("border" if on_border else cells.get((x, y), "floor"))
        rows.append(row)
    return view, rows


def to_ascii(map: Any) -> str:
    _, rows = _kinds(map)
    return "\n".join("".join(TILE_CHARS[kind] for kind in row) for row in rows)


def to_png(map: Any, path: str | Path, tile: int = TILE_PX) -> Path:
    """Write the map as a PNG of `tile`-pixel squares and return its path."""
    from PIL import Image, ImageDraw  # only renders need Pillow

    _, rows = _kinds(map)
    image = Image.new("RGB", (len(rows[0]) * tile, len(rows) * tile), COLOURS["floor"])
    draw = ImageDraw.Draw(image)
    pad = max(tile // 8, 1)
    for y, row in enumerate(rows):
        for x, kind in enumerate(row):
            box = (x * tile, y * tile, (x + 1) * tile - 1, (y + 1) * tile - 1)
            if kind in ("enemy", "player"):
                inner = (box[0] + pad, box[1] + pad, box[2] - pad, box[3] - pad)
                draw.ellipse(inner, fill=COLOURS[kind], outline=COLOURS["border"])
            elif kind != "floor":
                draw.rectangle(box, fill=COLOURS[kind])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path

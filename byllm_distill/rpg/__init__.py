"""RPG level generation: byllm-distill's showcase, on Jaseci's RPG example schema.

Data contract. Levels and Maps travel as the plain JSON that capture stores for the Jac
objects in program/rpg.jac:

    Position = {"x": int, "y": int}        # x: column 1..width, y: row 1..height
    Wall     = {"start_pos": Position, "end_pos": Position}
    Level    = {"name": str, "difficulty": int, "width": int, "height": int,
                "num_wall": int, "num_enemies": int,
                "time_countdown": int, "n_retries_allowed": int}
    Map      = {"level": Level, "walls": [Wall], "small_obstacles": [Position],
                "enemies": [Position], "player_pos": Position}

Coordinates are 1-based and inclusive, as in Jaseci's `get_map` (`tiles[y-1][x-1]`). A
wall is a horizontal or vertical run of tiles from start_pos to end_pos, both included,
with start <= end on the axis it runs along; `num_wall` counts wall segments, not tiles.
Walls and small obstacles block movement; the player and enemies stand on floor.

Modules: `checks` (validators and the one tile map), `generator` (the offline procedural
designer), `render` (ASCII and PNG), `metrics` (Hamming distance, diversity). These four
are pure Python plus Pillow; `teacher`, `corpus` and `validators` need jaclang/byLLM and
are imported only by Jac programs, the CLI and the validator entry point.
"""

"""PNG charts for evaluation reports, drawn with matplotlib's Agg backend (no display).

Each function draws one figure to `path`, closes it (so long runs do not leak figures)
and returns the path. Series keep their order and colours across charts: the first is
always the teacher, the second the student.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PALETTE = ("#3b6fb6", "#e07b39", "#5aa469", "#9467bd", "#8c564b", "#7f7f7f")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def grouped_bars(path: Path, categories: Sequence[str], series: Mapping[str, Sequence[float]],
                 title: str, ylabel: str, ylim: tuple[float, float] | None = None,
                 errors: Mapping[str, Sequence[tuple[float, float]]] | None = None) -> Path:
    """One group of bars per category, one bar per series; `errors` are (low, high)."""
    plt = _pyplot()
    width = 0.8 / max(len(series), 1)
    # Wide enough for the labels, never wider than the report's column (11 in at 100 dpi).
    wide = 0.45 * len(categories) * max(len(series), 1)
    fig, ax = plt.subplots(figsize=(min(max(5.4, wide), 11.0), 4))
    for i, (label, values) in enumerate(series.items()):
        xs = [c + (i - (len(series) - 1) / 2) * width for c in range(len(categories))]
        yerr = None
        if errors and label in errors:
            yerr = [[max(v - lo, 0) for v, (lo, _) in zip(values, errors[label], strict=True)],
                    [max(hi - v, 0) for v, (_, hi) in zip(values, errors[label], strict=True)]]
        ax.bar(xs, values, width, label=label, color=PALETTE[i % len(PALETTE)], yerr=yerr,
               capsize=3 if yerr else 0)
    ax.set_xticks(range(len(categories)))
    # Slant the labels once they would run into each other.
    slant = len(categories) > 4 or sum(len(c) for c in categories) > 45
    ax.set_xticklabels(categories, rotation=25 if slant else 0, ha="right" if slant else "center")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    # One row of legend entries when the labels are short, else one entry per row.
    ax.legend(ncol=len(series) if sum(map(len, series)) < 30 else 1, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def boxplot(path: Path, data: Mapping[str, Sequence[float]], title: str, ylabel: str,
            log: bool = False) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.4, 4))
    labels = list(data)
    parts = ax.boxplot([list(data[k]) or [0.0] for k in labels], patch_artist=True)
    ax.set_xticks(range(1, len(labels) + 1))
    ax.set_xticklabels(labels)
    for i, box in enumerate(parts["boxes"]):
        box.set_facecolor(PALETTE[i % len(PALETTE)])
        box.set_alpha(0.6)
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def histograms(path: Path, data: Mapping[str, Sequence[float]], title: str, xlabel: str,
               bins: int = 20, low: float | None = None) -> Path:
    """Overlaid histograms on shared bins; `low` pins the left edge (e.g. 0)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.4, 4))
    values = [v for vals in data.values() for v in vals]
    lo, hi = (min(values), max(values)) if values else (0, 1)
    lo = lo if low is None else min(low, lo)
    edges = [lo + (hi - lo + 1e-9) * i / bins for i in range(bins + 1)]
    for i, (label, vals) in enumerate(data.items()):
        ax.hist(list(vals), bins=edges, alpha=0.6, label=label, color=PALETTE[i % len(PALETTE)])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.legend()
    return _save(fig, path)

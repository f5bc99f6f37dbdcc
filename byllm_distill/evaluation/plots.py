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


def lines(path: Path, xs: Sequence[Any], series: Mapping[str, Sequence[float | None]],
          title: str, xlabel: str, ylabel: str, log_x: bool = False,
          marks: Mapping[str, Sequence[bool]] | None = None,
          mark_label: str = "", hline: float | None = None) -> Path:
    """One line per series over `xs` (None leaves a gap). `marks[label][i]` circles point
    i of that series (e.g. "the gate promoted here"); `hline` draws a dashed target."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    labelled = False
    for i, (label, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        ys = [float("nan") if v is None else v for v in values]
        ax.plot(xs, ys, marker="o", label=label, color=colour)
        for x, y, marked in zip(xs, ys, (marks or {}).get(label, ()), strict=False):
            if marked:
                ax.scatter([x], [y], s=160, facecolors="none", edgecolors="black",
                           label=None if labelled else mark_label, zorder=3)
                labelled = True
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle="--", linewidth=1)
    if log_x:
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(list(xs))
        ax.set_xticklabels([str(x) for x in xs])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def version_history(path: Path, labels: Sequence[str], criteria: Sequence[dict[str, Any]],
                    title: str) -> Path:
    """The gate's criteria per version, oldest first: `criteria[i]` maps a criterion name
    to its `Criterion.to_dict()` for version `labels[i]`. Left: validity and per-field
    agreement (higher is better); right: fidelity gaps to the teacher's own spread with
    their 95% bound and margin (lower is better). Promoted-by-gate points are filled."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4))
    xs = list(range(len(labels)))
    names = sorted({n for c in criteria for n, v in c.items() if v.get("value") is not None
                    and v.get("passed") is not None})
    for i, name in enumerate(names):
        kind = next(c[name]["kind"] for c in criteria if name in c)
        if kind not in ("fidelity", "validity", "agreement"):
            continue
        ax = right if kind == "fidelity" else left
        colour = plt.get_cmap("tab10")(i % 10)
        ys = [c[name]["value"] if name in c and c[name]["value"] is not None else float("nan")
              for c in criteria]
        ax.plot(xs, ys, marker="o", color=colour, label=name)
        if kind == "fidelity":
            bounds = [c[name]["bound"] if name in c and c[name]["bound"] is not None
                      else float("nan") for c in criteria]
            ax.plot(xs, bounds, linestyle=":", color=colour)
            bar = next((c[name]["bar"] for c in criteria if name in c), None)
            if bar is not None:
                ax.axhline(bar, color=colour, linestyle="--", linewidth=0.8)
        for x, c in zip(xs, criteria, strict=True):
            if name in c and c[name]["passed"] is False:
                ax.scatter([x], [ys[x]], marker="x", s=60, color="black", zorder=3)
    for ax, ylabel in ((left, "validity / agreement with the teacher"),
                       (right, "fidelity gap (dotted: bound, dashed: margin)")):
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, rotation=20, ha="right")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    left.set_ylim(-0.05, 1.05)
    fig.suptitle(title + " (x: criterion failed)")
    return _save(fig, path)

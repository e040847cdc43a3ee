"""``validation.png``: per run, the linear probe's mIoU and DSE over training, normalised.

Matplotlib is imported when drawing, not at import time.

Example:
    >>> min_max([2.0, None, 4.0, 3.0])
    [0.0, nan, 1.0, 0.5]
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["min_max", "plot_validation"]


def min_max(values: Sequence[float | None]) -> list[float]:
    """``values`` scaled to [0, 1] (None becomes NaN; a constant series sits at 0.5)."""
    present = [v for v in values if v is not None]
    if not present:
        return [math.nan] * len(values)
    low, high = min(present), max(present)
    # A constant series sits in the middle instead of dividing by zero.
    return [math.nan if v is None else (0.5 if high == low else (v - low) / (high - low)) for v in values]


def _plot_run(axis: Any, report: Mapping[str, Any], name: str) -> None:
    """One run's panel: mIoU, DSE on the evaluation images and monitored DSE; the
    candidates circled, the selected one starred, the best mIoU (oracle) marked."""
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in report["checkpoints"] if r["run"] == name]
    x = [r["epoch"] if r.get("epoch") is not None else r["index"] for r in rows]
    miou = min_max([r.get("miou") for r in rows])
    axis.plot(x, miou, marker="o", color="black", label="linear probe mIoU")
    axis.plot(x, min_max([r.get("dse") for r in rows]), marker=".", color="tab:blue", label="DSE (eval images)")
    monitored = min_max([r.get("dse_monitored") for r in rows])
    axis.plot(x, monitored, linestyle=":", color="tab:orange", label="DSE (monitored)")
    candidates = [i for i, r in enumerate(rows) if r.get("candidate")]
    axis.scatter([x[i] for i in candidates], [monitored[i] for i in candidates], s=120, facecolors="none",
                 edgecolors="tab:red", zorder=3, label="candidates")
    selected = [i for i, r in enumerate(rows) if r.get("selected")]
    axis.scatter([x[i] for i in selected], [monitored[i] for i in selected], marker="*", s=160,
                 color="tab:red", zorder=4, label="selected")
    best = report["per_run"][name]["selection"]["best"]["index"]
    best_positions = [i for i, r in enumerate(rows) if r["index"] == best]
    axis.scatter([x[i] for i in best_positions], [miou[i] for i in best_positions], marker="^", s=90,
                 color="tab:green", zorder=4, label="best mIoU (oracle)")
    tau = report["per_run"][name]["kendall_tau"].get("dse")
    tau_text = "n/a" if tau is None else f"{tau:+.2f}"
    axis.set_title(f"{name}\ntau(DSE, mIoU) = {tau_text}", fontsize=9)
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel("min-max normalised")
    axis.set_ylim(-0.08, 1.08)
    axis.grid(alpha=0.3)


def plot_validation(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Per run: min-max normalised linear probe mIoU, DSE (evaluation images) and
    monitored DSE over epochs; the selection candidates circled, the selected one
    starred, the best mIoU (oracle) marked. Written atomically as PNG."""
    from matplotlib.figure import Figure

    from dse_tune.atomic import atomic_write

    names = list(report["per_run"])
    columns = min(3, len(names))
    rows_count = math.ceil(len(names) / columns)
    figure = Figure(figsize=(4.6 * columns, 3.4 * rows_count), layout="constrained")
    axes = figure.subplots(rows_count, columns, squeeze=False).ravel()
    for axis in axes[len(names):]:
        axis.set_visible(False)
    for axis, name in zip(axes, names):
        _plot_run(axis, report, name)
    axes[0].legend(loc="best", fontsize=7)
    path = Path(path)
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110))
    return path

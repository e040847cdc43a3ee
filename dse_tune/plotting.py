"""PNG plots of a run's DSE history (matplotlib's Agg renderer: no display needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from dse_tune.atomic import atomic_write

COMPONENT_LABELS = {
    "inter": "M_inter (between clusters)",
    "intra_image": "M_intra_image (within image clusters)",
    "intra_batch": "M_intra_batch (within batch clusters)",
    "dim": "M_dim (effective rank)",
}


def plot_dse_history(history: Mapping[str, Any] | str | Path, path: str | Path, *, title: str | None = None) -> Path:
    """Draw the DSE curve (top) and its components (bottom) over epochs to ``path``.

    ``history`` is the dict of ``dse_history.json`` (or its path, or a run folder). The
    best evaluation is marked; an early stop is noted in the title. The PNG is written
    atomically. Returns ``path``.
    """
    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not isinstance(history, Mapping):
        source = Path(history)
        source = source / "dse_history.json" if source.is_dir() else source
        history = json.loads(source.read_text())
    evaluations = list(history.get("evaluations", []))
    if not evaluations:
        raise ValueError("the DSE history has no evaluations to plot")

    # Several evaluations per epoch (evaluation by steps): plot against steps.
    epochs = [record["epoch"] for record in evaluations]
    by_step = len(set(epochs)) < len(epochs)
    x = [record["global_step"] if by_step else record["epoch"] for record in evaluations]
    x_label = "global step" if by_step else "epoch (0-based index)"

    figure = Figure(figsize=(7, 7), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    scores = [record["dse"] for record in evaluations]
    top.plot(x, scores, marker="o", color="tab:blue", label="DSE")
    finite = [(value, i) for i, value in enumerate(scores) if math.isfinite(value)]
    if finite:
        best_value, best_index = max(finite)
        top.scatter([x[best_index]], [best_value], s=140, facecolors="none", edgecolors="tab:red", zorder=3,
                    label=f"best: {best_value:.4f} at {x_label.split()[0]} {x[best_index]}")
    top.set_ylabel("DSE")
    top.grid(alpha=0.3)
    top.legend(loc="best", fontsize=8)

    for name, label in COMPONENT_LABELS.items():
        if all(name in record for record in evaluations):
            bottom.plot(x, [record[name] for record in evaluations], marker=".", label=label)
    bottom.set_xlabel(x_label)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    top.ticklabel_format(axis="y", useOffset=False)
    bottom.set_ylabel("component")
    bottom.grid(alpha=0.3)
    # Below the axes: the four curves often span the whole plot area.
    bottom.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8, frameon=False)

    config = history.get("config") or {}
    heading = title or " ".join(
        str(part) for part in (config.get("method"), f"beta={config['dse_beta']}" if "dse_beta" in config else None) if part
    ) or "DSE"
    if history.get("stopped_early"):
        heading += f"\nstopped early: {history.get('stop_reason')}"
    top.set_title(heading, fontsize=10)

    # Atomic: readers (a sweep dashboard, a human) never see half a PNG.
    return atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110))

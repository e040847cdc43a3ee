"""PNG plots: a run's DSE history and a sweep's selection (matplotlib's Agg renderer,
no display needed; every file written atomically)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from dse_tune.atomic import atomic_write
from dse_tune.degradation import peak
from dse_tune.runs import Evaluation, RunRecord, read_run

if TYPE_CHECKING:
    from dse_tune.selection import SelectionResult

COMPONENT_LABELS = {
    "inter": "M_inter (between clusters)",
    "intra_image": "M_intra_image (within image clusters)",
    "intra_batch": "M_intra_batch (within batch clusters)",
    "dim": "M_dim (effective rank)",
}


def plot_dse_history(
    history: RunRecord | Mapping[str, Any] | str | Path, path: str | Path, *, title: str | None = None
) -> Path:
    """Draw the DSE curve (top) and its components (bottom) over epochs to ``path``.

    ``history`` is a :class:`~dse_tune.runs.RunRecord`, the dict of ``dse_history.json``,
    or a run folder (or its history file). The peak is marked; an early stop is noted in
    the title. The PNG is written atomically. Returns ``path``.
    """
    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if isinstance(history, RunRecord):
        history = history.to_dict()
    elif not isinstance(history, Mapping):
        history = read_run(history).to_dict()
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
    best = peak(scores)
    if best:
        best_value, best_index = best.value, best.index
        top.scatter([x[best_index]], [best_value], s=140, facecolors="none", edgecolors="tab:red", zorder=3,
                    label=f"best: {best_value:.4f} at {x_label.split()[0]} {x[best_index]}")
    top.set_ylabel("DSE")
    top.grid(alpha=0.3)
    top.legend(loc="best", fontsize=8)

    for name, label in COMPONENT_LABELS.items():
        if all(record.get(name) is not None for record in evaluations):
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


def plot_selection(result: "SelectionResult", path: str | os.PathLike) -> Path:
    """Draw every trial's DSE curve with its candidates, stop point and the winner (PNG)."""
    # Figure + Agg canvas, not pyplot: no global backend switch, safe in any process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    path = Path(path)
    trials = [t for t in result.trials if t.run.evaluations]
    by_epoch = all(e.epoch is not None for t in trials for e in t.run.evaluations)

    def x_of(evaluation: Evaluation) -> int:
        return evaluation.epoch if by_epoch else evaluation.index

    figure = Figure(figsize=(9, 5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for t in trials:
        xs = [x_of(e) for e in t.run.evaluations]
        ys = [e.dse if math.isfinite(e.dse) else math.nan for e in t.run.evaluations]
        beta = "?" if t.beta is None else f"{t.beta:g}"
        (line,) = axes.plot(xs, ys, marker=".", label=f"{t.name} (beta={beta})")
        color = line.get_color()
        axes.scatter(
            [xs[p] for p in t.candidates],
            [ys[p] for p in t.candidates],
            s=90,
            facecolors="none",
            edgecolors=color,
            zorder=3,
        )
        if t.stopped_early:
            axes.scatter([xs[-1]], [ys[-1]], marker="x", s=90, color=color, zorder=3)
    if result.best is not None and result.best.chosen_evaluation is not None:
        chosen = result.best.chosen_evaluation
        axes.scatter(
            [x_of(chosen)],
            [chosen.dse],
            marker="*",
            s=320,
            color="gold",
            edgecolors="black",
            zorder=4,
        )
    handles, _ = axes.get_legend_handles_labels()
    handles += [
        Line2D([], [], ls="", marker="o", mfc="none", color="gray", label="candidate"),
        Line2D([], [], ls="", marker="x", color="gray", label="stopped early"),
        Line2D([], [], ls="", marker="*", ms=14, mfc="gold", mec="black", label="selected"),
    ]
    axes.legend(handles=handles, fontsize="small" if len(trials) <= 8 else "x-small")
    axes.set_xlabel("epoch" if by_epoch else "evaluation")
    axes.set_ylabel("DSE (monitoring probe)")
    axes.set_title(f"DSE per trial; selection by {result.compare} comparison")
    axes.grid(alpha=0.3)
    return atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110))

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
    if bottom.get_lines():  # a history written without components has none to label
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


#: Short names for the parameters that most often tell trials apart.
_PARAMETER_NAMES = {"dse_beta": "beta", "learning_rate": "lr"}


def _short_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trial_labels(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """A legend label per trial: the parameters whose values differ across the trials.

    ``configs`` maps a trial name to its config (the run's ``config``); parameters that
    are equal in every trial are left out, and a trial whose config lacks a varying
    parameter shows it as ``?``. With no varying parameter the label is the name.

    Example:
        >>> trial_labels({
        ...     "a": {"lr": 5e-4, "dse_beta": 0.0, "epochs": 15},
        ...     "b": {"lr": 1.5e-3, "dse_beta": 0.0, "epochs": 15},
        ...     "c": {"lr": 5e-4, "dse_beta": 0.1, "epochs": 15},
        ... })
        {'a': 'lr=0.0005, beta=0', 'b': 'lr=0.0015, beta=0', 'c': 'lr=0.0005, beta=0.1'}
    """
    keys: list[str] = []
    for config in configs.values():
        keys.extend(k for k in config if k not in keys)
    missing = object()

    def comparable(value: Any) -> str:
        return repr(value) if value is not missing else "?"

    varying = [k for k in keys if len({comparable(c.get(k, missing)) for c in configs.values()}) > 1]
    labels = {}
    for name, config in configs.items():
        parts = [f"{_PARAMETER_NAMES.get(k, k)}={_short_value(config[k]) if k in config else '?'}" for k in varying]
        labels[name] = ", ".join(parts) or name
    return labels


def _trial_configs(trials: Any) -> dict[str, Mapping[str, Any]]:
    """Each trial's config: the one recorded in its run folder, else the history's copy."""
    from dse_tune.runs import read_config

    configs = {}
    for t in trials:
        config: Mapping[str, Any] = dict(t.run.config or {})
        if t.run.path is not None:
            try:
                config = read_config(t.run.path) or config
            except (OSError, ValueError):
                pass  # the history's copy is good enough for a legend
        configs[t.name] = config
    return configs


def _deciding_values(trial: Any) -> tuple[str, Mapping[int, float]]:
    """What decided between a trial's candidates besides the monitored DSE: confirmed
    (few-label) values, else rescored (held-out) values, else nothing."""
    for label, attribute in (("few-label mIoU", "confirmed"), ("rescored DSE (held-out)", "rescored")):
        values = getattr(trial, attribute, None) or {}
        finite = {int(i): float(v) for i, v in values.items() if v is not None and math.isfinite(float(v))}
        if finite:
            return label, finite
    return "", {}


def plot_selection(result: "SelectionResult", path: str | os.PathLike) -> Path:
    """Draw every trial's DSE curve with its candidates, stop point and the winner (PNG).

    Trials are labelled by the parameters that vary across them (:func:`trial_labels`);
    where the selection decided on other values than the monitored DSE (held-out
    rescoring, few-label confirmation) those are drawn as diamonds at their candidates.
    """
    figure = selection_figure(result)
    return atomic_write(Path(path), lambda temporary: figure.savefig(temporary, format="png", dpi=110))


def selection_figure(result: "SelectionResult") -> Any:
    """The figure of :func:`plot_selection` (a matplotlib ``Figure``, not written)."""
    # Figure + Agg canvas, not pyplot: no global backend switch, safe in any process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    trials = [t for t in result.trials if t.run.evaluations]
    by_epoch = all(e.epoch is not None for t in trials for e in t.run.evaluations)
    labels = trial_labels(_trial_configs(trials))

    def x_of(evaluation: Evaluation) -> int:
        return evaluation.epoch if by_epoch else evaluation.index

    figure = Figure(figsize=(9, 5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    deciding_axis, deciding_kinds = None, set()
    for t in trials:
        xs = [x_of(e) for e in t.run.evaluations]
        ys = [e.dse if math.isfinite(e.dse) else math.nan for e in t.run.evaluations]
        (line,) = axes.plot(xs, ys, marker=".", label=labels.get(t.name, t.name))
        color = line.get_color()
        axes.scatter([xs[p] for p in t.candidates], [ys[p] for p in t.candidates], s=90, facecolors="none",
                     edgecolors=color, zorder=3)
        if t.stopped_early:
            axes.scatter([xs[-1]], [ys[-1]], marker="x", s=90, color=color, zorder=3)
        kind, values = _deciding_values(t)
        if values:
            # Rescored / confirmed values live on their own scale: a twin axis.
            deciding_axis = deciding_axis or axes.twinx()
            deciding_kinds.add(kind)
            positions = sorted(p for p in values if 0 <= p < len(xs))
            deciding_axis.scatter([xs[p] for p in positions], [values[p] for p in positions], marker="D", s=40,
                                  color=color, edgecolors="black", zorder=4)
    _mark_chosen(axes, deciding_axis, result, x_of)
    handles, _ = axes.get_legend_handles_labels()
    handles += [
        Line2D([], [], ls="", marker="o", mfc="none", color="gray", label="candidate"),
        Line2D([], [], ls="", marker="x", color="gray", label="stopped early"),
        Line2D([], [], ls="", marker="*", ms=14, mfc="gold", mec="black", label="selected"),
    ]
    if deciding_axis is not None:
        text = " / ".join(sorted(deciding_kinds))
        handles.append(Line2D([], [], ls="", marker="D", mfc="gray", mec="black", label=f"{text} (right axis)"))
        deciding_axis.set_ylabel(text)
    axes.legend(handles=handles, fontsize="small" if len(trials) <= 8 else "x-small")
    axes.set_xlabel("epoch" if by_epoch else "evaluation")
    axes.set_ylabel("DSE (monitoring probe)")
    basis = getattr(result, "basis", None)
    axes.set_title(f"DSE per trial; selection by {result.compare} comparison" + (f" ({basis})" if basis else ""))
    axes.grid(alpha=0.3)
    return figure


def _mark_chosen(axes: Any, deciding_axis: Any, result: "SelectionResult", x_of: Any) -> None:
    """The selected checkpoint as a gold star, on the values that chose it."""
    if result.best is None or result.best.chosen_evaluation is None:
        return
    chosen = result.best.chosen_evaluation
    _, values = _deciding_values(result.best)
    position = result.best.chosen
    if deciding_axis is not None and position in values:
        target, value = deciding_axis, values[position]
    else:
        target, value = axes, chosen.dse
    target.scatter([x_of(chosen)], [value], marker="*", s=320, color="gold", edgecolors="black", zorder=5)

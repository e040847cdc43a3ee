"""PNG plots: a run's DSE history and a sweep's selection (matplotlib's Agg renderer,
no display needed; every file written atomically).

Honest by construction (the helpers below are shared with
:mod:`dse_tune.evaluation.plot`): the DSE axis is never zoomed below the noise of its
values (a drift of 5e-5 must not look like a collapse), noise is drawn as a band where
the history records it (``dse_noise``: one standard error per value), NaN evaluations
are marked on the axis instead of vanishing, and epochs are ticked at integers.
"""

from __future__ import annotations

import math
import os
import statistics
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from dse_tune.atomic import atomic_write
from dse_tune.decision import NOISE_Z, finite_or_none, run_choice
from dse_tune.degradation import peak
from dse_tune.runs import Evaluation, RunRecord, read_config, read_run

if TYPE_CHECKING:
    from dse_tune.selection import SelectionResult

COMPONENT_LABELS = {
    "inter": "M_inter (between clusters)",
    "intra_image": "M_intra_image (within image clusters)",
    "intra_batch": "M_intra_batch (within batch clusters)",
    "dim": "M_dim (effective rank)",
}

#: Half-width of the drawn noise band, in standard errors of each value: the z of
#: :mod:`dse_tune.decision` (a difference counts beyond that many standard errors).
BAND_STANDARD_ERRORS = NOISE_Z
#: Without a recorded noise, the DSE axis spans at least this fraction of the largest
#: |DSE| shown: rounding-level drift stays flat instead of filling the plot.
MIN_RELATIVE_SPAN = 0.02
#: Label of the NaN markers (drawn at the bottom edge of the axes).
NAN_LABEL = "NaN (not scored)"


# --------------------------------------------------------------------------- honest axes


def evaluation_noise(evaluation: Evaluation | Mapping[str, Any]) -> float | None:
    """The standard error recorded with one evaluation (:attr:`Evaluation.noise`, the
    row's ``dse_noise``), None if absent.

    Example:
        >>> evaluation_noise({"dse": 0.4, "dse_noise": 0.002}), evaluation_noise(Evaluation(0, 0.4))
        (0.002, None)
    """
    value = finite_or_none(evaluation.get("dse_noise") if isinstance(evaluation, Mapping) else evaluation.noise)
    return None if value is None else abs(value)


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def draw_noise_band(axis: Any, xs: Sequence[float], ys: Sequence[float], noise: Sequence[float | None],
                    color: Any, label: str | None = None) -> Any:
    """Shade ``ys +- BAND_STANDARD_ERRORS * noise`` where both are known; None when no
    value has a noise (nothing drawn)."""
    if not any(n is not None for n in noise):
        return None
    width = [BAND_STANDARD_ERRORS * n if n is not None and math.isfinite(y) else math.nan for y, n in zip(ys, noise)]
    low = [y - w for y, w in zip(ys, width)]
    high = [y + w for y, w in zip(ys, width)]
    return axis.fill_between(xs, low, high, color=color, alpha=0.15, linewidth=0, label=label)


def _typical_noise(noise: Sequence[float | None]) -> float | None:
    errors = _finite(noise)
    return statistics.median(errors) if errors else None


def _floor(values: list[float], typical: float | None) -> float:
    """The narrowest honest span: the noise band's width, else a share of the values."""
    if typical:
        return 2 * BAND_STANDARD_ERRORS * typical
    return MIN_RELATIVE_SPAN * max(abs(min(values)), abs(max(values)))


def noise_note(ys: Sequence[float | None], noise: Sequence[float | None] = ()) -> str | None:
    """A note when every change of ``ys`` is within its noise (or, with no noise
    recorded, below :data:`MIN_RELATIVE_SPAN` of its size); None otherwise.

    Example:
        >>> noise_note([0.40000, 0.40005, 0.40002], [0.001] * 3)
        'all changes within noise: range 5e-05 <= 0.0028 (2 standard errors)'
        >>> noise_note([0.40000, 0.40005, 0.40002])
        'DSE changes by 5e-05 in all (no noise recorded)'
        >>> noise_note([0.1, 0.3, 0.2], [0.001] * 3) is None
        True
    """
    values = _finite(ys)
    if not values:
        return None
    typical = _typical_noise(noise)
    span = max(values) - min(values)
    if typical:
        # The bar a difference of two values must clear to count (dse_tune.decision).
        bar = BAND_STANDARD_ERRORS * math.sqrt(2) * typical
        if span <= bar:
            return f"all changes within noise: range {span:.2g} <= {bar:.2g} ({BAND_STANDARD_ERRORS:g} standard errors)"
        return None
    if span < _floor(values, None):
        return f"DSE changes by {span:.2g} in all (no noise recorded)"
    return None


def honest_limits(axis: Any, ys: Sequence[float | None], noise: Sequence[float | None] = ()) -> str | None:
    """Set the y-range of ``axis`` (after drawing) no narrower than the noise band of
    ``ys`` (its median standard error) or, without a recorded noise, :data:`MIN_RELATIVE_SPAN`
    of the largest |value|, centred on the values; return :func:`noise_note`.

    Example:
        >>> from matplotlib.figure import Figure
        >>> axis = Figure().add_subplot()
        >>> _ = axis.plot([0, 1, 2], [0.40000, 0.40005, 0.40002])
        >>> _ = honest_limits(axis, [0.40000, 0.40005, 0.40002], [0.001] * 3)
        >>> low, high = axis.get_ylim(); bool(high - low >= 0.004)
        True
    """
    values = _finite(ys)
    if not values:
        return None
    floor = _floor(values, _typical_noise(noise))
    low, high = axis.get_ylim()
    if floor > 0 and high - low < floor * 1.1:
        middle = (min(values) + max(values)) / 2
        axis.set_ylim(middle - 0.55 * floor, middle + 0.55 * floor)
    return noise_note(ys, noise)


def mark_nan(axis: Any, xs: Sequence[float], ys: Sequence[float | None], color: Any = "tab:red",
             label: str | None = NAN_LABEL) -> Any:
    """An ``X`` at the bottom edge of ``axis`` at every x whose value is NaN (or None);
    None when every value is finite."""
    missing = [x for x, y in zip(xs, ys) if y is None or not math.isfinite(float(y))]
    if not missing:
        return None
    return axis.scatter(missing, [0.03] * len(missing), marker="X", s=70, color=color, edgecolors="black",
                        transform=axis.get_xaxis_transform(), clip_on=False, zorder=6, label=label)


def integer_ticks(axis: Any) -> None:
    """Epochs, steps and evaluation indices are whole numbers: tick them so."""
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def _x_positions(evaluations: Sequence[Evaluation]) -> tuple[list[int], str]:
    """x of every evaluation: its epoch when epochs tell them apart, else its step, else
    its index (a tracked run's checkpoints may carry neither)."""
    for attribute, label in (("epoch", "epoch (0-based index)"), ("global_step", "global step")):
        values = [getattr(e, attribute) for e in evaluations]
        if all(v is not None for v in values) and len(set(values)) == len(values):
            return values, label
    return [e.index for e in evaluations], "evaluation"


def plot_dse_history(
    history: RunRecord | Mapping[str, Any] | str | Path, path: str | Path, *, title: str | None = None
) -> Path:
    """Draw the DSE curve (top) and its components (bottom) over epochs to ``path`` (a PNG,
    written atomically); returns ``path``.

    ``history`` is a :class:`~dse_tune.runs.RunRecord`, the dict of ``dse_history.json``,
    or a run folder (or its history file). The peak, the kept checkpoint, NaN evaluations,
    the noise band and an early stop are marked (see the module's honest axes).
    """
    return _write_png(history_figure(history, title=title), path)


def history_figure(history: RunRecord | Mapping[str, Any] | str | Path, *, title: str | None = None) -> Any:
    """The figure of :func:`plot_dse_history` (a matplotlib ``Figure``, not written)."""
    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    if isinstance(history, Mapping):
        history = RunRecord.from_dict(history, name="history", source="the DSE history")
    elif not isinstance(history, RunRecord):
        history = read_run(history)
    evaluations = list(history.evaluations)
    if not evaluations:
        raise ValueError("the DSE history has no evaluations to plot")
    x, x_label = _x_positions(evaluations)
    figure = Figure(figsize=(7, 7), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    scores = [e.dse for e in evaluations]
    noise = [evaluation_noise(e) for e in evaluations]
    top.plot(x, scores, marker="o", color="tab:blue", label="DSE")
    draw_noise_band(top, x, scores, noise, "tab:blue", label=f"noise (+-{BAND_STANDARD_ERRORS:g} standard errors)")
    best = peak(scores)
    if best:
        top.scatter([x[best.index]], [best.value], s=140, facecolors="none", edgecolors="tab:red", zorder=3,
                    label=f"highest DSE: {best.value:.4f} at {x_label.split()[0]} {x[best.index]}")
    choice = run_choice(history)  # what the run's decision keeps (the selector's rule)
    if choice.chosen is not None:
        top.scatter([x[choice.chosen]], [scores[choice.chosen]], marker="*", s=260, color="gold", edgecolors="black",
                    zorder=4, label=f"kept: {x_label.split()[0]} {x[choice.chosen]} ({choice.verdict.replace('_', ' ')}"
                    + (")" if any(n is not None for n in noise) else ", no noise recorded)"))
    mark_nan(top, x, scores)
    note = honest_limits(top, scores, noise)
    if note:
        top.text(0.02, 0.97, note, transform=top.transAxes, fontsize=8, va="top", color="dimgray",
                 bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0})
    top.set_ylabel("DSE")
    top.grid(alpha=0.3)
    top.legend(loc="best", fontsize=8)
    top.ticklabel_format(axis="y", useOffset=False)

    for name, label in COMPONENT_LABELS.items():
        if all(e.components.get(name) is not None for e in evaluations):
            bottom.plot(x, [e.components[name] for e in evaluations], marker=".", label=label)
    bottom.set_xlabel(x_label)
    integer_ticks(bottom)
    bottom.set_ylabel("component")
    bottom.grid(alpha=0.3)
    if bottom.get_lines():  # a history written without components has none to label
        # Below the axes: the four curves often span the whole plot area.
        bottom.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8, frameon=False)

    config = history.config or {}
    heading = title or " ".join(
        str(part) for part in (config.get("method"), f"beta={config['dse_beta']}" if "dse_beta" in config else None) if part
    ) or "DSE"
    if history.stopped_early:
        heading += "\n" + textwrap.fill(f"stopped early: {history.stop_reason}", 90)
    top.set_title(heading, fontsize=9)
    return figure


#: Short names for the parameters that most often tell trials apart.
_PARAMETER_NAMES = {"dse_beta": "beta", "learning_rate": "lr"}


def _short_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trial_labels(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """A legend label per trial (``configs``: trial name -> its config): the parameters
    whose values differ across the trials, ``?`` where a trial's config lacks one; with
    no varying parameter, the trial's name.

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

    Trials are labelled by the parameters that vary across them (:func:`trial_labels`).
    Values that decided besides the monitored DSE (held-out rescoring, few-label
    confirmation) get a panel of their own below, the winner starred on both.
    """
    return _write_png(selection_figure(result), path)


def _write_png(figure: Any, path: str | os.PathLike) -> Path:
    # Atomic: readers (a sweep dashboard, a human) never see half a PNG.
    return atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110))


def selection_figure(result: "SelectionResult") -> Any:
    """The figure of :func:`plot_selection` (a matplotlib ``Figure``, not written).

    ``figure.axes[0]`` holds the DSE curves; ``figure.axes[1]``, when present, the
    values that decided (rescored DSE or few-label mIoU), on the same x.
    """
    # Figure + Agg canvas, not pyplot: no global backend switch, safe in any process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    trials = [t for t in result.trials if t.run.evaluations]
    by_epoch = all(e.epoch is not None for t in trials for e in t.run.evaluations)
    deciding = {t.name: _deciding_values(t) for t in trials}
    kinds = sorted({kind for kind, values in deciding.values() if values})
    figure = Figure(figsize=(9, 7 if kinds else 5), layout="constrained")
    FigureCanvasAgg(figure)
    if kinds:
        axes, deciding_axes = figure.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    else:
        axes, deciding_axes = figure.add_subplot(), None

    def x_of(evaluation: Evaluation) -> int:
        return evaluation.epoch if by_epoch else evaluation.index

    colors, notes, drawn = _draw_trials(axes, deciding_axes, trials, deciding, x_of)
    _mark_chosen(axes, deciding_axes, result, x_of, colors)
    _legend(axes, len(trials), stopped=any(t.stopped_early for t in trials), **drawn)
    bottom = deciding_axes if deciding_axes is not None else axes
    bottom.set_xlabel("epoch" if by_epoch else "evaluation")
    integer_ticks(bottom)
    axes.set_ylabel("DSE (monitoring probe)")
    axes.ticklabel_format(axis="y", useOffset=False)
    basis = getattr(result, "basis", None)
    heading = f"DSE per trial; selection by {result.compare} comparison" + (f" ({basis})" if basis else "")
    reliability = getattr(result.best, "reliability", None) if result.best is not None else None
    if reliability:  # what the choice rests on, e.g. "no reliable degradation: ... kept the latest"
        heading += "\n" + textwrap.fill(reliability, 110)
    axes.set_title(heading, fontsize=10)
    axes.grid(alpha=0.3)
    if notes:
        axes.text(0.01, 0.99, "\n".join(notes), transform=axes.transAxes, fontsize=7, va="top", color="dimgray")
    if deciding_axes is not None:
        deciding_axes.set_ylabel(" / ".join(kinds))
        across = result.compare in ("rescored", "few_label")
        # rescored values choose within a trial only where its own choice is reliable (select_run)
        deciding_axes.set_title(f"{' / '.join(kinds)} of the candidates (labels choose within a trial; held-out "
                                "DSE only where its own choice is reliable)" + (", and across trials" if across else ""),
                                fontsize=9)
        deciding_axes.grid(alpha=0.3)
    return figure


def _draw_trials(axes: Any, deciding_axes: Any, trials: list, deciding: Mapping[str, tuple[str, Mapping[int, float]]],
                 x_of: Any) -> tuple[dict[str, Any], list[str], dict[str, bool]]:
    """Each trial's curve, noise band, candidates, stop and NaN marks (and its deciding
    values below). Returns each trial's colour, the notes of trials whose changes are
    all within noise, and whether any NaN mark and any noise band was drawn."""
    labels = trial_labels(_trial_configs(trials))
    colors, notes, all_values, all_noise = {}, [], [], []
    drawn = {"nan": False, "band": False}
    for t in trials:
        xs = [x_of(e) for e in t.run.evaluations]
        ys = [e.dse if math.isfinite(e.dse) else math.nan for e in t.run.evaluations]
        noise = [evaluation_noise(e) for e in t.run.evaluations]
        label = labels.get(t.name, t.name)
        (line,) = axes.plot(xs, ys, marker=".", label=label)
        colors[t.name] = color = line.get_color()
        drawn["band"] |= draw_noise_band(axes, xs, ys, noise, color) is not None
        axes.scatter([xs[p] for p in t.candidates], [ys[p] for p in t.candidates], s=90, facecolors="none",
                     edgecolors=color, zorder=3)
        if t.stopped_early:
            axes.scatter([xs[-1]], [ys[-1]], marker="x", s=90, color=color, zorder=3)
        drawn["nan"] |= mark_nan(axes, xs, ys, color=color, label=None) is not None
        if any(n is not None for n in noise) and noise_note(ys, noise):
            notes.append(f"{label}: all changes within noise")
        all_values += ys
        all_noise += noise
        _, values = deciding[t.name]
        if deciding_axes is not None and values:
            positions = sorted(p for p in values if 0 <= p < len(xs))
            deciding_axes.scatter([xs[p] for p in positions], [values[p] for p in positions], marker="D", s=40,
                                  color=color, edgecolors="black", zorder=4)
    honest_limits(axes, all_values, all_noise)
    return colors, notes, drawn


def _legend(axes: Any, count: int, *, stopped: bool, nan: bool, band: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles, _ = axes.get_legend_handles_labels()
    handles += [Line2D([], [], ls="", marker="o", mfc="none", color="gray", label="candidate")]
    if stopped:
        handles.append(Line2D([], [], ls="", marker="x", color="gray", label="stopped early"))
    handles.append(Line2D([], [], ls="", marker="*", ms=14, mfc="gold", mec="black", label="selected"))
    if nan:
        handles.append(Line2D([], [], ls="", marker="X", mfc="gray", mec="black", label=NAN_LABEL))
    if band:
        handles.append(Patch(color="gray", alpha=0.18, label=f"noise (+-{BAND_STANDARD_ERRORS:g} standard errors)"))
    axes.legend(handles=handles, fontsize="small" if count <= 8 else "x-small")


def _mark_chosen(axes: Any, deciding_axes: Any, result: "SelectionResult", x_of: Any, colors: Mapping[str, Any]) -> None:
    """The selected checkpoint as a gold star on its own DSE curve (and, where other values
    decided, on its own value in the panel below), edged in its trial's colour."""
    if result.best is None or result.best.chosen_evaluation is None:
        return
    chosen = result.best.chosen_evaluation
    star = {"marker": "*", "s": 320, "color": "gold", "edgecolors": colors.get(result.best.name, "black"),
            "linewidths": 1.5, "zorder": 5, "label": "_selected"}
    axes.scatter([x_of(chosen)], [chosen.dse], **star)
    _, values = _deciding_values(result.best)
    if deciding_axes is not None and result.best.chosen in values:
        deciding_axes.scatter([x_of(chosen)], [values[result.best.chosen]], **star)

"""``validation.png``: per run, the linear probe's mIoU and DSE over training, on their
own axes (mIoU left, DSE right), with the random-init baseline of the same architecture
as a line. The DSE axis follows :mod:`dse_tune.plotting`'s rules (never narrower than
its noise, NaN marked, whole-number epoch ticks).

Matplotlib is imported when drawing, not at import time.

Example:
    >>> tau_text({"kendall_tau": {"dse": 0.5}, "kendall_p": {"dse": 0.03}, "probed": 12})
    'tau(DSE, mIoU) = +0.50 (p = 0.03, n = 12)'
    >>> tau_text({"kendall_tau": {"dse": None}, "kendall_p": {}, "probed": 4})
    'tau(DSE, mIoU) = n/a (n = 4 < 8: weak evidence)'
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dse_tune.degradation import finite_or_none
from dse_tune.evaluation.report import MIN_CHECKPOINTS

__all__ = ["plot_validation", "tau_text", "validation_figure"]


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def tau_text(summary: Mapping[str, Any]) -> str:
    """Kendall's tau of DSE against mIoU of one run, with its p-value and the number of
    checkpoints (flagged below :data:`~dse_tune.evaluation.report.MIN_CHECKPOINTS`)."""
    tau = summary["kendall_tau"].get("dse")
    p_value = summary.get("kendall_p", {}).get("dse")
    count = summary.get("probed", 0)
    parts = [] if p_value is None else [f"p = {p_value:.2g}"]
    parts.append(f"n = {count}" + (f" < {MIN_CHECKPOINTS}: weak evidence" if count < MIN_CHECKPOINTS else ""))
    return f"tau(DSE, mIoU) = {'n/a' if tau is None else f'{tau:+.2f}'} ({', '.join(parts)})"


def _plot_run(axis: Any, report: Mapping[str, Any], name: str) -> list[Any]:
    """One run's panel: mIoU (left axis) with the random-init baseline and the best mIoU
    (oracle) marked; DSE on the evaluation images and the monitored DSE (right axis) with
    the candidates circled and the selected one starred. Returns the legend handles."""
    from dse_tune.plotting import draw_noise_band, honest_limits, integer_ticks, mark_nan

    rows = [r for r in report["checkpoints"] if r["run"] == name]
    summary = report["per_run"][name]
    x = [r["epoch"] if r.get("epoch") is not None else r["index"] for r in rows]
    miou = [_nan(r.get("miou")) for r in rows]
    handles = axis.plot(x, miou, marker="o", color="black", label="linear probe mIoU (left)")
    baseline = (summary.get("random_init") or {}).get("miou")
    if baseline is not None:
        handles.append(axis.axhline(baseline, color="gray", linestyle="--", label="random init, same architecture (left)"))
    best = summary["selection"]["best"]["index"]
    best_positions = [i for i, r in enumerate(rows) if r["index"] == best]
    handles.append(axis.scatter([x[i] for i in best_positions], [miou[i] for i in best_positions], marker="^", s=90,
                                color="tab:green", zorder=4, label="best mIoU (oracle)"))
    axis.set_ylabel("linear probe mIoU")
    axis.set_xlabel("epoch")
    integer_ticks(axis)
    axis.grid(alpha=0.3)
    missing = mark_nan(axis, x, miou, color="black", label="NaN mIoU or DSE")

    twin = axis.twinx()
    # mIoU (and its marks) above the DSE twin's bands: the left axis drawn last, see-through.
    axis.set_zorder(twin.get_zorder() + 1)
    axis.patch.set_visible(False)
    evaluated = [_nan(r.get("dse")) for r in rows]
    handles += twin.plot(x, evaluated, marker=".", color="tab:blue", label="DSE, eval images (right)")
    monitored = [_nan(r.get("dse_monitored")) for r in rows]
    handles += twin.plot(x, monitored, linestyle=":", color="tab:orange", label="DSE, monitored (right)")
    noise = {key: [r.get(f"{key}_noise") for r in rows] for key in ("dse", "dse_monitored")}
    for key, values, color in (("dse", evaluated, "tab:blue"), ("dse_monitored", monitored, "tab:orange")):
        band = draw_noise_band(twin, x, values, [finite_or_none(n) for n in noise[key]], color, label="DSE noise (+-2 s.e.)")
        handles += [band] if band is not None and key == "dse" else []
        marked = mark_nan(twin, x, values, label="NaN mIoU or DSE")
        missing = marked if marked is not None else missing
    handles += [missing] if missing is not None else []
    candidates = [i for i, r in enumerate(rows) if r.get("candidate")]
    handles.append(twin.scatter([x[i] for i in candidates], [monitored[i] for i in candidates], s=120,
                                facecolors="none", edgecolors="tab:red", zorder=3, label="candidates"))
    selected = [i for i, r in enumerate(rows) if r.get("selected")]
    handles.append(twin.scatter([x[i] for i in selected], [monitored[i] for i in selected], marker="*", s=160,
                                color="tab:red", zorder=4, label="selected"))
    twin.set_ylabel("DSE")
    note = honest_limits(twin, evaluated + monitored, [finite_or_none(n) for n in noise["dse"] + noise["dse_monitored"]])
    if note:
        twin.text(0.02, 0.97, note, transform=twin.transAxes, fontsize=6, va="top", color="dimgray",
                  bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0})
    weak = summary.get("probed", 0) < MIN_CHECKPOINTS
    beta = summary.get("beta")
    heading = name if beta is None else f"{name} (beta={beta:g})"
    axis.set_title(f"{heading}\n{tau_text(summary)}", fontsize=9, color="tab:red" if weak else "black")
    return handles


def plot_validation(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write :func:`validation_figure` to ``path`` as PNG, atomically."""
    from dse_tune.atomic import atomic_write

    figure = validation_figure(report)
    path = Path(path)
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110))
    return path


def validation_figure(report: Mapping[str, Any]) -> Any:
    """A matplotlib ``Figure``, one panel per run (:func:`_plot_run`: its mIoU axis first,
    then its DSE twin axis), with one legend."""
    from matplotlib.figure import Figure

    names = list(report["per_run"])
    columns = min(3, len(names))
    rows_count = math.ceil(len(names) / columns)
    figure = Figure(figsize=(5.2 * columns, 3.8 * rows_count + 0.8), layout="constrained")
    axes = figure.subplots(rows_count, columns, squeeze=False).ravel()
    for axis in axes[len(names):]:
        axis.set_visible(False)
    handles: dict[str, Any] = {}  # one entry per label, over all panels (a NaN mark may be in one only)
    for axis, name in zip(axes, names):
        for handle in _plot_run(axis, report, name):
            handles.setdefault(handle.get_label(), handle)
    figure.legend(handles=list(handles.values()), loc="outside lower center", ncol=2 if columns == 1 else 4, fontsize=7, frameon=False)
    return figure

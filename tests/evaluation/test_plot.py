"""validation.png: the artists drawn (stars on their curve, NaN marks, ticks, noise)."""

from __future__ import annotations

import math

from dse_tune.evaluation.plot import plot_validation, validation_figure
from dse_tune.evaluation.report import run_summary
from dse_tune.plotting import NAN_LABEL
from dse_tune.runs import RunRecord


def _report(dse, miou, epochs, noise=None):
    run = RunRecord.from_values("r", dse, epochs=epochs)
    rows = [
        {"run": "r", "index": i, "epoch": e, "miou": m, "dse": d, "dse_monitored": d,
         **({"dse_monitored_noise": noise[i], "dse_noise": noise[i]} if noise else {})}
        for i, (d, m, e) in enumerate(zip(dse, miou, epochs))
    ]
    summary = run_summary(run, rows, dse_seed=0, window=1, top=2, baseline={"miou": 0.1})
    return {"per_run": {"r": summary}, "checkpoints": rows}


def _points(axis, size):
    return [tuple(map(float, p)) for c in axis.collections if size in c.get_sizes() for p in c.get_offsets()]


def test_the_selected_star_is_on_the_monitored_curve_and_ticks_are_whole_epochs(tmp_path):
    report = _report([0.2, 0.5, 0.3, 0.4], [0.2, 0.3, 0.25, 0.28], [1, 3, 5, 7])
    figure = validation_figure(report)
    miou_axis, dse_axis = figure.axes
    selected = report["per_run"]["r"]["selection"]["selected"]
    assert _points(dse_axis, 160) == [(float(selected["epoch"]), 0.5)]
    monitored = next(line for line in dse_axis.get_lines() if line.get_label() == "DSE, monitored (right)")
    assert (selected["epoch"], 0.5) in set(zip(monitored.get_xdata(), monitored.get_ydata()))
    assert all(float(t).is_integer() for t in miou_axis.get_xticks())
    assert plot_validation(report, tmp_path / "validation.png").stat().st_size > 0


def test_nan_evaluations_are_marked_and_the_dse_axis_respects_the_noise():
    report = _report([0.40001, math.nan, 0.40004, 0.40002], [0.2, None, 0.25, 0.22], [0, 1, 2, 3],
                     noise=[0.002] * 4)
    figure = validation_figure(report)
    miou_axis, dse_axis = figure.axes
    marks = [c for axis in (miou_axis, dse_axis) for c in axis.collections if c.get_label() == "NaN mIoU or DSE"]
    assert marks and all([float(x) for x, _ in c.get_offsets()] == [1.0] for c in marks)
    low, high = dse_axis.get_ylim()
    assert high - low >= 4 * 0.002  # the band of +-2 standard errors fits
    assert any("all changes within noise" in t.get_text() for t in dse_axis.texts)
    labels = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "NaN mIoU or DSE" in labels and "DSE noise (+-2 s.e.)" in labels
    assert NAN_LABEL not in labels  # the validation plot names its own marks

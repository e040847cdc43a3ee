"""PNG plots: what is drawn is checked on the matplotlib artists (star positions, y-range
against the noise, NaN marks, tick values), not only that a file exists."""

from __future__ import annotations

import dataclasses
import math

import pytest

from dse_tune.plotting import (
    MIN_RELATIVE_SPAN,
    NAN_LABEL,
    history_figure,
    noise_note,
    plot_dse_history,
    plot_selection,
    selection_figure,
    trial_labels,
)
from dse_tune.runs import Evaluation, RunRecord
from dse_tune.selection import select_best


def _runs():
    base = {"method": "mae", "epochs": 6, "seed": 0}
    values = {
        ("a", 5e-4, 0.0): [0.1, 0.3, 0.5, 0.45, 0.4, 0.35],
        ("b", 1.5e-3, 0.0): [0.1, 0.35, 0.4, 0.38, 0.3, 0.2],
        ("c", 5e-4, 0.1): [0.2, 0.4, 0.6, 0.62, 0.6, 0.58],
    }
    return [
        RunRecord.from_values(name, series, beta=beta, config={**base, "lr": lr})
        for (name, lr, beta), series in values.items()
    ]


def _points(axis, marker_size=None):
    """Every scattered point of ``axis`` (optionally only collections of one marker size)."""
    return [
        tuple(float(v) for v in point)
        for collection in axis.collections
        if hasattr(collection, "get_offsets") and (marker_size is None or marker_size in collection.get_sizes())
        for point in collection.get_offsets()
    ]


def _line_points(axis):
    return {label: set(zip(map(float, line.get_xdata()), map(float, line.get_ydata())))
            for label, line in ((line.get_label(), line) for line in axis.get_lines())}


def test_trial_labels_name_only_the_parameters_that_vary():
    labels = trial_labels({run.name: run.config for run in _runs()})
    assert labels == {"a": "lr=0.0005, beta=0", "b": "lr=0.0015, beta=0", "c": "lr=0.0005, beta=0.1"}
    # A parameter missing from one config varies too, shown as '?'; nothing varies: the name.
    assert trial_labels({"x": {"lr": 1.0}, "y": {}}) == {"x": "lr=1", "y": "lr=?"}
    assert trial_labels({"x": {"lr": 1.0}, "y": {"lr": 1.0}}) == {"x": "x", "y": "y"}


def test_the_winner_star_sits_on_its_own_curve_and_its_rescored_value_on_its_own_panel(tmp_path):
    runs = _runs()
    runs[0] = RunRecord.from_values("a", [0.1, 0.5, 0.3, 0.45, 0.2, 0.3], beta=0.0, config=runs[0].config)
    # Held-out values on another scale (10x), inverted within a run so that they, not
    # the monitored DSE, choose: the chosen checkpoint is not the DSE peak.
    rescored = {(run.name, e.index): 10 * (1 - e.dse) for run in runs for e in run.evaluations}
    result = select_best(runs, window=1, compare="rescored", rescored=lambda run, e: rescored[(run.name, e.index)])
    winner = result.best
    assert winner.chosen != winner.run.peak.index  # the rescored values decided

    figure = selection_figure(result)
    dse_axes, deciding_axes = figure.axes
    chosen = winner.chosen_evaluation
    # The star (the largest marker) on the DSE axes: at the winner's own DSE, on its own line.
    (star,) = _points(dse_axes, marker_size=320)
    assert star == pytest.approx((chosen.epoch, chosen.dse))
    label = trial_labels({r.name: r.config for r in runs})[winner.name]
    assert (float(chosen.epoch), chosen.dse) in _line_points(dse_axes)[label]
    # In the panel below, the star is at the winner's rescored value, among its diamonds.
    (lower_star,) = _points(deciding_axes, marker_size=320)
    assert lower_star == pytest.approx((chosen.epoch, winner.chosen_rescored))
    drawn = _points(deciding_axes, marker_size=40)
    for trial in result.trials:
        for position, value in trial.rescored.items():
            assert (trial.run.evaluations[position].epoch, value) in drawn
    # No rescored value is plotted on the DSE axes (it would read as a DSE).
    assert not {value for t in result.trials for value in t.rescored.values()} & {y for _, y in _points(dse_axes)}
    texts = [t.get_text() for t in dse_axes.get_legend().get_texts()]
    assert texts[:3] == ["lr=0.0005, beta=0", "lr=0.0015, beta=0", "lr=0.0005, beta=0.1"]
    assert "selected" in texts and deciding_axes.get_ylabel() == "rescored DSE (held-out)"
    assert plot_selection(result, tmp_path / "selection.png").stat().st_size > 0


def test_without_rescored_values_there_is_no_second_panel():
    figure = selection_figure(select_best(_runs()))
    assert len(figure.axes) == 1


def test_a_drift_far_below_the_noise_is_not_zoomed_into_a_collapse():
    # 5e-5 of drift on a DSE of 0.4: auto-zoom would fill the plot with it.
    drift = [0.40005, 0.40004, 0.40002, 0.40001, 0.40000]
    figure = history_figure(RunRecord.from_values("flat", drift))
    top = figure.axes[0]
    low, high = top.get_ylim()
    assert high - low >= MIN_RELATIVE_SPAN * 0.40005
    assert low < min(drift) and high > max(drift)
    notes = [t.get_text() for t in top.texts]
    assert notes == ["DSE changes by 5e-05 in all (no noise recorded)"]
    # A real change keeps matplotlib's own range and gets no note.
    figure = history_figure(RunRecord.from_values("real", [0.2, 0.4, 0.3, 0.25]))
    assert len(figure.axes[0].texts) == 0 and figure.axes[0].get_ylim()[1] - figure.axes[0].get_ylim()[0] < 0.3


def test_a_recorded_noise_is_drawn_as_a_band_and_bounds_the_y_range():
    drift = [0.40005, 0.40004, 0.40002, 0.40001, 0.40000]
    history = RunRecord.from_values("flat", drift).to_dict()
    for row in history["evaluations"]:
        row["dse_noise"] = 0.003  # as a monitor writes it: one standard error per value
    top = history_figure(history).axes[0]
    (band,) = [c for c in top.collections if c.get_label().startswith("noise (+-2 standard errors)")]
    vertices = band.get_paths()[0].vertices
    assert vertices[:, 1].min() == pytest.approx(0.40000 - 0.006) and vertices[:, 1].max() == pytest.approx(0.40005 + 0.006)
    low, high = top.get_ylim()
    assert high - low >= 4 * 0.003 and low <= 0.40000 - 0.006 and high >= 0.40005 + 0.006
    assert [t.get_text() for t in top.texts] == ["all changes within noise: range 5e-05 <= 0.0085 (2 standard errors)"]
    # The selection figure draws each trial's band and notes the trial as within noise.
    run = RunRecord.from_dict(history, name="flat")
    axes = selection_figure(select_best([run])).axes[0]
    assert any(t.get_text() == "flat: all changes within noise" for t in axes.texts)
    assert "noise (+-2 standard errors)" in [t.get_text() for t in axes.get_legend().get_texts()]


def test_the_noise_note_uses_the_decision_bar():
    assert noise_note([0.40000, 0.40005], [0.001, 0.001]).startswith("all changes within noise")
    assert noise_note([0.40, 0.41], [0.001, 0.001]) is None  # 0.01 > 2 * sqrt(2) * 0.001
    assert noise_note([math.nan, math.nan]) is None


def test_nan_evaluations_are_marked_where_they_happened():
    run = RunRecord.from_values("r", [0.3, math.nan, 0.5, None, 0.45], epochs=[4, 9, 14, 19, 24])
    top = history_figure(run).axes[0]
    (marks,) = [c for c in top.collections if c.get_label() == NAN_LABEL]
    assert [float(x) for x, _ in marks.get_offsets()] == [9.0, 19.0]
    assert NAN_LABEL in [t.get_text() for t in top.get_legend().get_texts()]
    # In the selection figure too, in the trial's colour, with a legend entry.
    figure = selection_figure(select_best([run, RunRecord.from_values("s", [0.2, 0.3, 0.4], epochs=[4, 9, 14])]))
    axes = figure.axes[0]
    assert NAN_LABEL in [t.get_text() for t in axes.get_legend().get_texts()]
    assert (9.0, 0.03) in _points(axes, marker_size=70) and (19.0, 0.03) in _points(axes, marker_size=70)


def _tracked(values):
    """A tracked run's history: checkpoints with steps, no epochs."""
    evaluations = tuple(Evaluation(index=i, dse=v, global_step=100 * (i + 1)) for i, v in enumerate(values))
    return RunRecord("tracked", evaluations)


def test_ticks_are_whole_numbers():
    for figure in (
        selection_figure(select_best([RunRecord.from_values("short", [0.1, 0.3, 0.2])])),
        history_figure(RunRecord.from_values("short", [0.1, 0.3, 0.2])),
        selection_figure(select_best([_tracked([0.1, 0.3, 0.2])])),
        history_figure(_tracked([0.1, 0.3, 0.2])),
    ):
        ticks = figure.axes[-1 if len(figure.axes) < 3 else 1].get_xticks()
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    # A history with no epochs and no steps is plotted against the evaluation index.
    bare = RunRecord("bare", tuple(Evaluation(index=i, dse=v) for i, v in enumerate([0.1, 0.2])))
    assert history_figure(bare).axes[1].get_xlabel() == "evaluation"


def test_a_history_plot_is_written(tmp_path):
    run = dataclasses.replace(RunRecord.from_values("r", [0.1, 0.3, 0.2], config={"method": "dino"}))
    path = plot_dse_history(run.stopped("degraded"), tmp_path / "curve.png")
    assert path.stat().st_size > 0
    assert "stopped early: degraded" in history_figure(run.stopped("degraded")).axes[0].get_title()


def test_the_history_stars_what_the_run_decision_keeps():
    # DSE prefers evaluation 1, but only within the noise: the decision keeps the latest.
    history = RunRecord.from_values("r", [0.1, 0.5, 0.42, 0.49]).to_dict()
    for row in history["evaluations"]:
        row["dse_noise"] = 0.01
    top = history_figure(history).axes[0]
    (star,) = _points(top, marker_size=260)
    assert star == pytest.approx((3, 0.49))
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert "highest DSE: 0.5000 at epoch 1" in labels and "kept: epoch 3 (within noise)" in labels

"""PNG plots: the selection figure labels trials by what varies and draws what decided."""

from __future__ import annotations

from dse_tune.plotting import plot_selection, selection_figure, trial_labels
from dse_tune.runs import RunRecord
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


def test_trial_labels_name_only_the_parameters_that_vary():
    labels = trial_labels({run.name: run.config for run in _runs()})
    assert labels == {"a": "lr=0.0005, beta=0", "b": "lr=0.0015, beta=0", "c": "lr=0.0005, beta=0.1"}
    # A parameter missing from one config varies too, shown as '?'; nothing varies: the name.
    assert trial_labels({"x": {"lr": 1.0}, "y": {}}) == {"x": "lr=1", "y": "lr=?"}
    assert trial_labels({"x": {"lr": 1.0}, "y": {"lr": 1.0}}) == {"x": "x", "y": "y"}


def test_the_selection_figure_labels_trials_and_draws_rescored_values(tmp_path):
    runs = _runs()
    rescored = {}
    for run in runs:  # held-out values on their own scale: 10x the monitored DSE
        for evaluation in run.evaluations:
            rescored[f"{run.name}/{evaluation.index}"] = 10 * evaluation.dse

    def lookup(run, evaluation):
        return rescored[f"{run.name}/{evaluation.index}"]

    result = select_best(runs, rescored=lookup)
    figure = selection_figure(result)
    main_axes, deciding_axes = figure.axes
    texts = [t.get_text() for t in main_axes.get_legend().get_texts()]
    assert texts[:3] == ["lr=0.0005, beta=0", "lr=0.0015, beta=0", "lr=0.0005, beta=0.1"]
    assert "rescored DSE (held-out) (right axis)" in texts and "selected" in texts
    # One diamond per candidate with a rescored value, on the right axis, at its value.
    drawn = [tuple(point) for collection in deciding_axes.collections for point in collection.get_offsets()]
    for trial in result.trials:
        for position, value in trial.rescored.items():
            assert (trial.run.evaluations[position].epoch, value) in drawn
    assert plot_selection(result, tmp_path / "selection.png").stat().st_size > 0


def test_without_rescored_values_there_is_no_second_axis():
    figure = selection_figure(select_best(_runs()))
    assert len(figure.axes) == 1

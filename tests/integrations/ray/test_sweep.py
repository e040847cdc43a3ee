"""A whole sweep: spec -> Tuner -> trials reporting, stopped, summarized and selected."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from dse_tune.cli import sweep
from dse_tune.integrations.ray import METRIC, build_tuner, restore_tuner
from dse_tune.runs import TUNER_STATE_FILE
from dse_tune.search_space import load_search_space
from dse_tune.sweeps import RUNS_DIR, TRIAL_FILE
from tests.integrations.ray.helpers import history, tune_results
from tests.sweep_helpers import write_space


def test_a_sweep_folder_is_never_overwritten_and_only_a_sweep_resumes(tmp_path):
    spec = load_search_space(write_space(tmp_path / "space.yaml"))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / TUNER_STATE_FILE).write_bytes(b"")
    with pytest.raises(FileExistsError, match="already holds a sweep; resume it"):
        build_tuner(spec, tmp_path / "old")
    with pytest.raises(FileNotFoundError, match=f"holds no sweep to resume \\(no {TUNER_STATE_FILE}\\)"):
        restore_tuner(tmp_path / "new")


# --------------------------------------------------------------------------- on Ray


@pytest.mark.slow
def test_sweep_reports_checkpoints_stops_and_selects(ray_session, tmp_path, capsys):
    # OptunaSearch draws epochs (2 or 4) and lr; the pruner stops every trial that
    # reaches evaluation 2, so 4-epoch trials stop there and 2-epoch trials finish.
    space = write_space(
        tmp_path / "space.yaml",
        pretrain={"epochs": {"choice": [2, 4]}, "lr": {"loguniform": [1.0e-4, 1.0e-3]}, "dse_beta": 0.05},
        search={"algorithm": "optuna", "num_samples": 2, "max_concurrent_trials": 2, "seed": 0},
        pruner={"type": "threshold", "lower": 1.0e9, "n_warmup_steps": 2},
        storage={"max_failures": 0},
    )
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    sweep_dir = tmp_path / "sweep"
    args = parser.parse_args([str(space), "--out", str(sweep_dir), "--quiet", "--rescore-size", "16"])
    assert sweep.run(args) == 0
    printed = capsys.readouterr().out

    runs = sorted((sweep_dir / RUNS_DIR).iterdir())
    results = tune_results(sweep_dir)
    assert len(runs) == len(results) == 2
    epochs_by_trial = {}
    for run_dir in runs:
        rows = results[run_dir.name]
        record = history(run_dir)
        configured = record["config"]["epochs"]
        epochs_by_trial[run_dir.name] = configured
        evaluations = record["evaluations"]
        # One report per DSE evaluation, with the components and the running best.
        assert [r["evaluation"] for r in rows] == [e["index"] for e in evaluations]
        assert [r["epoch"] for r in rows] == [e["epoch"] for e in evaluations]
        assert [r["dse"] for r in rows] == pytest.approx([e["dse"] for e in evaluations])
        assert [r[METRIC] for r in rows] == pytest.approx(
            [max(e["dse"] for e in evaluations[: i + 1]) for i in range(len(evaluations))]
        )
        assert all(set(r) >= {"dse_inter", "dse_intra_image", "dse_intra_batch", "dse_dim", "node_id"} for r in rows)
        assert all(r["run_dir"] == str(run_dir.resolve()) for r in rows)
        # Every evaluation's checkpoint is in the run folder; Tune keeps no copies.
        assert all((run_dir / e["checkpoint"]).stat().st_size > 0 for e in evaluations)
        (trial_dir,) = [p for p in sweep_dir.glob(f"*{run_dir.name}*") if p.is_dir() and p.parent == sweep_dir]
        assert not list(trial_dir.glob("checkpoint_*"))
        trial = json.loads((run_dir / TRIAL_FILE).read_text())
        if configured == 4:  # stopped at evaluation 2: its history ends there, flagged
            assert len(evaluations) == 3
            assert record["stopped_early"] and "ThresholdPruner pruned at evaluation 2" in record["stop_reason"]
            assert (run_dir / "dse_curve.png").is_file()
        else:
            assert len(evaluations) == 2 and not record["stopped_early"]
            assert trial["status"] == "finished"
    assert sorted(epochs_by_trial.values()) == [2, 4], "seed 0 draws both epoch counts"

    # The sweep summary: trial-epochs run vs the configured ones.
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    expected_run = sum(3 if e == 4 else 2 for e in epochs_by_trial.values())
    assert summary["trial_epochs_run"] == expected_run
    assert summary["trial_epochs_without_pruning"] == sum(epochs_by_trial.values())
    assert summary["complete"] is True
    statuses = {t["trial_id"]: t["status"] for t in summary["trials"]}
    assert statuses == {t: "stopped" if e == 4 else "finished" for t, e in epochs_by_trial.items()}
    assert f"trial-epochs run: {expected_run} of {sum(epochs_by_trial.values())} without pruning" in printed

    # Selection over every trial, stopped ones included as candidates.
    selection = json.loads((sweep_dir / "selection.json").read_text())
    assert len(selection["trials"]) == 2 and selection["compare"] == "conservative"  # the safe default (issue 11)
    assert all(t["candidates"] for t in selection["trials"])
    assert any(t["stopped_early"] for t in selection["trials"])
    assert Path(selection["best_checkpoint"]).is_file()
    assert (sweep_dir / "selection.png").stat().st_size > 0
    assert f"chosen checkpoint: {selection['best_checkpoint']}" in printed
    assert "chosen beta: 0.05" in printed

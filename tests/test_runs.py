from __future__ import annotations

import json
import math

import pytest

from dse_tune.runs import RunRecord, load_sweep, mark_stopped, read_run, write_run as write_record
from dse_tune.selection import select_best
from tests.run_folders import write_run

NAN = math.nan


def test_read_run_reads_the_callback_format(tmp_path):
    run_dir = write_run(
        tmp_path / "run", [0.1, None, 0.4], 0.25, stopped_early=True, stop_reason="why"
    )
    run = read_run(run_dir)
    assert run.name == "run" and run.path == run_dir
    assert run.beta == 0.25 and run.config["lr"] == 1e-3
    assert (run.stopped_early, run.stop_reason) == (True, "why")
    first = run.evaluations[0]
    assert (first.index, first.epoch, first.global_step, first.dse, first.seconds) == (
        0,
        0,
        0,
        0.1,
        2.5,
    )
    assert first.components == {"inter": 1.0, "intra_image": 0.5, "intra_batch": 0.25, "dim": 0.5}
    assert math.isnan(run.evaluations[1].dse)  # null DSE reads as NaN
    assert run.checkpoint_path(run.evaluations[2]) == run_dir / "checkpoints/epoch=0020.ckpt"


def test_read_run_orders_by_index_and_reads_nan(tmp_path):
    history = {
        "config": {"dse_beta": 0.0},
        "evaluations": [{"index": 1, "epoch": 9, "dse": NAN}, {"index": 0, "epoch": 4, "dse": 0.3}],
    }
    (tmp_path / "dse_history.json").write_text(json.dumps(history))  # Python writes NaN
    run = read_run(tmp_path / "dse_history.json")
    assert [e.epoch for e in run.evaluations] == [4, 9]
    assert math.isnan(run.evaluations[1].dse)
    assert run.stopped_early is False


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "not valid JSON"),
        ("[]", "expected a JSON object, got list"),
        ('{"evaluations": {}}', "'evaluations' must be a list"),
        ('{"evaluations": [{"epoch": 1}]}', r"evaluations\[0\] has no 'dse'"),
        (
            '{"evaluations": [{"dse": "high"}]}',
            r"evaluations\[0\]: 'dse' must be a number, got 'high'",
        ),
    ],
)
def test_read_run_errors_name_the_file(tmp_path, content, message):
    (tmp_path / "dse_history.json").write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        read_run(tmp_path)
    assert str(tmp_path / "dse_history.json") in str(error.value)


def test_read_run_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot read .*dse_history.json"):
        read_run(tmp_path)


def test_load_sweep_finds_runs_recursively_and_tolerates_bad_ones(beta_sweep):
    write_run(beta_sweep / "trial_3_crashed", [], 0.5)
    (beta_sweep / "trial_4_corrupt").mkdir()
    (beta_sweep / "trial_4_corrupt" / "dse_history.json").write_text("{not json")
    # a copy of the history inside a run's checkpoint folder is not another run
    copy = beta_sweep / "trial_0_beta=0" / "checkpoints" / "checkpoint_000003"
    write_run(copy, [9.0, 9.9], 0.0)

    runs = load_sweep(beta_sweep)
    assert [r.name for r in runs] == [
        "ray/trial_2_beta=1",
        "trial_0_beta=0",
        "trial_1_beta=0.1",
        "trial_3_crashed",
        "trial_4_corrupt",
    ]
    by_name = {r.name: r for r in runs}
    assert (
        by_name["trial_3_crashed"].evaluations == () and by_name["trial_3_crashed"].problem is None
    )
    assert "not valid JSON" in by_name["trial_4_corrupt"].problem
    with pytest.raises(ValueError, match="not valid JSON"):
        load_sweep(beta_sweep, strict=True)

    result = select_best(runs)
    assert result.best.name == "trial_0_beta=0"
    assert any(w.startswith("trial trial_4_corrupt: ") for w in result.warnings)


def test_load_sweep_on_a_single_run_dir(tmp_path):
    write_run(tmp_path / "my_run", [0.1, 0.2], 0.0)
    assert [r.name for r in load_sweep(tmp_path / "my_run")] == ["my_run"]
    assert load_sweep(tmp_path / "my_run" / "checkpoints") == []
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_sweep(tmp_path / "nowhere")


def test_write_then_read_round_trips_every_field(tmp_path):
    run = RunRecord.from_values(
        "r", [0.2, NAN, 0.5], beta=0.1, epochs=[4, 9, 14], checkpoints=["c/4.ckpt", None, "c/14.ckpt"]
    )
    write_record(tmp_path, run)
    again = read_run(tmp_path)
    assert again.beta == 0.1 and [e.epoch for e in again.evaluations] == [4, 9, 14]
    assert [e.checkpoint for e in again.evaluations] == ["c/4.ckpt", None, "c/14.ckpt"]
    assert math.isnan(again.evaluations[1].dse)
    assert json.loads((tmp_path / "dse_history.json").read_text())["format_version"] == 1
    header = (tmp_path / "dse_history.csv").read_text().splitlines()[0]
    assert header.split(",")[-1] == "failure"


def test_a_newer_format_version_is_refused_with_the_file_named(tmp_path):
    (tmp_path / "dse_history.json").write_text('{"format_version": 9, "evaluations": []}')
    with pytest.raises(ValueError, match=r"format_version 9 is newer") as error:
        read_run(tmp_path)
    assert str(tmp_path / "dse_history.json") in str(error.value)


def test_from_values_records_checkpoints_so_selection_returns_a_file(tmp_path):
    run = RunRecord.from_values("r", [0.1, 0.9, 0.2], checkpoints=["a.pt", "b.pt", "c.pt"], path=tmp_path)
    result = select_best([run])
    assert result.best_checkpoint == tmp_path / "b.pt"
    assert not any("no checkpoint" in warning for warning in result.warnings)


def test_best_and_peak_skip_a_first_nan():
    run = RunRecord.from_values("r", [NAN, 0.3, 0.7, 0.7, 0.1])
    assert (run.peak.index, run.peak.value, run.peak.skipped) == (2, 0.7, 1)
    assert run.best.index == 2


def test_mark_stopped_keeps_the_first_reason(tmp_path):
    write_record(tmp_path, RunRecord.from_values("r", [0.1, 0.2]))
    assert mark_stopped(tmp_path, "pruned").stop_reason == "pruned"
    assert mark_stopped(tmp_path, "later").stop_reason == "pruned"
    assert read_run(tmp_path).stopped_early is True


def test_dse_noise_round_trips_and_old_folders_without_it_still_read(tmp_path):
    run = RunRecord.from_values("n", [0.1, 0.4, 0.3], noise=[0.01, None, 0.02], global_steps=[0, 10, 20])
    write_record(tmp_path / "n", run)
    again = read_run(tmp_path / "n")
    assert [e.noise for e in again.evaluations] == [0.01, None, 0.02] and again.dse_noise == [0.01, None, 0.02]
    assert again.first_untrained
    assert "dse_noise" in (tmp_path / "n" / "dse_history.csv").read_text().splitlines()[0]
    # a version-1 folder written before the field existed
    old = {"format_version": 1, "evaluations": [{"index": 0, "epoch": 0, "dse": 0.2}, {"index": 1, "dse": 0.3}]}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "dse_history.json").write_text(json.dumps(old))
    legacy = read_run(tmp_path / "old")
    assert legacy.dse_noise is None and not legacy.first_untrained and legacy.chosen.index == 1


@pytest.mark.parametrize("value", ["-0.1", "\"big\"", "NaN"])
def test_a_bad_dse_noise_is_named(tmp_path, value):
    (tmp_path / "dse_history.json").write_text('{"evaluations": [{"index": 0, "dse": 0.1, "dse_noise": %s}]}' % value)
    with pytest.raises(ValueError, match=r"evaluations\[0\].*'dse_noise'"):
        read_run(tmp_path)


def test_the_ranking_verdict_round_trips_and_is_checked(tmp_path):
    run = RunRecord.from_values("v", [0.1, 0.5, 0.2], ranking_reliable=False, ranking_reason="flips with probe size")
    write_record(tmp_path, run)
    again = read_run(tmp_path)
    assert (again.ranking_reliable, again.ranking_reason) == (False, "flips with probe size")
    assert (again.chosen.index, again.best.index) == (2, 1)  # not reliable: the latest; the peak stays
    (tmp_path / "dse_history.json").write_text('{"evaluations": [], "ranking_reliable": "yes"}')
    with pytest.raises(ValueError, match="'ranking_reliable' must be true, false or null"):
        read_run(tmp_path)

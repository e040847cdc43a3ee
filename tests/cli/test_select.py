"""``dse-tune select``: the table, selection.json/png, exit statuses 0, 1 and 2."""

from __future__ import annotations

import json

import pytest

from dse_tune.cli import main
from tests.run_folders import write_run

# Held-out DSE of the beta_sweep fixture's candidates (as in tests/test_selection.py).
HELD_OUT = {
    "trial_0_beta=0/checkpoints/epoch=0020.ckpt": 0.52,
    "trial_1_beta=0.1/checkpoints/epoch=0020.ckpt": 0.50,
    "trial_1_beta=0.1/checkpoints/epoch=0060.ckpt": 0.58,
    "ray/trial_2_beta=1/checkpoints/epoch=0030.ckpt": 0.40,
}


def run_cli(*argv: str) -> int:
    return main(["select", *argv])


def test_cli_on_a_sweep(beta_sweep, tmp_path, capsys):
    out = tmp_path / "report"
    assert run_cli(str(beta_sweep), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("trial"))
    for column in ("trial", "beta", "candidates", "chosen epoch", "DSE", "stopped early"):
        assert column in header
    row = next(line for line in lines if "trial_1_beta=0.1" in line)
    assert "20, 60" in row and "yes" in row
    winner = next(line for line in lines if line.startswith("*"))
    assert "trial_0_beta=0" in winner
    assert "betas [0.1, 1.0] not compared" in printed
    data = json.loads((out / "selection.json").read_text())
    assert (data["best_trial"], data["best_epoch"]) == ("trial_0_beta=0", 20)
    assert (out / "selection.png").read_bytes().startswith(b"\x89PNG")


def test_cli_with_rescored_file_and_options(beta_sweep, capsys):
    rescored = beta_sweep / "rescored.json"
    rescored.write_text(json.dumps(HELD_OUT))
    code = run_cli(
        str(beta_sweep), "--rescored", str(rescored), "--compare", "rescored", "--window", "1", "--top", "5",
        "--no-plot",
    )
    assert code == 0
    data = json.loads((beta_sweep / "selection.json").read_text())  # --out defaults to RUN_DIR
    assert (data["best_beta"], data["best_epoch"], data["window"], data["top"]) == (0.1, 60, 1, 5)
    assert not (beta_sweep / "selection.png").exists()
    assert "rescored" in capsys.readouterr().out


def test_cli_on_a_single_run_and_errors(tmp_path, capsys):
    run_dir = write_run(tmp_path / "run", [0.1, 0.5, 0.3], 0.0)
    assert run_cli(str(run_dir)) == 0
    assert json.loads((run_dir / "selection.json").read_text())["best_epoch"] == 10

    (tmp_path / "empty").mkdir()
    assert run_cli(str(tmp_path / "empty")) == 2
    assert "no dse_history.json below" in capsys.readouterr().err

    write_run(tmp_path / "crashed", [], 0.0)
    assert run_cli(str(tmp_path / "crashed")) == 1
    captured = capsys.readouterr()
    assert "no trial has a candidate" in captured.err
    assert (
        json.loads((tmp_path / "crashed" / "selection.json").read_text())["best_checkpoint"] is None
    )

    with pytest.raises(SystemExit):
        run_cli(str(run_dir), "--window", "-1")
    assert "window" in capsys.readouterr().err


def test_bad_input_is_one_error_line(tmp_path, capsys):
    run_dir = write_run(tmp_path / "run", [0.1, 0.5, 0.3], 0.0)
    assert run_cli(str(run_dir), "--rescored", str(tmp_path / "missing.json")) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: cannot read {tmp_path / 'missing.json'}: No such file or directory"]

    (tmp_path / "bad.json").write_text("[1, 2]")
    assert run_cli(str(run_dir), "--rescored", str(tmp_path / "bad.json")) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {tmp_path / 'bad.json'}: entry 0 needs 'checkpoint' and 'dse'"]


def test_dse_tune_cli_dispatches_select(tmp_path):
    run_dir = write_run(tmp_path / "run", [0.1, 0.5, 0.3], 0.0)
    assert main(["select", str(run_dir), "--out", str(tmp_path / "o"), "--no-plot"]) == 0
    assert (tmp_path / "o" / "selection.json").exists()


def test_score_standardized_is_recorded(beta_sweep, tmp_path, capsys):
    assert run_cli(str(beta_sweep), "--score", "standardized", "--out", str(tmp_path), "--no-plot") == 0
    data = json.loads((tmp_path / "selection.json").read_text())
    assert (data["score"], data["compare"], data["basis"]) == ("standardized", "conservative", "conservative")
    printed = capsys.readouterr().out
    # the fixture's components are constant: every candidate ties and the first one is kept
    assert f"chosen: trial trial_0_beta=0, beta 0, epoch {data['best_epoch']} (basis: conservative)" in printed
    assert "reason: highest DSE among the trials of the smallest beta (0)" in printed


def _as_ray_sweep(folder):
    """Mark a folder as a sweep (Tune's state file) whose own selection.json chose raw."""
    from dse_tune.runs import SELECTION_FILE, TUNER_STATE_FILE, load_sweep
    from dse_tune.selection import select_best, write_selection

    (folder / TUNER_STATE_FILE).write_bytes(b"tuner state")
    write_selection(select_best(load_sweep(folder), compare="raw", window=1), folder)
    return folder / SELECTION_FILE


def test_a_sweep_whose_selection_json_is_unreadable_is_one_error_line(beta_sweep, capsys):
    own = _as_ray_sweep(beta_sweep)
    for text in ("{not json", "[1, 2]"):
        own.write_text(text)
        assert run_cli(str(beta_sweep), "--no-plot") == 2
        assert capsys.readouterr().err.splitlines() == [
            f"error: cannot read the sweep's {own}: not a readable JSON object"
        ]


def test_select_on_a_sweep_reuses_its_comparison_and_keeps_its_file(beta_sweep, capsys):
    own = _as_ray_sweep(beta_sweep)
    before = own.read_text()
    assert run_cli(str(beta_sweep), "--no-plot") == 0
    assert own.read_text() == before  # the sweep's decision is kept
    printed = capsys.readouterr().out
    assert "reusing the sweep's recorded comparison (compare=raw, score=raw, window=1, top=3)" in printed
    data = json.loads((beta_sweep / "selection_cli.json").read_text())
    assert (data["compare"], data["window"], data["best_beta"]) == ("raw", 1, 1.0)
    assert data["best_trial"] == json.loads(before)["best_trial"]  # the same answer as the sweep

    # Told otherwise: a flag overrides the recorded comparison; --out writes selection.json there.
    assert run_cli(str(beta_sweep), "--compare", "conservative", "--no-plot") == 0
    assert json.loads((beta_sweep / "selection_cli.json").read_text())["best_beta"] == 0.0
    assert run_cli(str(beta_sweep), "--out", str(beta_sweep), "--no-plot") == 0
    assert json.loads(own.read_text())["best_beta"] == 1.0  # rewritten on request only


def test_few_label_without_labels_is_one_error_line(tmp_path, capsys):
    run_dir = write_run(tmp_path / "run", [0.1, 0.5, 0.3], 0.0)
    assert run_cli(str(run_dir), "--compare", "few_label") == 2
    assert capsys.readouterr().err.splitlines() == [
        'error: compare="few_label" needs few-label scores (argument confirmed)'
    ]


def test_select_on_a_sweep_keeps_the_sweeps_rescored_values(beta_sweep, capsys):
    # A sweep that rescored its candidates (rescored.json) and compared conservatively.
    from dse_tune.evaluation.rescore import load_rescored
    from dse_tune.runs import TUNER_STATE_FILE, load_sweep
    from dse_tune.selection import select_best, write_selection

    (beta_sweep / "rescored.json").write_text(json.dumps(HELD_OUT))
    (beta_sweep / TUNER_STATE_FILE).write_bytes(b"tuner state")
    rescored = load_rescored(beta_sweep / "rescored.json")
    sweeps_own = select_best(load_sweep(beta_sweep), rescored=rescored, compare="conservative")
    write_selection(sweeps_own, beta_sweep)

    assert run_cli(str(beta_sweep), "--no-plot") == 0
    assert "rescored=rescored.json" in capsys.readouterr().out
    data = json.loads((beta_sweep / "selection_cli.json").read_text())
    assert data["best_rescored"] == sweeps_own.best.chosen_rescored == 0.52
    assert data["best_checkpoint"] == json.loads((beta_sweep / "selection.json").read_text())["best_checkpoint"]


@pytest.mark.slow
def test_confirm_with_on_a_sweep_that_compared_conservatively_uses_the_labels(tmp_path, capsys, one_torch_thread):
    from dse_tune.runs import TUNER_STATE_FILE, load_sweep
    from dse_tune.selection import select_best, write_selection
    from tests.evaluation.test_few_label import write_colour_regions
    from tests.evaluation.tiny_runs import pretrain_sweep

    sweep = tmp_path / "sweep"
    pretrain_sweep(sweep / "runs")
    write_colour_regions(tmp_path / "labelled")
    (sweep / TUNER_STATE_FILE).write_bytes(b"tuner state")
    write_selection(select_best(load_sweep(sweep), compare="conservative"), sweep)

    assert run_cli(str(sweep), "--confirm-with", str(tmp_path / "labelled"), "--label-images", "8", "--no-plot") == 0
    data = json.loads((sweep / "selection_cli.json").read_text())
    assert (data["compare"], data["basis"], data["parameters"]["labels_used"]) == ("few_label", "few_label", 8)
    assert "compare=conservative" not in capsys.readouterr().out

"""``dse-tune rescore``: rescore a real tiny sweep, then select with the file; one-line
errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dse_tune.cli.main import main
from tests.evaluation.tiny_runs import pretrain_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Two real runs (beta 0 and 0.1) pretrained on synthetic scenes, 3 epochs each."""
    return pretrain_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.mark.slow
def test_command_line_rescore_then_select(sweep, tmp_path, capsys):
    out = tmp_path / "held_out.json"
    assert main(["rescore", str(sweep), "--held-out-size", "8", "--out", str(out), "--no-progress"]) == 0
    assert "next: dse-tune select" in capsys.readouterr().out
    select = ["select", str(sweep), "--rescored", str(out), "--out", str(tmp_path), "--no-plot"]
    # By default the rescored values choose within each run; betas are compared conservatively.
    assert main(select) == 0
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert selection["compare"] == "conservative" and Path(selection["best_checkpoint"]).is_file()
    # Asked for, the rescored values decide across runs too.
    assert main([*select, "--compare", "rescored"]) == 0
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert selection["compare"] == "rescored" and Path(selection["best_checkpoint"]).is_file()


@pytest.mark.slow
def test_the_old_probe_size_option_still_works_with_a_warning(sweep, tmp_path, capsys):
    out = tmp_path / "rescored.json"
    argv = ["rescore", str(sweep), "--probe-size", "4", "--image-size", "24x40", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    description = json.loads((tmp_path / "rescored_probe.json").read_text())
    assert description["held_out_probe"]["size"] == 4 and description["held_out_probe"]["image_size"] == [24, 40]
    captured = capsys.readouterr()
    assert "rescored" in captured.out
    assert "warning: --probe-size is deprecated" in captured.err and "--held-out-size" in captured.err


def test_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["rescore", str(tmp_path / "empty"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run with DSE evaluations") and len(err.splitlines()) == 1
    assert main(["rescore", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["rescore", str(tmp_path), "--held-out-size", "0"])
    assert exit_info.value.code == 2
    assert "must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["rescore", str(tmp_path), "--image-size", "12x"])
    assert exit_info.value.code == 2 and "--image-size: image size '12x'" in capsys.readouterr().err
    assert main(["rescore", str(tmp_path), "--device", "gpu0"]) == 2
    assert capsys.readouterr().err.startswith("error: --device gpu0: not a torch device")

"""Held-out rescoring on a real tiny sweep: two runs (beta 0 and 0.1) pretrained on
synthetic scenes, 3 epochs each, tiny ViTs; and reading ``rescored.json`` back."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dse_tune.evaluation.rescore import (
    HELD_OUT_SET_FILE,
    RESCORED_FILE,
    load_rescored,
    rescore_sweep,
    score_held_out_tokens,
)
from dse_tune.runs import load_sweep
from dse_tune.selection import select_best, select_run
from tests.evaluation.tiny_runs import HELD_OUT


def candidate_checkpoints(root: Path) -> set[str]:
    paths = set()
    for run in load_sweep(root):
        for position in select_run(run).candidates:
            paths.add(str(run.checkpoint_path(run.evaluations[position])))
    return paths


@pytest.mark.slow
def test_every_candidate_gets_a_finite_deterministic_score(sweep, tmp_path):
    scores = ("dse", "rankme", "alpha_req")
    first = rescore_sweep(
        sweep, held_out_size=HELD_OUT, scores=scores, out=tmp_path / "a.json", progress=False
    )
    second = rescore_sweep(
        sweep, held_out_size=HELD_OUT, scores=scores, out=tmp_path / "b.json", progress=False
    )
    assert set(first) == candidate_checkpoints(sweep) and len(first) >= 2
    assert all(math.isfinite(value) for value in first.values())
    assert first == second  # same images, same seed, same checkpoints: same numbers
    rows = json.loads((tmp_path / "a.json").read_text())
    assert rows == [
        {**row, "seconds": rows[i]["seconds"]}
        for i, row in enumerate(json.loads((tmp_path / "b.json").read_text()))
    ]
    for row in rows:
        assert row["problem"] is None
        assert all(
            math.isfinite(row[key]) for key in ("dse", "inter", "dim", "rankme", "alpha_req")
        )
        assert row["probe"] == rows[0]["probe"] and row["seed"] == 0
    # The held-out score is not the monitored one (other images).
    assert all(row["dse"] != row["monitored_dse"] for row in rows)
    by_rankme = rescore_sweep(
        sweep, held_out_size=HELD_OUT, select_by="rankme", out=tmp_path / "c.json", progress=False
    )
    assert by_rankme == {
        str(Path(tmp_path, row["checkpoint"]).resolve()): row["rankme"] for row in rows
    }


@pytest.mark.slow
def test_select_best_with_rescoring_returns_an_existing_checkpoint(sweep, tmp_path):
    out = tmp_path / RESCORED_FILE
    rescored = rescore_sweep(sweep, held_out_size=HELD_OUT, out=out, progress=False)
    runs = load_sweep(sweep)
    result = select_best(runs, rescored=rescored, compare="rescored")
    assert result.compare == "rescored" and result.best is not None
    assert result.best_checkpoint.is_file()
    assert result.best.chosen_rescored == max(t.chosen_rescored for t in result.trials)
    # The file says the same to the selector (paths relative to the file).
    from_file = select_best(runs, rescored=load_rescored(out), compare="rescored")
    assert from_file.best_checkpoint == result.best_checkpoint
    description = json.loads((tmp_path / HELD_OUT_SET_FILE).read_text())
    assert description["held_out_probe"]["size"] == HELD_OUT
    assert description["settings"]["seed"] == 0


@pytest.mark.slow
def test_a_broken_checkpoint_is_reported_and_the_rest_scored(sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    run = load_sweep(copy)[0]
    broken = run.checkpoint_path(run.evaluations[select_run(run).candidates[0]])
    broken.write_bytes(b"not a checkpoint")
    rescored = rescore_sweep(copy, held_out_size=HELD_OUT, progress=False)
    assert str(broken) not in rescored
    assert set(rescored) == candidate_checkpoints(copy) - {str(broken)}
    rows = {row["checkpoint"]: row for row in json.loads((copy / RESCORED_FILE).read_text())}
    bad = rows[str(broken.relative_to(copy))]
    assert bad["dse"] is None and "cannot score" in bad["problem"]


def test_sick_tokens_give_none_and_the_reason_from_the_tolerant_scorer():
    scores = ("dse", "rankme", "alpha_req")
    healthy = score_held_out_tokens(torch.randn(16, 16, 8), scores=scores)
    assert healthy["problem"] is None and math.isfinite(healthy["dse"]) and math.isfinite(healthy["rankme"])
    diverged = score_held_out_tokens(torch.full((16, 16, 8), float("nan")), scores=scores)
    assert diverged["dse"] is None and all(diverged[name] is None for name in ("inter", "dim", "rankme", "alpha_req"))
    assert diverged["problem"].startswith("DSE: dense features contain NaN or infinite values")
    collapsed = score_held_out_tokens(torch.ones(16, 16, 8))
    assert collapsed["dse"] is None and collapsed["problem"].startswith("DSE: collapsed features")
    with pytest.raises(ValueError, match="unknown score"):
        score_held_out_tokens(torch.randn(16, 16, 8), scores=("dse", "lidar"))


HELD_OUT_VALUES = {
    "trial_0_beta=0/checkpoints/epoch=0020.ckpt": 0.52,
    "trial_1_beta=0.1/checkpoints/epoch=0020.ckpt": 0.50,
    "trial_1_beta=0.1/checkpoints/epoch=0060.ckpt": 0.58,
    "ray/trial_2_beta=1/checkpoints/epoch=0030.ckpt": 0.40,
}


def test_load_rescored_both_formats(tmp_path, beta_sweep):  # noqa: F811  (fixture)
    as_dict = tmp_path / "sweep" / "rescored.json"
    as_dict.write_text(json.dumps(HELD_OUT_VALUES))
    as_list = tmp_path / "rescored_list.json"
    as_list.write_text(
        json.dumps(
            [{"checkpoint": f"sweep/{k}", "dse": v} for k, v in HELD_OUT_VALUES.items()]
            + [{"checkpoint": "sweep/x.ckpt", "dse": None}]
        )
    )
    for path in (as_dict, as_list):
        result = select_best(load_sweep(beta_sweep), rescored=load_rescored(path), compare="rescored")
        assert (result.best_beta, result.best_epoch) == (0.1, 60)
    assert len(load_rescored(as_list)) == 4  # null values dropped
    as_list.write_text('[{"checkpoint": "a"}]')
    with pytest.raises(ValueError, match="entry 0 needs 'checkpoint' and 'dse'"):
        load_rescored(as_list)


def test_reading_rescored_values_loads_no_torch():
    # dse-tune select --rescored reads a JSON file: it must stay quick.
    code = "import sys, dse_tune.evaluation.rescore; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

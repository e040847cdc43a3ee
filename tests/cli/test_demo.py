"""``dse-tune demo``: the embedded end-to-end job, run here on a tinier space."""

from __future__ import annotations

import argparse
import json
import os

import pytest

import dse_tune.cli.demo as demo
from dse_tune.cli import main
from dse_tune.search_space import load_search_space
from tests.sweep_helpers import SPACES, write_space


def test_the_default_demo_space_is_the_shipped_one():
    assert demo.default_space() == SPACES / demo.SPACE_NAME
    spec = load_search_space(demo.default_space())
    betas = spec.dimensions["dse_beta"].values
    assert spec.total_trials >= 4 and len(betas) == 2
    assert spec.fixed["data"] == "synthetic" and spec.resources.gpu == 0
    assert spec.fixed["image_size"] == 32 and spec.fixed["patch_size"] == 8


def test_a_missing_space_is_named(tmp_path, capsys):
    # Through dse-tune's one error path: `error: ...` on stderr, exit 2.
    assert main(["demo", "--space", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'nope.yaml'}: cannot read the search space: no such file" in capsys.readouterr().err


def test_the_label_check_is_skipped_without_a_choice(tmp_path, capsys):
    assert demo.chosen_checkpoint(tmp_path) is None
    assert demo.label_check(tmp_path) is None
    assert "label check skipped: the sweep chose no checkpoint" in capsys.readouterr().out
    assert parse(["--no-label-check"]).no_label_check


def parse(argv):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    os.environ["TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_demo_sweeps_selects_and_says_what_it_chose(ray_session, tmp_path, capsys):
    space = write_space(
        tmp_path / "demo_tiny.yaml",
        pretrain={"epochs": 2, "dse_beta": {"grid": [0.0, 0.1]}, "lr": {"grid": [5.0e-4, 1.0e-3]}},
        search={"algorithm": "random", "max_concurrent_trials": 2},
        pruner={"type": "dse_degradation", "warmup": 5},
    )
    out = tmp_path / "demo"
    assert demo.run(parse(["--space", str(space), "--out", str(out), "--quiet"])) == 0
    printed = capsys.readouterr().out

    selection = json.loads((out / "selection.json").read_text())
    assert len(selection["trials"]) == 4
    assert {t["beta"] for t in selection["trials"]} == {0.0, 0.1}
    # The safe default (issue 11): beta is not chosen by a score that beta itself
    # raises; the smallest beta is kept, and the decision is printed with its basis.
    assert selection["compare"] == "conservative" and selection["best_beta"] == 0.0
    assert "(basis: conservative)" in printed
    assert f"chosen checkpoint: {selection['best_checkpoint']}" in printed
    assert f"chosen beta: {selection['best_beta']:.4g}" in printed
    assert f"wrote {out.resolve() / 'selection.json'}" in printed
    assert f"wrote {out.resolve() / 'selection.png'}" in printed
    assert "trial-epochs run: 8 of 8 without pruning" in printed
    # The label check closes the demo: chosen, last, best and random init with their
    # standard errors, and one verdict: right, wrong, or the selector's "no reliable
    # degradation" confirmed by the labels.
    assert "label check (linear probe mIoU in points, +- standard error over the 32 scored images):" in printed
    assert "random init" in printed
    closing = printed[printed.index("label check (") :].splitlines()
    verdicts = [line for line in closing if line.startswith(("the decision was ", "no reliable degradation: kept"))]
    assert len(verdicts) == 1, closing
    assert "demo finished in" in printed

    # Run again on the same folder: the finished sweep is kept, only selection reruns.
    attempts = {p.name: json.loads((p / "trial.json").read_text())["attempts"] for p in (out / "runs").iterdir()}
    assert demo.run(parse(["--out", str(out), "--quiet"])) == 0
    again = capsys.readouterr().out
    assert f"{out} already holds the demo sweep: continuing it" in again
    assert f"chosen checkpoint: {selection['best_checkpoint']}" in again
    assert attempts == {p.name: json.loads((p / "trial.json").read_text())["attempts"] for p in (out / "runs").iterdir()}


def test_a_demo_folder_of_another_search_space_is_set_aside_not_continued(tmp_path, capsys):
    from dse_tune.sweeps import SPACE_COPY
    from dse_tune.runs import TUNER_STATE_FILE

    spec = load_search_space(demo.default_space()).to_dict()
    out = tmp_path / "demo"
    out.mkdir()
    (out / TUNER_STATE_FILE).write_bytes(b"")
    import yaml

    (out / SPACE_COPY).write_text(yaml.safe_dump(spec))
    assert demo._set_aside_another_space(out, demo.default_space()) is False  # the same space: continue
    assert out.is_dir()
    spec["pretrain"]["epochs"] = 15  # as an older dse_tune's demo was
    (out / SPACE_COPY).write_text(yaml.safe_dump(spec))
    assert demo._set_aside_another_space(out, demo.default_space()) is True
    (aside,) = tmp_path.glob("demo.previous-*")
    assert not out.exists() and (aside / TUNER_STATE_FILE).is_file()  # moved, nothing lost
    assert "it differs in: pretrain); moved it to" in capsys.readouterr().out
    # A sweep of the user's own (differently named) space is continued when no --space is given.
    out.mkdir()
    (out / TUNER_STATE_FILE).write_bytes(b"")
    (out / SPACE_COPY).write_text(yaml.safe_dump({**spec, "name": "my_demo"}))
    assert demo._set_aside_another_space(out, demo.default_space(), explicit=False) is False
    assert demo._set_aside_another_space(out, demo.default_space(), explicit=True) is True
    assert len(list(tmp_path.glob("demo.previous-*"))) == 2  # both kept, even within one second

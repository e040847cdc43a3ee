"""The label check of a decision, on a tiny real sweep: the selector's own "last" and
"DSE's pick", standard errors beside every value, and the selector's verdict set beside
what the labels say."""

from __future__ import annotations

import math

import pytest

from dse_tune.decision import run_choice
from dse_tune.evaluation.label_check import check_choice, format_label_check
from dse_tune.runs import load_sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"images_per_split": 8, "progress": False, "linear_probe_kwargs": {"steps": 5}}


@pytest.mark.slow
def test_the_check_sets_the_chosen_checkpoint_beside_last_best_and_random_init(sweep):
    runs = load_sweep(sweep)
    first = runs[0]
    chosen = first.checkpoint_path(first.evaluations[0])
    check = check_choice(sweep, chosen, **FAST)
    choice = run_choice(first)  # the selector's own latest and DSE pick
    assert check["chosen"]["run"] == first.name and check["chosen"]["epoch"] == first.evaluations[0].epoch
    assert check["last"]["run"] == first.name and check["last"]["epoch"] == first.evaluations[choice.latest].epoch
    if choice.best != 0:
        assert check["dse_pick"]["epoch"] == first.evaluations[choice.best].epoch
    mious = [check[key]["miou"] for key in ("chosen", "last", "best", "random_init")]
    assert all(0.0 <= m <= 1.0 for m in mious)
    assert check["best"]["miou"] >= max(check["chosen"]["miou"], check["last"]["miou"])
    assert check["right"] == (check["best"]["miou"] - check["chosen"]["miou"] <= 0.01)
    # Every value carries its spread over the 8 scored images; the gap is paired.
    assert all(math.isfinite(check[key]["se"]) and check[key]["se"] >= 0 for key in ("chosen", "last", "best"))
    assert check["gap"]["difference"] == pytest.approx(check["chosen"]["miou"] - check["best"]["miou"])
    assert check["declared"] is None and check["labels_agree"] is None  # no decision given
    text = format_label_check(check)
    assert "chosen checkpoint" in text and "random init" in text and " +- " in text
    assert ("the decision was right" in text) == check["right"]


@pytest.mark.slow
def test_the_selector_keeping_the_last_checkpoint_is_judged_against_the_labels(sweep):
    runs = load_sweep(sweep)
    run = runs[0]
    latest = run_choice(run).latest
    kept = run.checkpoint_path(run.evaluations[latest])
    reason = "no reliable degradation: evaluation 1 beats the latest by 0.001, within 2 standard errors; kept the latest"
    check = check_choice(sweep, kept, decision={"reliability": "within_noise", "reliability_reason": reason}, **FAST)
    assert check["declared"] == reason
    text = format_label_check(check)
    assert f"the selector said: {reason}" in text
    if check["dse_pick"] is not None:  # DSE preferred another checkpoint: do the labels agree?
        pick, last = check["dse_pick"]["miou"], check["last"]["miou"]
        assert check["labels_agree"] == (pick - last <= 0.01)
    # A verdict that kept DSE's own pick declares nothing.
    assert check_choice(sweep, kept, decision={"reliability": "reliable", "reliability_reason": "x"}, **FAST)[
        "declared"] is None


def _check(chosen, best, last=None, pick=None, declared=None):
    entry = lambda run, epoch, miou: {"run": run, "epoch": epoch, "miou": miou, "se": 0.004}  # noqa: E731
    return {
        "chosen": entry("a", 79, chosen), "last": entry("a", 79, chosen if last is None else last),
        "dse_pick": None if pick is None else entry("a", 39, pick), "best": entry("b", 74, best),
        "random_init": {"run": "a", "epoch": None, "miou": 0.13},
        "gap": {"difference": chosen - best, "se": 0.005}, "right": best - chosen <= 0.01,
        "declared": declared, "labels_agree": None if pick is None or declared is None else pick - chosen <= 0.01,
        "pick_vs_last": {"difference": None if pick is None else pick - chosen, "se": 0.003},
        "tolerance": 0.01, "images_per_split": 32,
    }


def test_the_verdict_lines():
    said = "no reliable degradation: evaluation 7 beats the latest by 0.02, within 2 standard errors; kept the latest"
    right = format_label_check(_check(0.192, 0.200, pick=0.186, declared=said))
    assert right.splitlines()[-2:] == [
        f"the selector said: {said}",
        "the decision was right: the chosen checkpoint is within 1.0 mIoU points of the best (-0.8 +- 0.5)",
    ]
    assert "  DSE's pick (not kept)  18.6 +- 0.4  a, epoch 39" in right
    # Declared and confirmed by the labels, though another trial's checkpoint was better still.
    agreed = format_label_check(_check(0.185, 0.200, pick=0.186, declared=said)).splitlines()[-1]
    assert agreed.startswith("no reliable degradation: kept the last checkpoint, and the labels agree (DSE's pick "
                             "minus the last: +0.1 +- 0.3 points, not more than 1.0)")
    # Declared, but the labels say DSE's pick was better: the decision was wrong.
    wrong = format_label_check(_check(0.170, 0.200, pick=0.195, declared=said)).splitlines()[-1]
    assert wrong == "the decision was wrong: the chosen checkpoint is more than 1.0 mIoU points below the best (-3.0 +- 0.5)"
    # Rescored values chose against the trial's own noise-aware rule: the check shows that rule's reason.
    overridden = {**_check(0.186, 0.200), "run_choice": said}
    assert f"the trial's own DSE rule, overridden by the values that chose: {said}" in format_label_check(overridden)


@pytest.mark.slow
def test_a_checkpoint_outside_the_sweep_is_named(sweep, tmp_path):
    with pytest.raises(ValueError, match="nowhere.ckpt is not a checkpoint of a run below"):
        check_choice(sweep, tmp_path / "nowhere.ckpt", **FAST)

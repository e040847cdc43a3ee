"""One decision path: the rule's peak, the tracker's best, the selector, the validation
report and the benchmark agree on random histories (a seeded generator: hypothesis is
not installed)."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import random
from pathlib import Path

import pytest

from dse_tune.decision import (
    CANDIDATE_TOP,
    CANDIDATE_WINDOW,
    choose_checkpoint,
    is_untrained,
    run_choice,
    scatter_noise,
    standardized_series,
)
from dse_tune.degradation import DegradationRule, first_stop_index
from dse_tune.evaluation.report import selection_summary
from dse_tune.metrics.standardize import standardize_dse
from dse_tune.runs import Evaluation, RunRecord
from dse_tune.selection import select_best, select_run
from dse_tune.tracker import DSETracker

ROOT = Path(__file__).resolve().parents[1]


def random_run(rng: random.Random, name: str = "r") -> RunRecord:
    """A history that rises, dips, plateaus or falls, with or without noise and an
    untrained first evaluation."""
    length = rng.randint(1, 14)
    value, values = rng.uniform(-1, 1), []
    for _ in range(length):
        value += rng.choice([0.1, 0.05, 0.0, -0.05, -0.15]) * rng.random()
        values.append(round(value, 3))
    noise = [rng.choice([0.0, 0.01, 0.05]) for _ in values] if rng.random() < 0.6 else [None] * length
    steps = [rng.choice([0, 10]) if i == 0 else 10 * (i + 1) for i in range(length)]
    return RunRecord.from_values(name, values, noise=noise, global_steps=steps,
                                 checkpoints=[f"c{i}.pt" for i in range(length)])


def stop_prefix(run: RunRecord, rule: DegradationRule) -> RunRecord | None:
    """The run cut where the rule stops it (fed one evaluation at a time), or None."""
    stop = first_stop_index(run.dse, rule, noise=run.dse_noise, first_untrained=run.first_untrained)
    return None if stop is None else dataclasses.replace(run, evaluations=run.evaluations[: stop + 1])


@pytest.mark.parametrize("seed", range(300))
def test_every_consumer_of_a_history_makes_the_same_choice(seed):
    rng = random.Random(seed)
    run = random_run(rng)
    choice = run_choice(run)
    chosen_index = None if choice.chosen is None else run.evaluations[choice.chosen].index
    # the selector, alone and across runs
    assert select_run(run).chosen == choice.chosen
    assert select_best([run]).best.chosen == choice.chosen
    # the run record and the tracker
    assert getattr(run.chosen, "index", None) == chosen_index
    tracker = DSETracker(rule=DegradationRule())
    for evaluation in run.evaluations:
        tracker.record(evaluation)
    assert getattr(tracker.best, "index", None) == chosen_index
    # the validation report
    rows = [{"index": e.index, "epoch": e.epoch, "miou": rng.random()} for e in run.evaluations]
    assert selection_summary(run, rows)["selected"]["index"] == chosen_index
    # the untrained first evaluation is kept only when nothing later is finite
    if choice.chosen == 0 and len(run.evaluations) > 1:
        assert not is_untrained(run.evaluations[0])


@pytest.mark.parametrize("seed", range(300))
def test_a_run_the_rule_stops_keeps_the_rules_peak(seed):
    rng = random.Random(1000 + seed)
    rule = DegradationRule(warmup=rng.randint(0, 5), patience=rng.randint(1, 3))
    stopped = stop_prefix(random_run(rng), rule)
    if stopped is None:
        return
    decision = rule.decide(stopped.dse, noise=stopped.dse_noise, first_untrained=stopped.first_untrained)
    assert decision.stop
    choice = run_choice(stopped)
    # the same checkpoint; without recorded noise the choice says it could not weigh the drop
    expected = "reliable" if stopped.dse_noise is not None else "noise_unknown"
    assert (choice.chosen, choice.verdict) == (decision.peak_index, expected), decision.reason
    assert select_best([stopped]).best.chosen == decision.peak_index


def test_the_issue_history_gets_one_answer_from_select_and_validate():
    # [0.9, 0.5, 0.6, 0.4]: select chose index 2, validate index 0 before issue 17.
    values = [0.9, 0.5, 0.6, 0.4]
    rows = [{"index": i, "epoch": i, "miou": 0.1 * i} for i in range(4)]
    for steps in ([None] * 4, [0, 10, 20, 30]):
        run = RunRecord.from_values("r", values, global_steps=steps)
        chosen = select_best([run]).best.chosen
        assert selection_summary(run, rows)["selected"]["index"] == chosen == (2 if steps[0] == 0 else 0)


def test_the_benchmark_applies_the_selector():
    spec = importlib.util.spec_from_file_location("selection_rules", ROOT / "benchmarks" / "selection_rules.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [{"index": i, "epoch": 3 * i, "global_step": 30 * (i + 1), "dse_monitored": v, "miou": 0.2}
            for i, v in enumerate([0.1, 0.5, 0.3, 0.45, 0.44, 0.46, 0.42])]
    run = bench.record("r", {"beta": 0.0, "rows": rows})
    assert run.evaluations[0].noise == scatter_noise([r["dse_monitored"] for r in rows])
    assert select_best([run]).best.chosen == run_choice(run).chosen


def test_noise_and_the_ranking_verdict_keep_the_latest():
    values = [0.1, 0.5, 0.3, 0.45]
    assert choose_checkpoint(values).chosen == 1
    within = choose_checkpoint(values, noise=[0.03] * 4)
    assert (within.chosen, within.verdict) == (3, "within_noise")
    assert within.reason.startswith("no reliable degradation")
    unreliable = choose_checkpoint(values, ranking_reliable=False, ranking_reason="tau flips with the probe size")
    assert (unreliable.chosen, unreliable.verdict) == (3, "not_reliable")
    assert unreliable.reason.startswith("not reliable: confirm with a few labels (tau flips")
    run = RunRecord.from_values("r", values)
    verdict = select_best([run], ranking={"r": (False, "split-half")})
    assert (verdict.best.chosen, verdict.best.verdict) == (3, "not_reliable")
    recorded = dataclasses.replace(run, ranking_reliable=False, ranking_reason="recorded")
    assert select_best([recorded]).best.reliability.startswith("not reliable: confirm with a few labels (recorded)")


def test_a_drop_without_recorded_noise_keeps_dse_pick_and_says_the_noise_is_unknown():
    # dino_s0's history in the probe-regime study recorded no dse_noise: its drop was
    # labelled "reliable" before; the choice is the same, the verdict no longer claims it.
    values = [0.5, 0.44, 0.45, 0.43, 0.46, 0.42, 0.44]
    unknown = choose_checkpoint(values)
    assert (unknown.chosen, unknown.verdict) == (0, "noise_unknown")
    scatter_bar = 2 * math.sqrt(2) * scatter_noise(values)
    assert unknown.reason.endswith(f"not known whether beyond it (the run's own scatter puts 2 standard errors at {scatter_bar:.3g})")
    assert "scatter" not in choose_checkpoint(values[:4]).reason  # too few values for a hint
    # recorded noise for the two compared values decides, as before
    assert choose_checkpoint(values, noise=[0.001] * 7).verdict == "reliable"
    assert choose_checkpoint(values, noise=[None] * 6 + [0.05]).verdict == "within_noise"
    # rescored values still choose among the candidates of such a run (only KEPT_LATEST blocks them)
    run = RunRecord.from_values("r", values, checkpoints=[f"c{i}.pt" for i in range(7)])
    rescored = {"c0.pt": 0.1, "c4.pt": 0.9}  # the candidates: evaluations 0 and 4
    selection = select_run(run, rescored=rescored)
    assert selection.choice.verdict == "noise_unknown" and selection.chosen == 4


def test_nothing_finite_chooses_nothing():
    choice = choose_checkpoint([math.nan, None])
    assert (choice.chosen, choice.verdict, choice.candidates) == (None, "none", ())


def test_untrained_means_step_zero_not_epoch_zero():
    assert is_untrained(Evaluation(0, 0.1, epoch=None, global_step=0))
    assert not is_untrained(Evaluation(0, 0.1, epoch=0, global_step=None))  # DINO's checkpoint0000.pth
    assert not is_untrained(Evaluation(0, 0.1, epoch=0, global_step=63))


def test_the_standardised_formula_is_shared():
    history = [{"inter": 1.0 + 0.1 * i, "intra_image": 0.5, "intra_batch": 0.4 - 0.05 * i, "dim": 0.3 + 0.02 * i * i}
               for i in range(5)]
    relevance = [h["inter"] - (h["intra_image"] + h["intra_batch"]) / 2 for h in history]
    expected = standardized_series(relevance, [h["dim"] for h in history])
    assert standardize_dse(history).standardized == pytest.approx(expected)


def test_defaults_are_the_papers():
    assert (CANDIDATE_WINDOW, CANDIDATE_TOP) == (2, 3)
    assert DegradationRule() == DegradationRule(warmup=5, patience=3, min_drop=0.1)


def test_scatter_noise_needs_five_values_and_ignores_a_linear_trend():
    assert scatter_noise([0.1, 0.2, 0.3, 0.4]) is None
    assert scatter_noise([0.1 * i for i in range(10)]) == pytest.approx(0.0, abs=1e-12)


def test_a_verdict_that_says_it_in_full_is_not_said_twice():
    from dse_tune.reliability import ranking_verdict

    verdict = ranking_verdict([0.30, 0.35, 0.41, 0.44, 0.52, 0.55], [0.10, 0.14, 0.19, 0.22, 0.29, 0.33])
    choice = choose_checkpoint([0.30, 0.35, 0.41, 0.44, 0.52, 0.50], ranking_reliable=False, ranking_reason=verdict.reason)
    assert choice.reason.startswith("not reliable: DSE moves with its cluster term")
    assert choice.reason.count("confirm with a few labels") == 1 and choice.reason.endswith("kept the latest (evaluation 5)")

"""DSETracker: the framework-free monitor (plain loops, and the Lightning monitor's core)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dse_tune.degradation import DegradationDecision, DegradationRule, first_stop_index
from dse_tune.runs import read_run
from dse_tune.tracker import DSETracker

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scripted(values):
    remaining = list(values)

    def score(tokens):
        value = remaining.pop(0)
        return SimpleNamespace(score=value, inter=value, intra_image=0.5, intra_batch=0.25, dim=0.1)

    return score


def tokens():
    return torch.randn(16, 16, 8, generator=torch.Generator().manual_seed(0))


class Patchify(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, stride=4)
        self.dropout = nn.Dropout(0.5)

    def forward(self, images):
        return self.dropout(self.conv(images)).flatten(2).transpose(1, 2)


def test_a_plain_loop_records_saves_and_stops_where_the_rule_says(tmp_path):
    falling = [0.2, 0.6, 1.0, 0.9, 0.7, 0.5, 0.4, 0.3]
    rule = DegradationRule(warmup=3, patience=2, min_drop=0.1)
    tracker = DSETracker(run_dir=tmp_path, every_n=2, rule=rule, scorer=scripted(falling), config={"lr": 0.1})
    stopped_at = None
    for step in range(2 * len(falling)):
        decision = tracker.step(
            tokens(), step=step, checkpoint=f"checkpoints/{step}.pt", save=lambda path: path.write_bytes(b"w")
        )
        if decision.stop:
            stopped_at = step
            break
    expected = first_stop_index(falling, rule)
    assert stopped_at == 2 * expected  # evaluated at even steps only
    run = read_run(tmp_path)
    assert len(run.evaluations) == expected + 1 and run.stopped_early and "degraded" in run.stop_reason
    assert run.best.checkpoint == "checkpoints/4.pt" and (tmp_path / "checkpoints/4.pt").is_file()
    assert run.config == {"lr": 0.1}


def test_a_model_is_scored_in_eval_mode_without_grad_and_its_modes_restored():
    model = Patchify().train()
    images = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    tracker = DSETracker(images, seed=0)
    decision = tracker.step(model, step=0)
    assert model.training and model.dropout.training
    assert decision.stop is False and decision.reason == "no stopping rule"
    model.eval()
    with torch.no_grad():
        from dse_tune import dse

        expected = dse(model(images), seed=0).score
    assert tracker.values == [pytest.approx(expected, rel=1e-6)]


def test_nan_features_are_recorded_with_their_reason_and_never_raise(tmp_path):
    tracker = DSETracker(run_dir=tmp_path, warn=lambda message: None)
    tracker.step(tokens(), step=0)
    tracker.step(torch.full((16, 16, 8), math.nan), step=1)
    tracker.step(torch.ones(16, 16, 8), step=2)
    failures = [e.failure for e in read_run(tmp_path).evaluations]
    assert failures[0] is None
    assert failures[1] == "dense features contain NaN or infinite values"
    assert failures[2].startswith("collapsed features")
    assert tracker.best.index == 0


def test_listeners_hear_every_evaluation_and_can_stop_the_run(tmp_path):
    heard = []

    def pruner(evaluation, decision):
        heard.append((evaluation.index, decision.stop))
        if evaluation.index == 1:
            return DegradationDecision(True, "pruned: by the study", None, None, evaluation.index + 1)
        return None

    tracker = DSETracker(run_dir=tmp_path, scorer=scripted([0.1, 0.2, 0.3]))
    tracker.add_listener(pruner)
    first = tracker.step(tokens(), step=0)
    second = tracker.step(tokens(), step=1)
    assert (first.stop, second.stop, second.reason) == (False, True, "pruned: by the study")
    assert heard == [(0, False), (1, False)]
    run = read_run(tmp_path)
    assert run.stopped_early and run.stop_reason == "pruned: by the study"


def test_a_listener_sees_the_saved_checkpoint_and_the_written_history(tmp_path):
    seen = []

    def listener(evaluation, decision):
        seen.append(((tmp_path / evaluation.checkpoint).is_file(), len(read_run(tmp_path).evaluations)))

    tracker = DSETracker(run_dir=tmp_path, scorer=scripted([0.1, 0.2]))
    tracker.add_listener(listener)
    for step in range(2):
        tracker.step(tokens(), step=step, checkpoint=f"c{step}.pt", save=lambda path: path.write_bytes(b"w"))
    assert seen == [(True, 1), (True, 2)]


def test_restore_continues_a_saved_history_and_keeps_the_config():
    first = DSETracker(scorer=scripted([0.3, 0.1]), config={"a": 1})
    first.step(tokens(), step=0)
    first.step(tokens(), step=1)
    second = DSETracker(scorer=scripted([0.5]), config={"a": 2})
    second.restore(first.run.to_dict())
    second.step(tokens(), step=2)
    assert second.values == [0.3, 0.1, 0.5] and second.run.config == {"a": 2}
    assert [e.index for e in second.evaluations] == [0, 1, 2]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"probe_images": torch.zeros(3, 8, 8)}, ValueError, r"probe_images must be a \(P, 3, H, W\) tensor"),
        ({"every_n": 0}, ValueError, "every_n must be a positive integer, got 0"),
        ({"rule": object()}, TypeError, "decide"),
        ({"plot": True}, ValueError, "plot needs run_dir"),
    ],
)
def test_arguments_are_checked(kwargs, error, message):
    with pytest.raises(error, match=message):
        DSETracker(**kwargs)


def test_a_model_without_probe_images_is_refused():
    with pytest.raises(ValueError, match="no probe_images"):
        DSETracker().step(Patchify(), step=0)


def test_scoring_and_recording_split_for_distributed_callers(tmp_path):
    # Under DDP, rank 0 scores (score_evaluation) and every rank records the same
    # evaluation; only the writing, notifying rank writes files and calls listeners.
    scorer = DSETracker(run_dir=tmp_path, scorer=scripted([0.4]))
    evaluation = scorer.score_evaluation(tokens(), epoch=0, global_step=2)
    assert (evaluation.index, evaluation.dse, evaluation.global_step) == (0, 0.4, 2) and scorer.evaluations == ()
    other_rank = DSETracker(run_dir=tmp_path / "rank1")
    other_rank.writes_files = other_rank.notifies_listeners = False
    heard = []
    other_rank.add_listener(lambda e, d: heard.append(e.index))
    other_rank.record(evaluation)
    assert other_rank.values == [0.4] and heard == [] and not (tmp_path / "rank1").exists()


def test_tokens_of_a_subset_of_the_probe_set():
    model = nn.Conv2d(3, 8, 4, stride=4)
    tracker = DSETracker(torch.randn(6, 3, 16, 16), tokens_fn=lambda m, x: m(x).flatten(2).transpose(1, 2))
    everything = tracker.compute_tokens(model)
    torch.testing.assert_close(tracker.compute_tokens(model, tracker.probe_images[2:4]), everything[2:4])


def test_each_evaluation_records_its_noise_and_its_optimizer_step(tmp_path):
    tracker = DSETracker(run_dir=tmp_path)
    tracker.step(torch.randn(32, 16, 8, generator=torch.Generator().manual_seed(1)), step=0, global_step=25)
    tracker.step(torch.randn(32, 16, 8, generator=torch.Generator().manual_seed(2)), step=1)
    first, second = read_run(tmp_path).evaluations
    assert first.noise is not None and 0 < first.noise < 0.5 and second.noise is not None
    assert (first.epoch, first.global_step, second.epoch, second.global_step) == (0, 25, 1, None)


def test_a_drop_within_the_recorded_noise_does_not_stop_and_best_is_the_selectors(tmp_path):
    from dse_tune.runs import Evaluation
    from dse_tune.selection import select_best

    rule = DegradationRule(warmup=2, patience=2)
    values = [0.50, 0.52, 0.51, 0.505, 0.50, 0.498]
    quiet, noisy = DSETracker(rule=rule), DSETracker(rule=rule)
    for i, value in enumerate(values):
        quiet.record(Evaluation(i, value, epoch=i, global_step=10 * (i + 1)))
        noisy.record(Evaluation(i, value, epoch=i, global_step=10 * (i + 1), noise=0.01))
    assert quiet.stopped and not noisy.stopped
    assert quiet.best.index == 1 and noisy.best.index == 5  # within the noise: the latest
    assert noisy.best.index == select_best([noisy.run]).best.chosen_index


def test_an_untrained_first_evaluation_is_not_the_peak():
    from dse_tune.runs import Evaluation

    tracker = DSETracker(rule=DegradationRule(warmup=2, patience=2))
    for i, value in enumerate([0.9, 0.3, 0.5, 0.45, 0.4]):
        tracker.record(Evaluation(i, value, epoch=i, global_step=10 * i))  # the first at step 0
    assert tracker.last_decision.peak_index == 2 and tracker.best.index == 2

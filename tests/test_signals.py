"""Failure signatures: the two signatures, the listener, and their counts on the CamVid study."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dse_tune.runs import Evaluation, RunRecord
from dse_tune.signals import (
    COLLAPSE_SHARE,
    TIGHTENING,
    failure_signature_listener,
    failure_signatures,
    run_signatures,
    signature_warnings,
)

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def components(inter=0.5, intra=0.4, dim=0.3):
    return {"inter": inter, "intra_image": intra, "intra_batch": intra, "dim": dim}


def test_a_healthy_history_has_no_signature():
    history = [components(0.5, 0.45, 0.3), components(0.6, 0.4, 0.4), components(0.7, 0.45, 0.45)]
    assert failure_signatures(history) == []


def test_dimension_collapse_fires_once_at_the_first_collapsed_evaluation():
    history = [components(dim=0.7), components(dim=0.72), components(dim=0.5),
               components(dim=0.72 * COLLAPSE_SHARE * 0.9), components(dim=0.01)]
    found = failure_signatures(history)
    assert [(s.kind, s.position) for s in found] == [("dimension_collapse", 3)]
    assert "0.72" in found[0].message


def test_tight_clusters_is_relative_to_the_first_evaluation():
    # A constant ratio never fires, however small; a halving does.
    assert failure_signatures([components(1.0, 0.2)] * 5) == []
    history = [components(1.0, 0.8), components(1.0, 0.5), components(1.0, 0.8 * TIGHTENING * 0.95)]
    assert [(s.kind, s.position) for s in failure_signatures(history)] == [("tight_clusters", 2)]


def test_non_finite_and_missing_components_are_skipped():
    history = [{"dse": 0.3}, components(dim=math.nan), {"components": components(dim=0.5)}, components(dim=0.01)]
    assert [s.kind for s in failure_signatures(history)] == ["dimension_collapse"]


def test_evaluations_and_runs_are_read():
    evaluations = tuple(
        Evaluation(index=i, dse=0.5, epoch=3 * i, components=components(dim=d)) for i, d in enumerate((0.7, 0.6, 0.02))
    )
    run = RunRecord("collapsed", evaluations)
    found = run_signatures(run)
    assert (found[0].kind, found[0].epoch) == ("dimension_collapse", 6)
    assert found[0].to_dict()["position"] == 2
    assert set(signature_warnings([run, RunRecord("empty")])) == {"collapsed"}


def test_the_listener_warns_once_per_signature_and_never_stops():
    said = []
    listener = failure_signature_listener(said.append, run_name="r")
    for dim in (0.7, 0.6, 0.01, 0.01, 0.005):
        assert listener(Evaluation(index=0, dse=0.1, epoch=1, components=components(dim=dim)), None) is None
    assert len(said) == 1 and said[0].startswith("run r: dimension_collapse (epoch 1): M_dim fell")


def test_the_default_listener_uses_warnings():
    listener = failure_signature_listener()
    listener(components(dim=0.7), None)
    with pytest.warns(RuntimeWarning, match="dimension_collapse"):
        listener(components(dim=0.01), None)


def test_on_the_camvid_study_the_two_failed_runs_are_flagged_and_no_healthy_one():
    flagged = {}
    for path in sorted(RESULTS.glob("validation_camvid_*.json")):
        report = json.loads(path.read_text())
        rows = [{"epoch": r["epoch"], **{k: r[f"dse_monitored_{k}"] for k in ("inter", "intra_image", "intra_batch", "dim")}}
                for r in report["checkpoints"]]
        flagged[path.stem.removeprefix("validation_")] = {s.kind for s in failure_signatures(rows)}
    failed = ("camvid_mae_b0.1", "camvid_dino150_b0.1", "camvid_mae30_b0.1")
    assert len(flagged) >= 12 and set(failed) <= set(flagged)
    assert flagged["camvid_mae_b0.1"] == {"dimension_collapse", "tight_clusters"}
    assert flagged["camvid_dino150_b0.1"] == {"tight_clusters"}
    # mae30_b0.1 was run after the thresholds were set: an out-of-sample hit
    assert flagged["camvid_mae30_b0.1"] == {"tight_clusters"}
    assert all(not kinds for name, kinds in flagged.items() if name not in failed)


def test_the_listener_judges_the_whole_history_it_is_given():
    # A resumed run: the collapse is measured against the peak before the resume.
    run = RunRecord.from_values("resumed", [0.5, 0.5, 0.5])
    before = [dict(e.to_dict(), dim=0.7) for e in run.evaluations[:2]]
    after = dict(run.evaluations[2].to_dict(), dim=0.1)
    messages = []
    listener = failure_signature_listener(messages.append, history=lambda: [*before, after])
    listener(after, None)  # the only evaluation this listener hears
    assert len(messages) == 1 and "dimension_collapse" in messages[0]
    fresh = failure_signature_listener(messages.append)
    fresh(after, None)  # without the history: nothing to compare with
    assert len(messages) == 1

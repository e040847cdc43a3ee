"""The validation report's pure parts: random-init gains, p-values, reliability warnings."""

from __future__ import annotations

import pytest

from dse_tune.evaluation.report import MIN_CHECKPOINTS, reliability_warnings, run_summary
from dse_tune.runs import RunRecord


def _rows(mious):
    return [{"run": "r", "index": i, "epoch": i, "miou": m, "dse": 0.1 * i} for i, m in enumerate(mious)]


def test_run_summary_gives_each_checkpoint_its_gain_over_random_init():
    mious = [0.20, 0.25, 0.30, 0.28, 0.35, 0.33, 0.40, 0.38, 0.41]
    run = RunRecord.from_values("r", [0.1, 0.2, 0.3, 0.25, 0.4, 0.35, 0.5, 0.45, 0.55])
    rows = _rows(mious)
    summary = run_summary(run, rows, dse_seed=0, window=1, top=3, baseline={"miou": 0.22, "seed": 0, "problem": None})
    assert [r["gain_vs_random_init"] for r in rows] == pytest.approx([m - 0.22 for m in mious])
    assert summary["random_init"]["miou"] == 0.22
    assert summary["selection"]["gain_vs_random_init"] == pytest.approx(summary["selection"]["selected"]["miou"] - 0.22)
    # tau of DSE against mIoU with its p-value.
    assert summary["kendall_tau"]["dse"] > 0.5 and 0.0 < summary["kendall_p"]["dse"] < 0.05
    assert summary["spearman_p"]["dse"] < 0.05
    assert summary["probed"] == 9 >= MIN_CHECKPOINTS and reliability_warnings({"r": summary}) == []


def test_no_baseline_leaves_the_gains_empty():
    rows = _rows([0.2, 0.3])
    summary = run_summary(RunRecord.from_values("r", [0.1, 0.2]), rows, dse_seed=0, window=1, top=1)
    assert summary["random_init"] is None and all(r["gain_vs_random_init"] is None for r in rows)


def test_fewer_than_eight_checkpoints_and_a_missing_baseline_are_warned():
    per_run = {
        "short": {"probed": MIN_CHECKPOINTS - 1, "random_init": {"miou": 0.3, "problem": None}},
        "long": {"probed": MIN_CHECKPOINTS, "random_init": {"miou": None, "problem": "cannot build"}},
    }
    warnings = reliability_warnings(per_run)
    assert len(warnings) == 2
    assert warnings[0].startswith(f"run short: tau and rho over {MIN_CHECKPOINTS - 1} checkpoints (fewer than 8)")
    assert warnings[1] == "run long: no random-init baseline: cannot build"


def test_the_report_selects_what_select_chooses_and_says_how_reliable():
    from dse_tune.evaluation.report import selection_summary
    from dse_tune.runs import RunRecord
    from dse_tune.selection import select_best

    rows = [{"index": i, "epoch": i, "miou": m} for i, m in enumerate([0.30, 0.20, 0.25, 0.28])]
    # [0.9, 0.5, 0.6, 0.4]: select chose index 2 and validate index 0 before issue 17
    for steps, noise, expected, verdict in (
        ([None] * 4, None, 0, "noise_unknown"),  # no noise recorded: DSE's pick, unconfirmed
        ([0, 10, 20, 30], None, 2, "noise_unknown"),  # step 0: untrained, never kept
        ([0, 10, 20, 30], [0.01] * 4, 2, "reliable"),  # 0.6 beats 0.4 beyond the noise
        ([0, 10, 20, 30], [0.2] * 4, 3, "within_noise"),  # 0.6 beats 0.4 within the noise
    ):
        run = RunRecord.from_values("r", [0.9, 0.5, 0.6, 0.4], global_steps=steps, noise=noise)
        summary = selection_summary(run, rows)
        assert summary["selected"]["index"] == select_best([run]).best.chosen_index == expected
        assert summary["reliability"] == verdict
    assert summary["reliability_reason"].startswith("no reliable degradation")
    assert summary["gain_vs_last"] == 0.0

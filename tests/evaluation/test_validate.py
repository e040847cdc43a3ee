"""Validation's steps: load -> score -> report -> write, on a tiny real run; the
correlations and the selection summary on known rows."""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

import pytest

from dse_tune.evaluation.report import SCORE_NAMES, correlations, selection_summary
from dse_tune.evaluation.validate import (
    VALIDATION_JSON,
    load_labelled_data,
    load_runs,
    score_runs,
    validate,
    write_report,
)

PACKAGE = Path(__file__).resolve().parents[2] / "dse_tune"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_steps_compose_to_validate(tiny_run, tmp_path):
    runs, skipped, configs = load_runs(tiny_run)
    assert [run.name for run in runs] == ["dino"] and skipped == []
    assert configs["dino"]["image_size"] == 32
    sizes, splits_by_size = load_labelled_data(runs, configs, "synthetic", None, images_per_split=8)
    assert sizes == {"dino": "32"} and splits_by_size["32"].num_classes == 6
    rows = score_runs(
        runs, configs, sizes, splits_by_size, tmp_path, progress=False,
        linear_probe_kwargs={"steps": 5},
    )
    assert [row["index"] for row in rows["dino"]] == [0, 1, 2]
    assert all(0.0 <= row["miou"] <= 1.0 and row["problem"] is None for row in rows["dino"])
    assert all(math.isfinite(row["probe_train_loss"]) for row in rows["dino"])

    report = validate(tiny_run, "synthetic", tmp_path / "out", images_per_split=8, linear_probe_kwargs={"steps": 5},
                      plot=False, progress=False)
    assert report["protocol"]["probe"]["steps"] == 5  # the linear probe's settings are recorded
    assert json.loads((tmp_path / "out" / VALIDATION_JSON).read_text()) == report
    assert write_report(report, tmp_path / "again", plot=False) == tmp_path / "again" / VALIDATION_JSON


def test_the_report_has_the_random_init_baseline_gains_p_values_and_a_few_checkpoints_warning(
    tiny_run, tmp_path, capsys
):
    report = validate(tiny_run, "synthetic", tmp_path / "out", images_per_split=8, linear_probe_kwargs={"steps": 5},
                      progress=False)
    baseline = report["per_run"]["dino"]["random_init"]
    assert baseline["problem"] is None and 0.0 <= baseline["miou"] <= 1.0 and baseline["seed"] == 0
    assert report["random_init"] == {"dino": baseline["miou"]}
    for row in report["checkpoints"]:
        assert row["gain_vs_random_init"] == pytest.approx(row["miou"] - baseline["miou"])
    selection = report["per_run"]["dino"]["selection"]
    assert selection["gain_vs_random_init"] == pytest.approx(selection["selected"]["miou"] - baseline["miou"])
    # p-values beside tau, pooled and per run.
    assert set(report["kendall_p"]) == set(report["kendall_tau"]) == set(SCORE_NAMES)
    assert set(report["per_run"]["dino"]["spearman_p"]) == set(SCORE_NAMES)
    # 3 checkpoints: the warning is in the report and on stderr.
    warning = "run dino: tau and rho over 3 checkpoints (fewer than 8)"
    assert any(w.startswith(warning) for w in report["reliability_warnings"])
    assert any(w.startswith(warning) for w in report["warnings"])
    assert warning in capsys.readouterr().err
    assert (tmp_path / "out" / "validation.png").stat().st_size > 0


def test_the_random_init_baseline_is_the_same_for_the_same_architecture_and_seed(tiny_run):
    from dse_tune.evaluation.validate import random_init_baselines

    runs, _, configs = load_runs(tiny_run)
    sizes, splits_by_size = load_labelled_data(runs, configs, "synthetic", None, images_per_split=8)
    first = random_init_baselines(runs, configs, sizes, splits_by_size, linear_probe_kwargs={"steps": 5})
    again = random_init_baselines(runs, configs, sizes, splits_by_size, linear_probe_kwargs={"steps": 5})
    assert first == again and first["dino"]["miou"] is not None
    broken = random_init_baselines(runs, {"dino": {**configs["dino"], "method": "nope"}}, sizes, splits_by_size)
    assert broken["dino"]["miou"] is None and "cannot build or score a random-init model" in broken["dino"]["problem"]


def test_missing_image_size_names_the_run_and_the_option(tiny_run):
    runs, _, configs = load_runs(tiny_run)
    with pytest.raises(ValueError, match=r"run dino: config.json: the settings give neither probe_image_size nor image_size; pass --image-size"):
        load_labelled_data(runs, {"dino": {}}, "synthetic", None, images_per_split=8)


def test_selection_summary_compares_the_dse_choice_with_last_and_best():
    monitored = [0.1, 0.5, 0.3, 0.2, 0.4, 0.35]
    mious = [0.20, 0.40, 0.35, 0.30, 0.45, None]  # the linear probe did not score the last checkpoint
    rows = [{"index": i, "epoch": 10 * i + 9, "miou": m} for i, m in enumerate(mious)]
    summary = selection_summary(monitored, rows, window=1, top=3)
    assert [c["index"] for c in summary["candidates"]] == [1, 4]
    assert summary["selected"]["epoch"] == 19 and summary["selected"]["miou"] == 0.40
    assert summary["last"]["index"] == 4  # the last checkpoint with an mIoU
    assert summary["best"]["index"] == 4 and summary["best_candidate"]["index"] == 4
    assert summary["gain_vs_last"] == pytest.approx(-0.05)
    assert summary["gap_to_best"] == pytest.approx(0.05)


def test_best_miou_is_the_first_of_ties_and_skips_missing_values():
    rows = [{"index": i, "epoch": i, "miou": m} for i, m in enumerate([None, 0.3, float("nan"), 0.3, 0.1])]
    summary = selection_summary([0.1, 0.2, 0.3, 0.4, 0.5], rows, window=1, top=1)
    assert summary["best"]["index"] == 1 and summary["best"]["miou"] == 0.3
    nothing = selection_summary([0.1, 0.2], [{"index": 0, "miou": None}, {"index": 1, "miou": None}])
    assert nothing["best"]["index"] is None and nothing["gap_to_best"] is None


def test_correlations_are_none_when_undefined():
    rows = [{"dse": 1.0, "rankme_tokens": float(i), "miou": 0.1 * i} for i in range(4)]
    table = correlations(rows, scores=("dse", "rankme_tokens", "alpha_req_tokens"))
    assert table["dse"]["kendall_tau"] is None  # constant score
    assert table["rankme_tokens"]["kendall_tau"] == pytest.approx(1.0)
    assert table["rankme_tokens"]["spearman"] == pytest.approx(1.0)
    assert table["alpha_req_tokens"] == {"kendall_tau": None, "kendall_p": None, "spearman": None, "spearman_p": None, "n": 0}
    assert set(correlations(rows)) == set(SCORE_NAMES)


def test_module_imports_only_the_standard_library_at_top_level():
    source = PACKAGE / "evaluation" / "validate.py"
    tree = ast.parse(source.read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            # The core's standard-library-only modules keep the import light too.
            light = sys.stdlib_module_names | {"__future__", "dse_tune.decision", "dse_tune.degradation", "dse_tune.runs"}
            assert name in light or name.split(".")[0] in light, name

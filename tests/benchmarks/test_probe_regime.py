"""benchmarks/probe_regime.py analyse on the committed study files: the per-run table of
what the default decision does, judged against issue 17's bar."""

from __future__ import annotations


from tests.benchmarks.scripts import ROOT, load_script

STUDY = ROOT / "docs" / "results" / "probe_regime"
REPORTS = sorted((ROOT / "docs" / "results").glob("validation_camvid_*.json"))


def load_benchmark():
    return load_script("probe_regime")


def test_every_run_gets_the_default_decision_and_the_bar(capsys):
    result = load_benchmark().analyse_folder(STUDY, REPORTS, write_json=False)
    decisions = result["default_decisions"]
    assert set(decisions) >= {"dino_s0", "mae_s0", "camvid_mae150_b0"}
    for d in decisions.values():
        assert d["verdict"] in {"reliable", "within_noise", "not_reliable", "none"}
        kept_latest = d["chosen_epoch"] == d["last_epoch"]
        assert d["bar_met"] == ((d["tau"] is not None and d["tau"] >= 0.25)
                                or (d["verdict"] == "not_reliable" and kept_latest))
        if d["verdict"] in {"not_reliable", "within_noise"}:
            assert kept_latest and d["gain_vs_last"] == 0
    printed = capsys.readouterr().out
    met = sum(d["bar_met"] for d in decisions.values())
    assert f"bar met on {met} of {len(decisions)} runs" in printed


def test_default_decision_flags_a_cluster_driven_run():
    # DSE rising with its cluster term: the verdict fires and the latest is kept, so the
    # bar is met although DSE ranks the checkpoints against the labels.
    bench = load_benchmark()
    rows = [{"epoch": e, "global_step": 10 * (e + 1), "dse": 0.1 * e, "miou": 0.3 - 0.01 * e,
             "components": {"inter": 0.5 + 0.1 * e, "intra_image": 0.2, "intra_batch": 0.2, "dim": 0.05}}
            for e in range(8)]
    decision = bench.default_decision("toy", rows)
    assert decision["tau"] == -1.0
    assert decision["verdict"] == "not_reliable" and decision["chosen_epoch"] == 7 and decision["bar_met"]


def test_outcomes_read_the_products_recorded_decision_from_a_report(capsys):
    # dino_s1: the decision validate recorded with the run's own noise (epoch 1, beyond it)
    bench = load_benchmark()
    report = ROOT / "docs" / "results" / "validation_probe_study_dino_s1.json"
    outcome = bench.report_outcomes(report)["dino_s1"]
    assert (outcome["verdict"], outcome["chosen_epoch"], outcome["last_epoch"]) == ("reliable", 1, 35)
    assert outcome["reason"].endswith("beyond 2 standard errors (0.0301)")
    assert outcome["tau"] < 0.25 and not outcome["bar_met"]
    assert round(outcome["gain_vs_last"], 2) == 0.86
    # a report made before the verdict existed is left out, and says so
    old = bench.report_outcomes(ROOT / "docs" / "results" / "validation_camvid_mae_b0.json")
    assert old == {} and "predates the reliability verdict" in capsys.readouterr().err
    bench.main(["outcomes", str(report)])
    assert "| dino_s1 | 18 | -0.12 | reliable | 1 / 35 | +0.86 | NO |" in capsys.readouterr().out

"""benchmarks/selection_rules.py on the committed CamVid reports: every rule, and the
default's beta regret within the issue's bound."""

from __future__ import annotations

import json

from tests.benchmarks.scripts import ROOT, load_script

REPORTS = sorted(str(p) for p in (ROOT / "docs" / "results").glob("validation_*.json"))


def load_benchmark():
    return load_script("selection_rules")


def test_json_lines_per_rule(capsys):
    assert load_benchmark().main([*REPORTS, "--json"]) == 0
    rules = {}
    for line in capsys.readouterr().out.splitlines():
        row = json.loads(line)
        assert {"rule", "gain_vs_last", "gap_to_best", "beta_regret"} <= set(row)
        rules[row["rule"]] = row
    for rule in ("default", "paper_raw", "paper_standardized", "last", "rescored", "conservative", "guard", "oracle"):
        assert rule in rules
    assert rules["default"]["beta_regret"] <= 0.5  # the bound, mIoU points
    assert rules["paper_raw"]["beta_regret"] > 4  # DSE across betas picks the worse beta
    assert rules["oracle"]["gap_to_best"] == 0 and rules["last"]["gain_vs_last"] == 0
    # the few-label rule, where the reports have few-label sidecars (the fresh MAE study)
    if "few_label@32" in rules:
        assert rules["few_label@32"]["beta_regret"] == 0
        assert rules["few_label@32"]["gap_to_best"] <= rules["default"]["per_comparison"]["camvid_mae30"]["gap_to_best"]


def test_comparisons_are_grouped_by_name_without_the_beta():
    bench = load_benchmark()
    assert bench.comparison_key("camvid_mae150_b0.01") == bench.comparison_key("camvid_mae150_b0") == "camvid_mae150"
    assert bench.comparison_key("camvid_dino_b0_seed1") == "camvid_dino_seed1"


def test_the_text_table_and_signal_counts(capsys):
    assert load_benchmark().main(REPORTS) == 0
    printed = capsys.readouterr().out
    assert "| rule | gain vs last | gap to best | beta regret |" in printed
    line = next(line for line in printed.splitlines() if line.startswith("failure signatures:"))
    hits, failed = (int(word) for word in line.split()[2:5:2])
    assert hits == failed >= 2 and ", 0 false alarms" in line


def test_the_default_never_loses_more_than_a_tenth_of_a_point_to_the_last_checkpoint(capsys):
    # Issue 17: >= -0.1 mIoU points in every comparison. The noise rule keeps the latest
    # checkpoint where an earlier one is better only within the noise; without it (the
    # same rule on bare values) camvid_mae loses 0.27 points.
    assert load_benchmark().main([*REPORTS, "--json"]) == 0
    rules = {row["rule"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    default = rules["default"]["per_comparison"]
    assert min(m["gain_vs_last"] for m in default.values()) >= -0.1
    assert rules["default_no_noise"]["per_comparison"]["camvid_mae"]["gain_vs_last"] < -0.2


def test_histories_without_noise_get_their_own_scatter():
    bench = load_benchmark()
    runs = bench.read_reports([p for p in REPORTS if p.endswith("validation_camvid_mae_b0.json")])
    run = bench.record("camvid_mae_b0", runs["camvid_mae_b0"])
    noise = {e.noise for e in run.evaluations}
    assert len(noise) == 1 and 0.005 < noise.pop() < 0.05


def test_replication_noise_measures_the_noise_and_not_the_trend():
    # Two image sets see the same (steep, curved) trend with independent noise of 0.01:
    # the estimate recovers 0.01, where a trend-blind scatter would count the curve too.
    import random

    bench = load_benchmark()
    rng = random.Random(0)
    trend = [0.3 * (i / 200) ** 2 + 0.1 * (i % 7 == 0) for i in range(200)]
    rows = [{"dse_monitored": t + rng.gauss(0, 0.01), "dse": t + rng.gauss(0, 0.01)} for t in trend]
    assert 0.008 < bench.replication_noise(rows) < 0.012
    assert bench.replication_noise([{"dse_monitored": 0.1, "dse": None}] * 5) is None


def test_the_measured_noise_agrees_with_the_scatter(capsys):
    # The default's choices are not an artefact of the scatter over-estimating the noise:
    # with the noise measured on two image sets it makes the same choice everywhere, and on
    # the twelve runs of validation.md section 5 it keeps the latest in every comparison.
    assert load_benchmark().main([*REPORTS, "--json"]) == 0
    rules = {row["rule"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    measured = rules["default_replication_noise"]["per_comparison"]
    assert measured == rules["default"]["per_comparison"]
    assert all(m["gain_vs_last"] == 0 for name, m in measured.items() if name.startswith("camvid_"))


def test_the_default_gains_over_the_last_checkpoint_where_dse_is_sure(capsys):
    # Issue 17's average bound (>= +0.13 points) on every committed report: the gain comes
    # from the three DINO runs of the probe-regime study, whose early peak beats the last
    # checkpoint beyond the noise (and by labels); everywhere else the latest is kept.
    assert load_benchmark().main([*REPORTS, "--json"]) == 0
    default = {row["rule"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}["default"]
    assert default["gain_vs_last"] >= 0.13
    gains = {name: m["gain_vs_last"] for name, m in default["per_comparison"].items()}
    early = {"dino_s0", "dino_s1", "dino_s2"}
    assert all(gains[name] > 0.5 for name in early)
    assert all(gain == 0 for name, gain in gains.items() if name not in early)

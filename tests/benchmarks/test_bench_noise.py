"""benchmarks/bench_noise.py: plain and with-noise scoring timed side by side."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.scripts import load_script


@pytest.mark.usefixtures("one_torch_thread")
def test_one_line_per_shape_with_both_times_and_the_noise(capsys):
    bench = load_script("bench_noise")
    assert bench.main(["--shapes", "16x16x8", "32x16x8", "--repeats", "1", "--threads", "1", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["shape"] for row in rows] == [[16, 16, 8], [32, 16, 8]]
    for row in rows:
        assert row["plain_s"] > 0 and row["with_noise_s"] > 0
        assert row["ratio"] == pytest.approx(row["with_noise_s"] / row["plain_s"])
        assert 0 < row["dse_noise"] < 1


def test_seed_share_is_the_spread_over_seeds_beside_the_jackknife():
    bench = load_script("bench_noise")
    import statistics

    import torch

    from dse_tune import dse

    tokens = torch.randn(32, 16, 8, generator=torch.Generator().manual_seed(0))
    row = bench.seed_share(tokens, 4)
    assert row["seed_sd"] == pytest.approx(statistics.stdev(dse(tokens, seed=s).score for s in range(4)))
    assert row["jackknife"] > 0
    assert row["factor"] == pytest.approx((1 + (row["seed_sd"] / row["jackknife"]) ** 2) ** 0.5)

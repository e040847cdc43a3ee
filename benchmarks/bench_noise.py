"""What the noise of a DSE value costs: the monitor's plain scoring vs scoring with noise.

    python benchmarks/bench_noise.py [--repeats 3] [--threads 2] [--json]

For each token shape (a tiny ViT monitor's probe set, a larger one), times
``dse(tokens, seed=0)`` (what the monitor computed before) and ``dse(tokens, seed=0,
noise=True)`` (what it records now: the score plus its leave-one-group-out jackknife
standard error, see :mod:`dse_tune.metrics.noise`) in the same process, alternating, and
prints both with their ratio. The budget for every reliability signal together is 2x
the plain scoring; the noise aims at <= ~1.4x.

    python benchmarks/bench_noise.py --seed-share RUN [--checkpoints 2] [--seeds 12]

What the recorded noise leaves out, the k-means seed's own share: on real checkpoints of
a ``dse-tune pretrain`` run (``--checkpoints`` of them, spread over the run, the last
included), the run's monitoring probe set is scored with ``--seeds`` seeds; prints the
seeds' spread of DSE beside the median jackknife standard error and the factor by which
adding the seed's share (in quadrature) would raise the noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from dse_tune import dse  # noqa: E402

#: (images, tokens per image, channels): a 64 px patch-8 ViT-tiny monitor, and a 224 px ViT-S probe.
SHAPES = ((64, 64, 192), (128, 196, 384))


def timed(tokens: torch.Tensor, noise: bool) -> float:
    started = time.perf_counter()
    dse(tokens, seed=0, noise=noise)
    return time.perf_counter() - started


def measure(shape: tuple[int, int, int], repeats: int) -> dict:
    tokens = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    timed(tokens, False)  # warm-up (allocations, kernels)
    plain, noisy = [], []
    for _ in range(repeats):  # alternate, so drift hits both
        plain.append(timed(tokens, False))
        noisy.append(timed(tokens, True))
    plain_s, noisy_s = statistics.median(plain), statistics.median(noisy)
    result = dse(tokens, seed=0, noise=True)
    return {"shape": list(shape), "plain_s": plain_s, "with_noise_s": noisy_s, "ratio": noisy_s / plain_s,
            "dse": result.score, "dse_noise": result.noise, "repeats": repeats}


def seed_share(tokens: torch.Tensor, seeds: int) -> dict:
    """DSE of ``tokens`` with seeds 0..seeds-1: the spread of the scores (the seed's own
    noise), the median jackknife standard error (what ``dse_noise`` records), and
    ``sqrt(1 + (seed_sd / jackknife)^2)``: how much larger the noise would be with both."""
    results = [dse(tokens, seed=seed, noise=True) for seed in range(seeds)]
    seed_sd = statistics.stdev(r.score for r in results)
    jackknife = statistics.median(r.noise for r in results)
    return {"seeds": seeds, "seed_sd": seed_sd, "jackknife": jackknife,
            "factor": (1 + (seed_sd / jackknife) ** 2) ** 0.5, "dse": statistics.mean(r.score for r in results)}


def seed_share_of_run(run_dir: Path, checkpoints: int, seeds: int) -> list[dict]:
    """:func:`seed_share` on the monitoring probe tokens of ``checkpoints`` of the run's
    checkpoints (spread evenly, the last included)."""
    from dse_tune.checkpoints.tracked_run import checkpoint_loader
    from dse_tune.data import dataset_for, probe_set_for
    from dse_tune.features import dense_tokens_batched
    from dse_tune.runs import read_config, read_run

    run, config = read_run(run_dir), read_config(run_dir)
    probe = probe_set_for(config, dataset=dataset_for(config))
    saved = [e for e in run.evaluations if run.checkpoint_path(e) is not None and run.checkpoint_path(e).is_file()]
    if not saved:
        raise SystemExit(f"{run_dir}: no checkpoint files to score")
    picks = sorted({round(i * (len(saved) - 1) / max(checkpoints - 1, 1)) for i in range(checkpoints)})
    load, rows = checkpoint_loader(run_dir), []
    for evaluation in (saved[i] for i in picks):
        model = load(run.checkpoint_path(evaluation), map_location="cpu").eval()
        with torch.no_grad():
            tokens = dense_tokens_batched(model, probe.images).float()
        rows.append({"run": run.name, "index": evaluation.index, "epoch": evaluation.epoch,
                     "tokens": list(tokens.shape), **seed_share(tokens, seeds)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="one JSON object per shape and line")
    parser.add_argument("--shapes", nargs="*", default=None, help="BxNxd shapes (default: %s)" % (SHAPES,))
    parser.add_argument("--seed-share", type=Path, metavar="RUN", help="a pretrain run folder: the k-means seed's share")
    parser.add_argument("--checkpoints", type=int, default=2, help="with --seed-share: how many checkpoints")
    parser.add_argument("--seeds", type=int, default=12, help="with --seed-share: how many k-means seeds")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.seed_share is not None:
        for row in seed_share_of_run(args.seed_share, args.checkpoints, args.seeds):
            print(json.dumps(row) if args.json else
                  f"{row['run']} #{row['index']} (epoch {row['epoch']}, tokens {tuple(row['tokens'])}): DSE {row['dse']:.4f}, "
                  f"seed spread {row['seed_sd']:.4f}, jackknife {row['jackknife']:.4f}, with both x{row['factor']:.3f}")
        return 0
    shapes = SHAPES if not args.shapes else [tuple(int(x) for x in s.split("x")) for s in args.shapes]
    if not args.json:
        print(f"{'shape (B, N, d)':<18} {'plain s':>9} {'with noise s':>13} {'ratio':>6}  dse +- noise")
    for shape in shapes:
        row = measure(shape, args.repeats)
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{str(tuple(shape)):<18} {row['plain_s']:>9.3f} {row['with_noise_s']:>13.3f} "
                  f"{row['ratio']:>5.2f}x  {row['dse']:.4f} +- {row['dse_noise']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the noise of a DSE value costs: the monitor's plain scoring vs scoring with noise.

    python benchmarks/bench_noise.py [--repeats 3] [--threads 2] [--json]

For each token shape (a tiny ViT monitor's probe set, a larger one), times
``dse(tokens, seed=0)`` (what the monitor computed before) and ``dse(tokens, seed=0,
noise=True)`` (what it records now: the score plus its leave-one-group-out jackknife
standard error, see :mod:`dse_tune.metrics.noise`) in the same process, alternating, and
prints both with their ratio. The budget for every reliability signal together is 2x
the plain scoring; the noise aims at <= ~1.4x.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="one JSON object per shape and line")
    parser.add_argument("--shapes", nargs="*", default=None, help="BxNxd shapes (default: %s)" % (SHAPES,))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
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

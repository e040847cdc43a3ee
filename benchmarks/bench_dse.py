"""Seconds and peak memory of dse_tune.dse at the paper's sizes, one JSON line per case.

    python benchmarks/bench_dse.py                 # (256,196,384) and (1024,196,384), CPU (+ CUDA if present)
    python benchmarks/bench_dse.py --sizes 64x196x384 --repeats 3
    python benchmarks/bench_dse.py --device cuda   # CUDA only
    python benchmarks/bench_dse.py --agreement --device cuda --sizes 256x196x384

``--agreement`` computes DSE and its components on the CPU and on ``--device`` from the
same tokens and seed (the k-means draws come from a CPU generator on every device), and
prints each component on both, the largest relative difference and whether they agree
within ``--tolerance``. With ``--device cpu`` it runs the CPU twice (a determinism check).

Each CPU case runs in a fresh subprocess so that its peak resident memory (ru_maxrss)
belongs to that case alone; ``peak_extra_gib`` is the peak minus the memory held before
the call (the input tensor included in neither). Variants are timed side by side in the
same run: the paper's per-position M_dim over all N positions (default), the same
estimate over 32 shuffled positions, and the cheaper all-tokens M_dim.
Reference (design.md, not re-measured here): the public compute_DSE takes 29.0 s at
(1024, 196, 384) and 5.3 s at (256, 196, 384) on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VARIANTS = {
    "paper_per_position": {},
    "per_position_32": {"dim_positions": 32},
    "all_tokens_dim": {"dim_estimator": "all_tokens"},
}


def measure(size: tuple[int, int, int], variant: str, device: str, repeats: int) -> dict:
    import torch

    import dse_tune

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(*size, generator=generator).to(device)
    kwargs = VARIANTS[variant]
    dse_tune.dse(features[:16], seed=0, **{k: v for k, v in kwargs.items() if k != "dim_positions"})  # warm-up
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = dse_tune.dse(features, seed=0, **kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    record = {
        "size": list(size),
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "variant": variant,
        "seconds": round(min(times), 3),
        "seconds_all": [round(t, 3) for t in times],
        "threads": torch.get_num_threads(),
        "score": round(result.score, 5),
    }
    if device == "cuda":
        record["peak_extra_gib"] = round((torch.cuda.max_memory_allocated() - base) / 2**30, 3)
    else:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        record["peak_rss_gib"] = round(peak_kib / 2**20, 3)
        record["peak_extra_gib"] = round(max(peak_kib - before_kib, 0) / 2**20, 3)
    return record


COMPONENTS = ("score", "inter", "intra_image", "intra_batch", "dim")


def parse_size(text: str) -> tuple[int, int, int]:
    """``"256x196x384"`` -> (256, 196, 384): images, tokens, channels."""
    return tuple(int(v) for v in text.split("x"))  # type: ignore[return-value]


def agreement(size: tuple[int, int, int], device: str, tolerance: float) -> dict:
    """DSE components of the same seeded tokens on the CPU and on ``device``."""
    import torch

    import dse_tune

    features = torch.randn(*size, generator=torch.Generator().manual_seed(0))
    on_cpu = dse_tune.dse(features, seed=0)
    on_device = dse_tune.dse(features.to(device), seed=0)
    record: dict = {"figure": "dse_agreement", "size": list(size), "reference": "cpu",
                    "device": device if device == "cpu" else torch.cuda.get_device_name()}
    worst = 0.0
    for name in COMPONENTS:
        a, b = getattr(on_cpu, name), getattr(on_device, name)
        relative = abs(a - b) / max(abs(a), 1e-12)
        worst = max(worst, relative)
        record[name] = {"cpu": round(a, 6), "device": round(b, 6), "relative_difference": float(f"{relative:.3g}")}
    record["max_relative_difference"] = float(f"{worst:.3g}")
    record["tolerance"] = tolerance
    record["agree"] = worst <= tolerance
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["256x196x384", "1024x196x384"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all",
                        help="where to time (all: CPU, and CUDA if present)")
    parser.add_argument("--agreement", action="store_true",
                        help="compare the components on the CPU and on --device instead of timing")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest relative difference that counts as agreement")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # SIZE:VARIANT:DEVICE, one case
    args = parser.parse_args()
    if args.case:
        size_text, variant, device = args.case.split(":")
        print(json.dumps(measure(parse_size(size_text), variant, device, args.repeats)), flush=True)
        return
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if args.agreement:
        device = args.device if args.device != "all" else ("cuda" if torch.cuda.is_available() else "cpu")
        for size_text in args.sizes:
            print(json.dumps(agreement(parse_size(size_text), device, args.tolerance)), flush=True)
        return
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if args.device != "all":
        devices = [args.device]
    for device in devices:
        for size_text in args.sizes:
            for variant in args.variants:
                command = [sys.executable, __file__, "--case", f"{size_text}:{variant}:{device}",
                           "--repeats", str(args.repeats)]
                completed = subprocess.run(command, capture_output=True, text=True)
                if completed.returncode:
                    print(json.dumps({"size": size_text, "variant": variant, "device": device,
                                      "error": completed.stderr.strip().splitlines()[-1:]}), flush=True)
                else:
                    print(completed.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()

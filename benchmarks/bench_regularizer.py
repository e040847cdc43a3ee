"""DSE regulariser cost, measured side by side in one run; one JSON line per figure.

    python benchmarks/bench_regularizer.py

1. forward+backward seconds of ``dse_tune.DSERegularizer`` and of lightly's
   ``DSERegularizer`` on the same random tokens, at (128, 196, 384) and (64, 64, 192);
2. the ratio of a DINO training step with beta > 0 to one with beta = 0 (tiny ViT on the
   embedded synthetic scenes, mean step time over real Lightning fits, warm-up skipped);
3. the share of a fit's wall time spent in the DSE monitoring callback.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time


def time_regularizers(size: tuple[int, int, int], repeats: int) -> dict:
    import torch
    from lightly.loss.regularizer.dse import DSERegularizer as LightlyDSERegularizer

    from dse_tune import DSERegularizer

    tokens = torch.randn(*size, generator=torch.Generator().manual_seed(0))
    record = {"figure": "regularizer_forward_backward", "size": list(size), "threads": torch.get_num_threads()}
    for name, regularizer in (("dse_tune", DSERegularizer(1.0)), ("lightly", LightlyDSERegularizer(weight=1.0))):
        times = []
        for _ in range(repeats):
            leaf = tokens.clone().requires_grad_(True)
            start = time.perf_counter()
            regularizer(leaf).backward()
            times.append(time.perf_counter() - start)
        record[f"{name}_seconds"] = round(min(times), 4)
    record["speedup"] = round(record["lightly_seconds"] / record["dse_tune_seconds"], 2)
    return record


def fit_step_times(beta: float, epochs: int, every_n_steps: int = 1) -> dict:
    import lightning.pytorch as pl

    from dse_tune.ssl.pretrain import pretrain

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_train_batch_start(self, *args) -> None:
            self._start = time.perf_counter()

        def on_train_batch_end(self, *args) -> None:
            self.times.append(time.perf_counter() - self._start)

    timer = StepTimer()
    config = {
        "method": "dino", "image_size": 32, "patch_size": 8, "embed_dim": 96, "depth": 3, "num_heads": 3,
        "batch_size": 32, "epochs": epochs, "synthetic_size": 256, "probe_size": 64, "eval_every_n_epochs": 1,
        "dse_beta": beta, "dse_every_n_steps": every_n_steps,
    }
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = pretrain(config, folder, callbacks=[timer], logger=False, enable_progress_bar=False, accelerator="cpu")
        wall = time.perf_counter() - start
    steady = timer.times[len(timer.times) // 4 :]  # skip warm-up steps
    evaluation_seconds = sum(e["seconds"] for e in result.history["evaluations"])
    # The mean, not the median: with every_n_steps > 1 most steps skip the term and the
    # median would hide its amortised cost.
    return {"mean_step": statistics.fmean(steady), "wall": wall, "evaluation_seconds": evaluation_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    for size in ((128, 196, 384), (64, 64, 192)):
        print(json.dumps(time_regularizers(size, args.repeats)), flush=True)
    baseline = fit_step_times(0.0, args.epochs)
    for beta, every in ((0.1, 1), (0.1, 4)):
        regularized = fit_step_times(beta, args.epochs, every)
        print(json.dumps({
            "figure": "dino_step_overhead", "model": "ViT dim 96 depth 3, 32 px, patch 8, batch 32",
            "beta": beta, "dse_every_n_steps": every,
            "mean_step_seconds_beta0": round(baseline["mean_step"], 4),
            "mean_step_seconds": round(regularized["mean_step"], 4),
            "ratio": round(regularized["mean_step"] / baseline["mean_step"], 3),
        }), flush=True)
    print(json.dumps({
        "figure": "dse_callback_share", "probe_images": 64, "eval_every_n_epochs": 1,
        "fit_wall_seconds": round(baseline["wall"], 2),
        "callback_seconds": round(baseline["evaluation_seconds"], 3),
        "share": round(baseline["evaluation_seconds"] / baseline["wall"], 4),
    }), flush=True)


if __name__ == "__main__":
    main()

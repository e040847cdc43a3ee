"""DSE regulariser cost, measured side by side in one run; one JSON line per figure.

    python benchmarks/bench_regularizer.py
    python benchmarks/bench_regularizer.py --device cuda --step-space search_spaces/dino.yaml \
        --precision bf16-mixed --batch-size 64 --steps 40      # ViT-S/16 DINO at 224 px

1. ``regularizer``: forward+backward seconds of ``dse_tune.DSERegularizer`` and of
   lightly's ``DSERegularizer`` on the same random tokens, at (128, 196, 384) and
   (64, 64, 192), on ``--device``;
2. ``agreement`` (with a non-CPU ``--device``, or ``--device cpu`` as a determinism
   check): the regulariser's value and token gradient on the CPU and on ``--device``
   from the same tokens and seed;
3. ``overhead``: the ratio of a DINO training step with beta > 0 (every step, every 4th
   step) to one with beta = 0, mean step time over real Lightning fits, warm-up skipped.
   Default model: a tiny ViT on the embedded synthetic scenes. ``--step-space`` takes the
   method settings of a search space instead (its fixed fields and the first value of
   each searched one; ``--scale tiny`` shrinks only its sizes, for a CPU smoke run);
4. ``callback``: the share of a fit's wall time spent in the DSE monitoring callback.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time


#: The default step model: a tiny ViT on the embedded synthetic scenes.
TINY_STEP_MODEL = {
    "method": "dino", "image_size": 32, "patch_size": 8, "embed_dim": 96, "depth": 3, "num_heads": 3,
    "batch_size": 32, "synthetic_size": 256, "probe_size": 64,
}
#: ``--scale tiny``: the sizes a CPU smoke run gives a search space's model (method settings kept).
TINY_SIZES = {
    "backbone": "vit", "image_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2,
    "head_hidden_dim": 32, "head_bottleneck_dim": 16, "head_output_dim": 64, "decoder_dim": 32,
    "decoder_depth": 1, "decoder_num_heads": 2, "global_crop_size": 32, "local_crop_size": 16,
    "batch_size": 8, "probe_size": 16, "num_workers": 0,
}
FIGURES = ("regularizer", "agreement", "overhead", "callback")


def space_step_model(path: str, scale: str) -> dict:
    """The fixed fields of a search space plus the first value of each searched one;
    synthetic data; ``scale="tiny"`` applies :data:`TINY_SIZES`."""
    from dse_tune.search_space import load_search_space

    spec = load_search_space(path)
    config = spec.base_config()
    config.update({name: dim.corner_values()[0] for name, dim in spec.dimensions.items()})
    config.update({"data": "synthetic", "splits": None, "synthetic_size": 512, "probe_size": 64})
    if scale == "tiny":
        config.update(TINY_SIZES, synthetic_size=64)
    return config


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_regularizers(size: tuple[int, int, int], repeats: int, device: str = "cpu") -> dict:
    import torch
    from lightly.loss.regularizer.dse import DSERegularizer as LightlyDSERegularizer

    from dse_tune import DSERegularizer

    tokens = torch.randn(*size, generator=torch.Generator().manual_seed(0)).to(device)
    record = {"figure": "regularizer_forward_backward", "size": list(size), "device": device,
              "threads": torch.get_num_threads()}
    for name, regularizer in (("dse_tune", DSERegularizer(1.0)), ("lightly", LightlyDSERegularizer(weight=1.0))):
        times = []
        for _ in range(repeats + 1):  # the first call warms up (CUDA kernels, caches)
            leaf = tokens.clone().requires_grad_(True)
            synchronize(device)
            start = time.perf_counter()
            regularizer(leaf).backward()
            synchronize(device)
            times.append(time.perf_counter() - start)
        record[f"{name}_seconds"] = round(min(times[1:]), 4)
    record["speedup"] = round(record["lightly_seconds"] / record["dse_tune_seconds"], 2)
    return record


def regularizer_agreement(size: tuple[int, int, int], device: str, tolerance: float = 1e-3) -> dict:
    """The regulariser's value and token gradient on the CPU and on ``device`` (same seed)."""
    import torch

    from dse_tune import DSERegularizer

    tokens = torch.randn(*size, generator=torch.Generator().manual_seed(0))

    def value_and_gradient(where: str) -> tuple[float, torch.Tensor]:
        leaf = tokens.clone().to(where).requires_grad_(True)
        value = DSERegularizer(1.0, seed=0)(leaf)
        value.backward()
        return float(value), leaf.grad.detach().cpu()

    (cpu_value, cpu_grad), (device_value, device_grad) = value_and_gradient("cpu"), value_and_gradient(device)
    value_difference = abs(cpu_value - device_value) / max(abs(cpu_value), 1e-12)
    grad_difference = float((cpu_grad - device_grad).norm() / cpu_grad.norm().clamp_min(1e-12))
    return {
        "figure": "regularizer_agreement", "size": list(size), "reference": "cpu", "device": device,
        "value_cpu": round(cpu_value, 6), "value_device": round(device_value, 6),
        "value_relative_difference": float(f"{value_difference:.3g}"),
        "gradient_relative_difference": float(f"{grad_difference:.3g}"),
        "tolerance": tolerance, "agree": max(value_difference, grad_difference) <= tolerance,
    }


def fit_step_times(beta: float, epochs: int, every_n_steps: int = 1, *, model: dict | None = None,
                   device: str = "cpu", precision: str = "32-true", steps: int | None = None) -> dict:
    """Mean training step seconds of a real Lightning fit (the first quarter skipped).

    Steps are timed from batch start to batch end with the device synchronised, so data
    loading is left out and the regulariser's share is not hidden behind it.
    """
    import lightning.pytorch as pl

    from dse_tune.ssl.pretrain import pretrain

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_train_batch_start(self, *args) -> None:
            synchronize(device)
            self._start = time.perf_counter()

        def on_train_batch_end(self, *args) -> None:
            synchronize(device)
            self.times.append(time.perf_counter() - self._start)

    timer = StepTimer()
    config = {
        **(model or TINY_STEP_MODEL), "epochs": epochs, "eval_every_n_epochs": epochs if steps else 1,
        "dse_beta": beta, "dse_every_n_steps": every_n_steps, "precision": precision,
    }
    trainer_kwargs = {"limit_train_batches": steps} if steps else {}
    if steps and config.get("data", "synthetic") == "synthetic":  # enough scenes for the steps
        config["synthetic_size"] = max(config.get("synthetic_size", 512), steps * config["batch_size"])
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = pretrain(config, folder, callbacks=[timer], logger=False, enable_progress_bar=False,
                          accelerator=accelerator, trainer_kwargs=trainer_kwargs)
        wall = time.perf_counter() - start
    steady = timer.times[len(timer.times) // 4 :]  # skip warm-up steps
    evaluation_seconds = sum(e["seconds"] for e in result.history["evaluations"])
    # The mean, not the median: with every_n_steps > 1 most steps skip the term and the
    # median would hide its amortised cost.
    return {"mean_step": statistics.fmean(steady), "wall": wall, "evaluation_seconds": evaluation_seconds}


def describe_model(model: dict | None) -> str:
    m = {**TINY_STEP_MODEL, **(model or {})}
    if m.get("backbone", "vit") == "vit":
        name = f"ViT dim {m.get('embed_dim', 96)} depth {m.get('depth', 3)}, patch {m['patch_size']}"
    else:
        name = m["backbone"]
    return f"{m['method']} {name}, {m['image_size']} px, batch {m['batch_size']}"


def overhead_figures(args, model: dict | None) -> dict:
    """Print the beta > 0 step ratios; return the beta = 0 fit (for the callback share)."""
    fit = {"model": model, "device": args.device, "precision": args.precision, "steps": args.steps}
    # A first, discarded fit takes the one-time costs (CUDA context and kernels, imports,
    # allocator) that would otherwise slow whichever fit runs first.
    fit_step_times(0.1, 1, 1, **{**fit, "steps": min(args.steps or 4, 4)})
    baseline = fit_step_times(0.0, args.epochs, **fit)
    for beta, every in ((0.1, 1), (0.1, 4)):
        regularized = fit_step_times(beta, args.epochs, every, **fit)
        print(json.dumps({
            "figure": "dino_step_overhead", "model": describe_model(model), "device": args.device,
            "precision": args.precision, "beta": beta, "dse_every_n_steps": every,
            "mean_step_seconds_beta0": round(baseline["mean_step"], 4),
            "mean_step_seconds": round(regularized["mean_step"], 4),
            "ratio": round(regularized["mean_step"] / baseline["mean_step"], 3),
        }), flush=True)
    return baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--figures", nargs="+", choices=FIGURES, default=None,
                        help="which figures (default: all; agreement only off the CPU)")
    parser.add_argument("--sizes", nargs="+", default=["128x196x384", "64x64x192"],
                        help="token tensors for the regularizer and agreement figures")
    parser.add_argument("--step-space", default=None, help="a search space whose DINO settings the steps use")
    parser.add_argument("--scale", choices=["full", "tiny"], default="full", help="sizes of --step-space")
    parser.add_argument("--precision", default="32-true", help="Lightning precision of the steps")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (overrides the model's)")
    parser.add_argument("--num-workers", type=int, default=None, help="data loader workers of the steps")
    parser.add_argument("--steps", type=int, default=None, help="steps per fit (one epoch of this many)")
    args = parser.parse_args()
    figures = args.figures or [f for f in FIGURES if f != "agreement" or args.device != "cpu"]
    sizes = [tuple(int(v) for v in text.split("x")) for text in args.sizes]
    if "regularizer" in figures:
        for size in sizes:
            print(json.dumps(time_regularizers(size, args.repeats, args.device)), flush=True)
    if "agreement" in figures:
        for size in sizes:
            print(json.dumps(regularizer_agreement(size, args.device)), flush=True)
    model = space_step_model(args.step_space, args.scale) if args.step_space else None
    if model is not None or args.batch_size or args.num_workers is not None:
        model = {**(model or TINY_STEP_MODEL)}
        model.update({k: v for k, v in (("batch_size", args.batch_size), ("num_workers", args.num_workers)) if v is not None})
    if args.steps:
        args.epochs = 1
    if "overhead" not in figures and "callback" not in figures:
        return
    baseline = overhead_figures(args, model) if "overhead" in figures else fit_step_times(
        0.0, args.epochs, model=model, device=args.device, precision=args.precision, steps=args.steps)
    if "callback" not in figures:
        return
    print(json.dumps({
        "figure": "dse_callback_share", "probe_images": (model or TINY_STEP_MODEL)["probe_size"],
        "model": describe_model(model), "device": args.device,
        "fit_wall_seconds": round(baseline["wall"], 2),
        "callback_seconds": round(baseline["evaluation_seconds"], 3),
        "share": round(baseline["evaluation_seconds"] / baseline["wall"], 4),
    }), flush=True)


if __name__ == "__main__":
    main()

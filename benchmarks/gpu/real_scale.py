"""A short real-scale run: a shipped space's DINO (ViT-S/16, 224 px) on CamVid for a fixed
wall-clock budget, a checkpoint at every DSE evaluation, then ``dse-tune validate`` on it.

    python benchmarks/gpu/real_scale.py --device cuda --data .gpu_data/camvid --out OUT --minutes 4
    python benchmarks/gpu/real_scale.py --device cpu --scale tiny --minutes 0.5 --out OUT

The run takes the space's fixed settings and the first value of each searched one (for
dino.yaml: beta 0, the baseline); ``--scale tiny`` shrinks only the sizes (a CPU smoke
run). The monitor evaluates (and checkpoints) every ``--eval-every`` epochs; the summary
says how many optimizer steps that is. Training stops at ``--minutes`` (Lightning's
``max_time``) or at the space's epochs. The run folder (checkpoints: large) goes to
``--run-dir``; only small files are copied to ``--out``: run.json (settings, steps,
seconds), dse_history.json, dse_curve.png, validation.json, validation.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_regularizer import TINY_SIZES  # noqa: E402  (benchmarks/ is no package)


def run_config(args: argparse.Namespace) -> dict:
    from dse_tune.search_space import load_search_space

    spec = load_search_space(args.space)
    config = spec.base_config()
    config.update({name: dim.corner_values()[0] for name, dim in spec.dimensions.items()})
    if args.scale == "tiny":
        config.update(TINY_SIZES)
    camvid = Path(args.data) if args.data else None
    if camvid is not None and (camvid / "train" / "images").is_dir():
        config.update(data=str(camvid), splits=["train"])
    else:
        config.update(data="synthetic", splits=None, synthetic_size=512)
    config.update(eval_every_n_epochs=args.eval_every, precision=args.precision, seed=0)
    for key in ("batch_size", "num_workers", "probe_size"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    return config


def validate(run_dir: Path, args: argparse.Namespace, out: Path) -> dict:
    """``dse-tune validate`` as a user runs it (CamVid labels; synthetic scenes without)."""
    data = args.data if args.data and (Path(args.data) / "test" / "masks").is_dir() else "synthetic"
    command = [sys.executable, "-m", "dse_tune.cli", "validate", str(run_dir), "--data", data,
               "--out", str(out), "--device", args.device, "--images-per-split",
               str(args.validate_images), "--no-progress"]
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    (out / "validate.log").write_text(completed.stdout + completed.stderr)
    return {"command": " ".join(command[1:]), "returncode": completed.returncode,
            "seconds": round(time.perf_counter() - start, 1), "data": data}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--space", default=str(REPO / "search_spaces" / "dino.yaml"))
    parser.add_argument("--scale", choices=["full", "tiny"], default="full")
    parser.add_argument("--data", default=str(REPO / ".gpu_data" / "camvid"),
                        help="CamVid folder (else synthetic scenes)")
    parser.add_argument("--minutes", type=float, default=4.0, help="training wall-clock budget")
    parser.add_argument("--eval-every", type=int, default=4, help="DSE evaluation/checkpoint period (epochs)")
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--probe-size", type=int, default=None)
    parser.add_argument("--validate-images", type=int, default=100, help="labelled images per split")
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "gpu-real-scale"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from dse_tune.runs import CURVE_PLOT, HISTORY_FILE
    from dse_tune.ssl.pretrain import pretrain

    out, run_dir = Path(args.out), Path(args.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    config = run_config(args)
    seconds = int(args.minutes * 60)
    start = time.perf_counter()
    result = pretrain(
        config, run_dir, logger=False, enable_progress_bar=False,
        accelerator="gpu" if args.device.startswith("cuda") else "cpu",
        trainer_kwargs={"max_time": {"seconds": seconds}},
    )
    train_seconds = time.perf_counter() - start
    rows = result.history["evaluations"]
    summary = {
        "figure": "real_scale_run", "space": Path(args.space).name, "scale": args.scale,
        "device": args.device, "config": {k: config[k] for k in sorted(config)},
        "train_seconds": round(train_seconds, 1), "budget_seconds": seconds,
        "epochs_completed": result.epochs_completed,
        "global_steps": rows[-1]["global_step"] if rows else 0,
        "steps_per_evaluation": (rows[1]["global_step"] - rows[0]["global_step"]) if len(rows) > 1 else None,
        "evaluations": len(rows), "dse": [round(r["dse"], 4) if r["dse"] is not None else None for r in rows],
        "peak_dse": result.best_dse,
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
    }
    for name in (HISTORY_FILE, CURVE_PLOT):  # the run folder's small files
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / name)
    summary["validate"] = validate(run_dir, args, out) if rows else {"skipped": "no evaluation"}
    (out / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}), flush=True)
    if summary["validate"].get("returncode"):
        sys.exit(f"dse-tune validate failed (exit {summary['validate']['returncode']}); see {out / 'validate.log'}")


if __name__ == "__main__":
    main()

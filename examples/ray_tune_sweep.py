"""A label-free Ray Tune sweep from Python: search space, sweep, rescoring, selection.

Four tiny MAE trials on the embedded synthetic scenes (two learning rates x two DSE
regularization weights), two at a time on a local Ray cluster (or the one in
``$RAY_ADDRESS``). The DSE degradation rule stops trials whose dense features degrade;
candidates of every trial are rescored on held-out scenes and the selector picks the
checkpoint by the safe default (smallest beta; rescored values choose within a run). No labels anywhere. About a minute on 2 CPU cores:

    python examples/ray_tune_sweep.py --out runs/ray_tune_sweep

The same sweep from a YAML file, with Tune's progress table: ``dse-tune sweep SPACE.yaml``
(schema: docs/search_spaces.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ray import tune

from dse_tune.data import SyntheticScenes
from dse_tune.evaluation.sweep_selection import select_sweep
from dse_tune.integrations.ray import connect, run_sweep
from dse_tune.search_space import parse_search_space

SPACE = {
    "name": "ray_tune_sweep",
    "pretrain": {  # any PretrainConfig field: a fixed value or a search domain
        "method": "mae",
        "data": "synthetic",
        "synthetic_size": 128,
        "image_size": 32,
        "patch_size": 8,
        "embed_dim": 64,
        "depth": 2,
        "num_heads": 2,
        "epochs": 8,
        "lr": {"grid": [5.0e-4, 1.5e-3]},
        "dse_beta": {"grid": [0.0, 0.1]},
        "probe_size": 32,
    },
    "search": {"algorithm": "random", "max_concurrent_trials": 2},
    "pruner": {"type": "dse_degradation", "warmup": 4, "patience": 2},  # or median, patient, ...
    "resources": {"cpu": 1},  # per trial; {"cpu": 8, "gpu": 0.5} shares a GPU between two
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ray_tune_sweep"), help="the sweep folder (new)")
    parser.add_argument("--address", default=None, help="a Ray cluster to join (default: local)")
    args = parser.parse_args()

    spec = parse_search_space(SPACE, source="examples/ray_tune_sweep.py")
    print(connect(args.address))
    summary = run_sweep(
        spec,
        args.out,
        progress_reporter=tune.CLIReporter(parameter_columns=list(spec.dimensions), metric_columns=["epoch", "dse"]),
    )
    print(summary.describe())

    # beta > 0 optimized DSE on its own images: rescore every trial's candidates on
    # held-out scenes of a family no trial trained on (what `dse-tune sweep` runs last).
    held_out = SyntheticScenes(num_images=64, image_size=64, seed=1000)
    result = select_sweep(args.out, spec, rescore_data=held_out, rescore_size=64).result
    print(f"chosen checkpoint: {result.best_checkpoint} (beta {result.best_beta}, epoch {result.best_epoch})")
    print(f"wrote {args.out / 'selection.json'} and {args.out / 'selection.png'}")


if __name__ == "__main__":
    main()

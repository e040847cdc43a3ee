"""Label-free hyperparameter search with Optuna, then a fair choice of checkpoint and beta.

Each trial pretrains a tiny DINO ViT on the embedded synthetic scenes with a sampled
learning rate and DSE regularization weight ``dse_beta``. Every DSE evaluation is
reported to Optuna; a run whose dense features degrade is stopped by
``DSEDegradationPruner`` and still completes with its peak DSE. Afterwards the
candidate checkpoints of all runs are rescored on held-out images and the selector picks
the checkpoint to keep by the safe default: the rescored values choose within a run, and
only the smallest beta's runs compete (beta > 0 optimized DSE itself, so no DSE, held-out
or not, can judge it; docs/selection.md). No labels anywhere. About a minute on 2 CPU cores:

    python examples/optuna_study.py --out runs/optuna_study --trials 4

The study lives in a journal file (``OUT/optuna.log``), so more processes can join it
while it runs, each running its own trials:

    dse-tune optuna-worker --storage runs/optuna_study/optuna.log \\
        --study optuna_study --n-trials 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution

from dse_tune.evaluation.rescore import rescore_sweep
from dse_tune.integrations.optuna import DSEDegradationPruner, DSEObjective, create_dse_study
from dse_tune.runs import load_sweep
from dse_tune.selection import select_best

# A ViT small enough for a CPU: 32 px images, 16 patches, 2 blocks of width 64.
BASE_CONFIG = dict(
    method="dino",
    image_size=32,
    patch_size=8,
    embed_dim=64,
    depth=2,
    num_heads=2,
    head_hidden_dim=64,
    head_bottleneck_dim=32,
    head_output_dim=128,
    num_local_crops=2,
    batch_size=16,
    epochs=6,
    warmup_epochs=1,
    # Only 4 steps per epoch: a faster EMA lets the (scored) teacher move in 6 epochs.
    teacher_momentum=0.9,
    data="synthetic",
    synthetic_size=64,
    probe_size=16,  # the monitoring probe: 16 of the 64 scenes
)
SEARCH_SPACE = {
    "lr": FloatDistribution(2e-4, 1e-3, log=True),
    "dse_beta": CategoricalDistribution([0.0, 0.05]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/optuna_study"))
    parser.add_argument("--trials", type=int, default=4, help="trials run by this process")
    parser.add_argument("--study", default="optuna_study", help="study name")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    objective = DSEObjective(
        BASE_CONFIG, SEARCH_SPACE, out_root=args.out, pretrain_kwargs={"logger": False}
    )
    study = create_dse_study(
        objective,
        storage=args.out / "optuna.log",  # a JournalStorage file: no database needed
        study_name=args.study,
        # 6 evaluations per run: decide after 3, stop after 2 clearly degraded ones.
        pruner=DSEDegradationPruner(warmup=3, patience=2),
    )
    if not study.trials:  # a new study: try both betas first, then let TPE sample
        for beta in SEARCH_SPACE["dse_beta"].choices:
            study.enqueue_trial({"lr": 5e-4, "dse_beta": beta})
    study.optimize(objective, n_trials=args.trials, catch=(Exception,))

    print("trial  lr        beta  peak DSE  peak epoch  stopped")
    for trial in study.trials:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            print(f"{trial.number:5d}  {trial.state.name}: {trial.user_attrs.get('error', '')}")
            continue
        attrs = trial.user_attrs
        print(
            f"{trial.number:5d}  {trial.params['lr']:.2e}  {trial.params['dse_beta']:<4}  "
            f"{trial.value:8.4f}  {attrs['peak_epoch']:10d}  {attrs['stop_reason'] or 'no'}"
        )

    # Fair comparison across betas: every candidate scored on the same held-out scenes.
    sweep_dir = objective.study_dir(study.study_name)
    rescored = rescore_sweep(sweep_dir, held_out_size=32)
    result = select_best(load_sweep(sweep_dir), rescored=rescored)
    print(f"\nselected: {result.best.name}, epoch {result.best_epoch}, beta {result.best_beta}")
    print(f"checkpoint: {result.best_checkpoint}")
    print(
        f"rescored values: {sweep_dir / 'rescored.json'}; also: dse-tune select {sweep_dir} "
        f"--rescored {sweep_dir / 'rescored.json'}"
    )


if __name__ == "__main__":
    main()

"""Optuna adapter: prune trials whose DSE degrades, with the shared degradation rule.

- ``pruner``: :class:`DSEDegradationPruner`, the shared degradation rule on a trial's
  reports (pruning where the Lightning monitor or the Ray stopper would stop the same
  run); :func:`peak_value_and_step`, what a pruned trial is worth;
- ``listener``: :class:`TrialReporter`, the run listener that reports each DSE to the trial;
- ``objective``: :class:`DSEObjective`, one pretraining run per trial, its peak DSE the value;
- ``study``: studies shared by several processes (:func:`create_dse_study`,
  :func:`run_worker`; ``dse-tune optuna-worker``), storing what ``spec`` describes;
- ``space``: search spaces as Optuna objects, a trial's config overrides (:func:`suggest_params`).

Lightning is imported only when a trial runs: the pruner alone stays light.
"""

from __future__ import annotations

from dse_tune.integrations.optuna.listener import TrialReporter
from dse_tune.integrations.optuna.objective import DSEObjective, summarize_run
from dse_tune.integrations.optuna.pruner import (
    DSEDegradationPruner,
    ordered_intermediate_values,
    peak_value_and_step,
)
from dse_tune.integrations.optuna.space import (
    SearchSpace,
    build_pruner,
    optuna_distribution,
    optuna_distributions,
    optuna_grid,
    suggest_params,
)
from dse_tune.integrations.optuna.spec import objective_from_spec, objective_to_spec
from dse_tune.integrations.optuna.study import (
    STUDY_SPEC_ATTR,
    create_dse_study,
    load_dse_study,
    open_storage,
    run_worker,
)

__all__ = [
    "STUDY_SPEC_ATTR",
    "DSEDegradationPruner",
    "DSEObjective",
    "SearchSpace",
    "TrialReporter",
    "build_pruner",
    "create_dse_study",
    "load_dse_study",
    "objective_from_spec",
    "objective_to_spec",
    "open_storage",
    "optuna_distribution",
    "optuna_distributions",
    "optuna_grid",
    "ordered_intermediate_values",
    "peak_value_and_step",
    "run_worker",
    "suggest_params",
    "summarize_run",
]

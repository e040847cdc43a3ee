"""Optuna adapter: prune trials whose DSE degrades, with the shared degradation rule.

- :mod:`~dse_tune.integrations.optuna.pruner`: :class:`DSEDegradationPruner` applies
  :class:`dse_tune.degradation.DegradationRule` to a trial's reports, so a trial is
  pruned at exactly the evaluation where the Lightning monitor or the Ray stopper would
  stop the same run; :func:`peak_value_and_step` is what a pruned trial is worth.
- :mod:`~dse_tune.integrations.optuna.listener`: :class:`TrialReporter`, the run
  listener that reports each DSE to the trial and stops the run when the pruner says so.
- :mod:`~dse_tune.integrations.optuna.objective`: :class:`DSEObjective`, one
  :func:`dse_tune.ssl.pretrain.pretrain` run per trial, returning the run's peak DSE.
- :mod:`~dse_tune.integrations.optuna.study`: studies shared by several processes
  (:func:`create_dse_study`, :func:`run_worker`; in a shell ``dse-tune optuna-worker``),
  storing what :mod:`~dse_tune.integrations.optuna.spec` describes.
- :mod:`~dse_tune.integrations.optuna.space`: search spaces as Optuna objects, and a
  trial's sampled config overrides (:func:`suggest_params`).

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

"""The Optuna pruner: the shared degradation rule applied to a trial's reports.

:class:`DSEDegradationPruner` hands a trial's intermediate values, in step order, to
:meth:`dse_tune.degradation.DegradationRule.decide`, so a trial is pruned at exactly the
evaluation where the Lightning monitor or the Ray stopper would stop the same run.
"""

from __future__ import annotations

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, Trial

from dse_tune.degradation import DegradationDecision, DegradationRule, peak

__all__ = ["NOISE_ATTR", "DSEDegradationPruner", "ordered_intermediate_values", "peak_value_and_step"]

_UNSET = object()
#: ``trial.user_attrs[f"{NOISE_ATTR}:{step}"]``: the standard error of the report at ``step``.
NOISE_ATTR = "dse_noise"
AnyTrial = Trial | FrozenTrial


class DSEDegradationPruner(BasePruner):
    """Pruner that stops trials once their DSE has clearly degraded from its peak.

    ``should_prune()`` applies a :class:`~dse_tune.degradation.DegradationRule` to the
    values reported so far (``trial.report(dse, step)``), in step order; the rule counts
    reports, not step numbers, so steps need not be consecutive. For a ``"minimize"``
    study the values are negated first (report ``-DSE``, or any loss-like score).

    Args:
        rule: A ready :class:`~dse_tune.degradation.DegradationRule`; or leave it out and
            pass the rule's parameters (``warmup``, ``patience``, ``min_drop``,
            ``smoothing``, ``nan_policy``; the others keep the rule's defaults).

    Example:
        A degraded run is past its best point, not a bad run: stop training when the
        pruner says so, and let the trial complete with its peak (as
        :class:`~dse_tune.integrations.optuna.DSEObjective` does).

        >>> import optuna
        >>> from dse_tune.integrations.optuna import DSEDegradationPruner, peak_value_and_step
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> dse_by_epoch = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.95, 0.85, 0.75, 0.65, 0.55]
        >>> def objective(trial):
        ...     for evaluation, dse in enumerate(dse_by_epoch):  # stands in for training
        ...         trial.report(dse, step=10 * evaluation)
        ...         if trial.should_prune():  # degraded: stop training here
        ...             break
        ...     value, step = peak_value_and_step(trial)
        ...     trial.set_user_attr("peak_step", step)  # whose checkpoint to keep
        ...     return value
        >>> study = optuna.create_study(direction="maximize", pruner=DSEDegradationPruner(warmup=5, patience=3))
        >>> study.optimize(objective, n_trials=1)
        >>> trial = study.best_trial
        >>> trial.state.name, trial.last_step, trial.value, trial.user_attrs["peak_step"]
        ('COMPLETE', 90, 1.0, 50)
    """

    def __init__(
        self,
        rule: DegradationRule | None = None,
        *,
        warmup: int = _UNSET,  # type: ignore[assignment]
        patience: int = _UNSET,  # type: ignore[assignment]
        min_drop: float = _UNSET,  # type: ignore[assignment]
        smoothing: int | None = _UNSET,  # type: ignore[assignment]
        nan_policy: str = _UNSET,  # type: ignore[assignment]
    ) -> None:
        given = dict(warmup=warmup, patience=patience, min_drop=min_drop, smoothing=smoothing, nan_policy=nan_policy)
        given = {name: value for name, value in given.items() if value is not _UNSET}
        if rule is None:
            rule = DegradationRule(**given)
        elif not isinstance(rule, DegradationRule):
            raise TypeError(f"rule must be a DegradationRule, got {type(rule).__name__}")
        elif given:
            raise TypeError(f"pass either rule or its parameters ({', '.join(given)}), not both")
        self._rule = rule

    @property
    def rule(self) -> DegradationRule:
        return self._rule

    def decision(self, study: optuna.study.Study, trial: AnyTrial) -> DegradationDecision:
        """The rule's decision (with its reason) for ``trial`` as of now; the noise of each
        report (user attribute ``dse_noise:STEP``) is passed on, as in the tracker."""
        reports = ordered_intermediate_values(trial)
        values = [value for _, value in reports]
        if study.direction == StudyDirection.MINIMIZE:
            values = [-value for value in values]  # the rule assumes higher is better
        attrs = trial.storage.get_trial(trial._trial_id).user_attrs if isinstance(trial, Trial) else trial.user_attrs
        noise = [attrs.get(f"{NOISE_ATTR}:{step}") for step, _ in reports]
        return self._rule.decide(values, noise=noise)

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        return self.decision(study, trial).stop

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._rule!r})"


def ordered_intermediate_values(trial: AnyTrial) -> list[tuple[int, float]]:
    """``(step, value)`` pairs reported by a live or frozen ``trial``, in step order.

    Example:
        >>> study = optuna.create_study()
        >>> trial = study.ask()
        >>> trial.report(0.5, step=20); trial.report(0.25, step=10)
        >>> ordered_intermediate_values(trial)
        [(10, 0.25), (20, 0.5)]
    """
    if isinstance(trial, Trial):
        # The storage holds the live trial's reports (Optuna's own integrations read it so).
        trial = trial.storage.get_trial(trial._trial_id)
    if not isinstance(trial, FrozenTrial):
        raise TypeError(f"trial must be an optuna Trial or FrozenTrial, got {type(trial).__name__}")
    return sorted(trial.intermediate_values.items())


def peak_value_and_step(
    trial: AnyTrial, direction: str | StudyDirection | None = None
) -> tuple[float, int] | None:
    """Best finite reported value and its step (:func:`dse_tune.degradation.peak`: earliest
    on ties); None if there is none. A degraded trial is worth its peak, not its last
    value. ``direction`` defaults to the live trial's study's, ``"maximize"`` for a frozen one.

    Example:
        >>> study = optuna.create_study(direction="maximize")
        >>> trial = study.ask()
        >>> for step, dse in enumerate([float("nan"), 0.3, 0.7, 0.7, 0.2]):
        ...     trial.report(dse, step)
        >>> peak_value_and_step(trial)
        (0.7, 2)
    """
    if direction is None:
        direction = trial.study.direction if isinstance(trial, Trial) else StudyDirection.MAXIMIZE
    if isinstance(direction, str):
        if direction.lower() not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        direction = StudyDirection[direction.upper()]
    sign = -1.0 if direction == StudyDirection.MINIMIZE else 1.0
    reports = ordered_intermediate_values(trial)
    found = peak([sign * value for _, value in reports])  # peak() maximizes
    if found.index is None:
        return None
    step, value = reports[found.index]
    return value, step

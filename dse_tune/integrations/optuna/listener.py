"""The Optuna trial reporter: a run listener that reports each DSE to a trial.

:class:`TrialReporter` listens to a :class:`dse_tune.tracker.DSETracker`
(``tracker.add_listener(reporter)``, ``DSEMonitor.add_listener`` or
``pretrain(..., listeners=[reporter])``). After each evaluation it reports the DSE and,
unless the run's own rule already stops it, asks the study's pruner; a prune comes back
as a stop decision, which the tracker records and training obeys. It never raises
``TrialPruned``: the caller decides what the trial returns (``DSEObjective``: the peak).
(This replaces the former ``DSETrialCallback``.)
"""

from __future__ import annotations

import dataclasses

from optuna.trial import Trial

from dse_tune.degradation import DegradationDecision
from dse_tune.integrations.optuna.pruner import NOISE_ATTR, DSEDegradationPruner
from dse_tune.runs import Evaluation

__all__ = ["STOPPED_BY_PRUNER", "STOPPED_BY_RULE", "TrialReporter"]

#: Values of :attr:`TrialReporter.stopped_by`.
STOPPED_BY_PRUNER = "pruner"
STOPPED_BY_RULE = "degradation rule"


class TrialReporter:
    """Report every DSE evaluation to ``trial``; stop the run when the pruner says so.

    Args:
        trial: The live trial.
        prune: Ask the study's pruner after each report (False: report only).

    Attributes:
        stopped_by: ``"pruner"``, ``"degradation rule"`` (the run's own rule) or None.
        stop_reason: The stop's reason, or None.

    Example:
        >>> import optuna
        >>> from dse_tune.degradation import DegradationRule
        >>> from dse_tune.runs import Evaluation
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> study = optuna.create_study(direction="maximize",
        ...                             pruner=DSEDegradationPruner(warmup=2, patience=1))
        >>> reporter = TrialReporter(study.ask())
        >>> rule = DegradationRule()  # the run's own rule: a default one, stops later
        >>> dse = [0.5, 0.9, 0.2]
        >>> for index in range(3):
        ...     verdict = reporter(Evaluation(index, dse[index]), rule.decide(dse[: index + 1]))
        >>> verdict.stop, reporter.stopped_by, reporter.stop_reason[:15]
        (True, 'pruner', 'pruned: degrade')
    """

    def __init__(self, trial: Trial, *, prune: bool = True) -> None:
        if not isinstance(trial, Trial):
            raise TypeError(f"trial must be a live optuna Trial, got {type(trial).__name__}")
        self.trial = trial
        self.prune = bool(prune)
        self.stopped_by: str | None = None
        self.stop_reason: str | None = None

    def __call__(self, evaluation: Evaluation, decision: DegradationDecision) -> DegradationDecision | None:
        self.trial.report(evaluation.dse, step=evaluation.index)
        if evaluation.noise is not None:  # the pruner reads it: drops within the noise do not prune
            self.trial.set_user_attr(f"{NOISE_ATTR}:{evaluation.index}", evaluation.noise)
        if decision.stop:
            # The run's own rule stops it; the tracker records that already.
            self._record_stop(STOPPED_BY_RULE, decision.reason)
            return None
        if self.prune and self.trial.should_prune():
            verdict = pruner_decision(self.trial, evaluation)
            self._record_stop(STOPPED_BY_PRUNER, verdict.reason)
            return verdict
        return None

    def _record_stop(self, source: str, reason: str) -> None:
        self.stopped_by, self.stop_reason = source, reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}(trial={self.trial.number}, prune={self.prune})"


def pruner_decision(trial: Trial, evaluation: Evaluation) -> DegradationDecision:
    """The stop decision of the study's pruner, with a reason saying which and why."""
    pruner = trial.study.pruner
    if isinstance(pruner, DSEDegradationPruner):
        decision = pruner.decision(trial.study, trial)
        return dataclasses.replace(decision, stop=True, reason=f"pruned: {decision.reason}")
    reason = f"pruned by {type(pruner).__name__} after evaluation {evaluation.index} (DSE {evaluation.dse:.6g})"
    return DegradationDecision(True, reason, None, None, evaluation.index + 1)

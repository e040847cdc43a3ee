"""Optuna adapter: prune trials whose DSE degrades, with the shared degradation rule.

:class:`DSEDegradationPruner` hands a trial's intermediate values, in step order, to
:meth:`dse_tune.degradation.DegradationRule.decide`, so a trial is pruned at exactly the
evaluation where the Lightning callback or the Ray stopper would stop the same run.

:class:`DSEObjective` is a ready objective: one :func:`dse_tune.ssl.pretrain.pretrain`
run per trial, every DSE evaluation reported to the trial, training stopped when the
pruner (or the run's own degradation rule) says so, and the run's peak DSE returned as
the trial's value. :func:`create_dse_study` stores the objective in a shared storage so
that other processes can join with :func:`run_worker`, or from a shell::

    python -m dse_tune.integrations.optuna worker --storage sqlite:///study.db \
        --study NAME --n-trials 4

Lightning is imported only when a trial runs: the pruner alone stays light.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.pruners import BasePruner, NopPruner
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, Trial

from dse_tune.degradation import DegradationDecision, DegradationRule
from dse_tune.selection_cli import integer_at_least

if TYPE_CHECKING:
    from dse_tune.ssl.config import PretrainConfig
    from dse_tune.ssl.pretrain import RunResult

__all__ = [
    "DSEDegradationPruner",
    "DSEObjective",
    "DSETrialCallback",  # noqa: F822 - created on first access (module __getattr__)
    "create_dse_study",
    "load_dse_study",
    "open_storage",
    "ordered_intermediate_values",
    "peak_value_and_step",
    "run_worker",
    "suggest_params",
]

_UNSET = object()
AnyTrial = Trial | FrozenTrial


class DSEDegradationPruner(BasePruner):
    """Pruner that stops trials once their DSE has clearly degraded from its peak.

    The trial reports its DSE with ``trial.report(dse, step)`` after each evaluation
    (step: the epoch, or any increasing counter). ``should_prune()`` then applies a
    :class:`~dse_tune.degradation.DegradationRule` to the values reported so far, in step
    order: prune once ``patience`` evaluations in a row lie at least ``min_drop`` of the
    trial's own DSE range below its peak, never before ``warmup`` evaluations, and at
    once on a non-finite value (``nan_policy="stop"``). The rule counts reports, not
    step numbers, so steps need not be consecutive.

    The study direction is honoured: for a ``"minimize"`` study the values are negated
    before the rule sees them (report ``-DSE``, or any loss-like score).

    Args:
        rule: A ready :class:`~dse_tune.degradation.DegradationRule`; or leave it out and
            pass the rule's parameters instead.
        warmup, patience, min_drop, smoothing, nan_policy: The rule's parameters (see
            :class:`~dse_tune.degradation.DegradationRule`; unspecified ones keep the
            rule's defaults).

    Example:
        >>> import optuna
        >>> from dse_tune.integrations.optuna import DSEDegradationPruner
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> dse_by_epoch = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.95, 0.85, 0.75, 0.65, 0.55]
        >>> def objective(trial):
        ...     for evaluation, dse in enumerate(dse_by_epoch):  # stands in for training
        ...         trial.report(dse, step=10 * evaluation)
        ...         if trial.should_prune():
        ...             raise optuna.TrialPruned()
        ...     return dse
        >>> study = optuna.create_study(
        ...     direction="maximize", pruner=DSEDegradationPruner(warmup=5, patience=3)
        ... )
        >>> study.optimize(objective, n_trials=1)
        >>> trial = study.trials[0]
        >>> trial.state.name, trial.last_step
        ('PRUNED', 90)
        >>> peak_value_and_step(trial)  # what to keep from the pruned trial
        (1.0, 50)
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
        given = {
            name: value
            for name, value in (
                ("warmup", warmup),
                ("patience", patience),
                ("min_drop", min_drop),
                ("smoothing", smoothing),
                ("nan_policy", nan_policy),
            )
            if value is not _UNSET
        }
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
        """The rule's full decision (with its reason) for ``trial`` as of now."""
        values = [value for _, value in ordered_intermediate_values(trial)]
        if study.direction == StudyDirection.MINIMIZE:
            values = [-value for value in values]  # the rule assumes higher is better
        return self._rule.decide(values)

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        return self.decision(study, trial).stop

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._rule!r})"


def ordered_intermediate_values(trial: AnyTrial) -> list[tuple[int, float]]:
    """``(step, value)`` pairs reported by ``trial``, in step order.

    Works on a live :class:`optuna.trial.Trial` (inside the objective) and on a
    :class:`optuna.trial.FrozenTrial` (``study.trials``, pruners).
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
    """Best finite reported value and its step (earliest on ties); None if there is none.

    A pruned or degraded trial is worth its peak, not its last value: return this from
    the objective (and keep that step's checkpoint). ``direction`` defaults to the live
    trial's study direction, and to ``"maximize"`` (DSE) for a frozen trial.
    """
    if direction is None:
        direction = trial.study.direction if isinstance(trial, Trial) else StudyDirection.MAXIMIZE
    if isinstance(direction, str):
        if direction.lower() not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        direction = StudyDirection[direction.upper()]
    sign = -1.0 if direction == StudyDirection.MINIMIZE else 1.0
    best = None
    for step, value in ordered_intermediate_values(trial):
        if math.isfinite(value) and (best is None or sign * value > sign * best[0]):
            best = (value, step)
    return best


# --------------------------------------------------------------------------- objective

#: Where :func:`create_dse_study` keeps the objective and pruner in ``study.user_attrs``.
STUDY_SPEC_ATTR = "dse_tune"
_SPEC_FORMAT = 1
# Arguments of dse_tune.ssl.pretrain.pretrain that DSEObjective forwards; the others
# (config, out_dir, data, callbacks) it sets itself, and a trial never resumes.
_PRETRAIN_KWARGS = ("logger", "enable_progress_bar", "accelerator", "devices", "trainer_kwargs")

#: A search space: ``{config field: optuna distribution or fixed value}``, a function
#: ``trial -> {config field: value}`` (calling ``trial.suggest_*``), or the import path
#: ``"package.module:function"`` of such a function.
SearchSpace = Mapping[str, Any] | Callable[[Trial], Mapping[str, Any]] | str


def suggest_params(trial: Trial, search_space: SearchSpace) -> dict[str, Any]:
    """Sample the config overrides of ``trial`` from ``search_space`` (see :data:`SearchSpace`).

    Distributions are sampled with the matching ``trial.suggest_*`` call, so they appear
    in ``trial.params``; other values of a mapping are fixed overrides.

    Example:
        >>> from optuna.distributions import CategoricalDistribution, FloatDistribution
        >>> study = optuna.create_study(direction="maximize")
        >>> space = {"lr": FloatDistribution(1e-4, 1e-3, log=True),
        ...          "dse_beta": CategoricalDistribution([0.0, 0.1]), "epochs": 20}
        >>> params = suggest_params(study.ask(), space)
        >>> sorted(params), params["epochs"]
        (['dse_beta', 'epochs', 'lr'], 20)
    """
    if isinstance(search_space, str):
        search_space = _import_object(search_space, "search_space")
    if isinstance(search_space, Mapping):
        params = {}
        for name, spec in search_space.items():
            params[name] = (
                _suggest(trial, name, spec) if isinstance(spec, BaseDistribution) else spec
            )
        return params
    if callable(search_space):
        params = search_space(trial)
        if not isinstance(params, Mapping):
            raise TypeError(
                f"the search-space function must return a mapping of config fields, "
                f"got {type(params).__name__}"
            )
        return dict(params)
    raise TypeError(
        "search_space must be a mapping {field: distribution or value}, a function "
        f"trial -> mapping, or 'module:function', got {type(search_space).__name__}"
    )


def _suggest(trial: Trial, name: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    raise TypeError(
        f"search_space[{name!r}]: unsupported distribution {type(distribution).__name__}; use "
        "FloatDistribution, IntDistribution or CategoricalDistribution"
    )


class DSEObjective:
    """Optuna objective: pretrain one run per trial and return its **peak** DSE.

    For each trial it samples the config overrides from ``search_space``, pretrains
    ``base_config`` with them into ``out_root/STUDY/trial_NNNN`` (see
    :func:`dse_tune.ssl.pretrain.pretrain`), reports every DSE evaluation to the trial
    (``trial.report(dse, step=evaluation_index)``) and asks the study's pruner after each
    one. When the pruner says prune (with :class:`DSEDegradationPruner`: the dense
    features degrade), or the run's own degradation rule fires (``early_stop=True`` in
    the config), training stops and the trial still **completes**, with the run's peak
    DSE as its value.

    Why complete rather than ``raise optuna.TrialPruned()``: a degraded run is not a bad
    run, it is a run past its best point. Its peak checkpoint is on disk and is often
    the best of the study. A PRUNED trial would carry its last, degraded value and is
    invisible to ``study.best_trial`` and to samplers that learn from completed trials
    only; returning the peak keeps the trial comparable with runs that were never
    stopped. (``trial.intermediate_values`` still shows the whole curve.)

    ``trial.user_attrs`` of a completed trial: ``run_dir``, ``peak_dse``, ``peak_epoch``,
    ``peak_evaluation`` (index), ``peak_checkpoint`` (absolute path), ``evaluations``,
    ``epochs_run``, ``stopped_early``, ``stopped_by`` (``"pruner"``, ``"degradation
    rule"`` or None) and ``stop_reason``. A trial whose pretraining (or sampling)
    raises gets ``user_attrs["error"]`` and re-raises: pass ``catch=(Exception,)`` to
    ``study.optimize`` so that it fails only that trial (:func:`run_worker` does). A
    run without a finite DSE evaluation fails the same way.

    The study must maximize (DSE: higher is better). Run parallel trials as separate
    processes on a shared storage (:func:`create_dse_study`, :func:`run_worker`), not
    with ``n_jobs > 1``: Lightning seeds and configures process-wide state.

    Args:
        base_config: A :class:`~dse_tune.ssl.config.PretrainConfig`, a dict of its
            fields, or a YAML/JSON file of them.
        search_space: See :data:`SearchSpace`; its keys are ``PretrainConfig`` fields.
        out_root: Folder of the study's run folders.
        data: Overrides ``config.data`` (a folder, ``"synthetic"`` or a dataset object;
            only paths can be shared with other processes).
        callbacks: More Lightning callbacks for every run (not shareable either).
        prune: Ask the study's pruner after each evaluation (False: report only).
        pretrain_kwargs: More :func:`~dse_tune.ssl.pretrain.pretrain` arguments:
            ``logger``, ``enable_progress_bar`` (default False here), ``accelerator``,
            ``devices``, ``trainer_kwargs``.

    Example:
        >>> from optuna.distributions import CategoricalDistribution, FloatDistribution
        >>> objective = DSEObjective(
        ...     {"method": "dino", "epochs": 30, "early_stop": False},
        ...     {"lr": FloatDistribution(1e-4, 1e-3, log=True),
        ...      "dse_beta": CategoricalDistribution([0.0, 0.1])},
        ...     out_root="runs/study",
        ... )
        >>> study = optuna.create_study(direction="maximize", pruner=DSEDegradationPruner())
        >>> study.optimize(objective, n_trials=8, catch=(Exception,))  # doctest: +SKIP
        >>> study.best_trial.user_attrs["peak_checkpoint"]  # doctest: +SKIP
        '/.../runs/study/no-name-.../trial_0003/checkpoints/epoch=0011.ckpt'
    """

    def __init__(
        self,
        base_config: PretrainConfig | Mapping[str, Any] | str | os.PathLike,
        search_space: SearchSpace,
        out_root: str | os.PathLike,
        *,
        data: Any = None,
        callbacks: Sequence[Any] = (),
        prune: bool = True,
        pretrain_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        from dse_tune.ssl.config import PretrainConfig

        if isinstance(base_config, (str, os.PathLike)):
            base_config = PretrainConfig.from_file(base_config)
        elif isinstance(base_config, Mapping):
            base_config = PretrainConfig.from_dict(base_config)
        elif not isinstance(base_config, PretrainConfig):
            raise TypeError(
                "base_config must be a PretrainConfig, a mapping of its fields or a config "
                f"file, got {type(base_config).__name__}"
            )
        base_config.validate()
        if base_config.data != "synthetic" and Path(base_config.data).exists():
            # Absolute, so that workers started in another directory read the same images.
            base_config = base_config.replace(data=str(Path(base_config.data).absolute()))
        self.base_config = base_config
        self.search_space = _check_search_space(search_space)
        self.out_root = Path(out_root).absolute()
        if (
            isinstance(data, (str, os.PathLike))
            and str(data) != "synthetic"
            and Path(data).exists()
        ):
            data = str(Path(data).absolute())
        self.data = data
        self.callbacks = tuple(callbacks)
        self.prune = bool(prune)
        kwargs = {"enable_progress_bar": False, **dict(pretrain_kwargs or {})}
        unknown = sorted(set(kwargs) - set(_PRETRAIN_KWARGS))
        if unknown:
            raise TypeError(
                f"pretrain_kwargs: unknown or reserved argument(s) {unknown}; allowed: "
                f"{list(_PRETRAIN_KWARGS)} (config, out_dir, data and callbacks are set by "
                "DSEObjective)"
            )
        self.pretrain_kwargs = kwargs

    def study_dir(self, study_name: str) -> Path:
        """The folder of a study's runs, ``out_root/STUDY``: what ``dse-tune select``
        and :func:`dse_tune.rescore.rescore_sweep` read."""
        return self.out_root / _safe_name(study_name)

    def run_dir(self, trial: Trial | FrozenTrial, study_name: str | None = None) -> Path:
        """The run folder of ``trial``: ``out_root/STUDY/trial_NNNN``."""
        if study_name is None:
            if not isinstance(trial, Trial):
                raise TypeError("study_name is needed for a FrozenTrial")
            study_name = trial.study.study_name
        return self.study_dir(study_name) / f"trial_{trial.number:04d}"

    def __call__(self, trial: Trial) -> float:
        _check_study(trial.study)
        run_dir = self.run_dir(trial)
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            result, callback = self._pretrain(trial, run_dir)
        except Exception as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            raise
        summary = summarize_run(result)
        summary["stopped_by"] = callback.stopped_by
        for name, value in summary.items():
            trial.set_user_attr(name, value)
        if summary["peak_dse"] is None:
            evaluations = summary["evaluations"]
            message = (
                f"run {run_dir} made no DSE evaluation (epochs={result.config.epochs}, "
                f"eval_every_n_epochs={result.config.eval_every_n_epochs})"
                if evaluations == 0
                else f"run {run_dir} has no finite DSE in its {evaluations} evaluations (diverged?)"
            )
            trial.set_user_attr("error", f"RuntimeError: {message}")
            raise RuntimeError(message)
        return summary["peak_dse"]

    def _pretrain(self, trial: Trial, run_dir: Path) -> tuple[RunResult, Any]:
        from dse_tune.ssl.pretrain import pretrain

        params = suggest_params(trial, self.search_space)
        try:
            config = self.base_config.replace(**params).validate()
        except (TypeError, ValueError) as error:
            raise ValueError(f"sampled parameters {params}: {error}") from None
        if run_dir.exists() and any(run_dir.iterdir()):
            # Reusing a folder would mix two runs' checkpoints.
            raise FileExistsError(
                f"run folder {run_dir} already exists and is not empty; use a new out_root "
                "or study name"
            )
        callback = _trial_callback_class()(trial, prune=self.prune)
        result = pretrain(
            config,
            run_dir,
            data=self.data,
            callbacks=[callback, *self.callbacks],
            **self.pretrain_kwargs,
        )
        result.module = None  # the trial keeps files, not weights in memory
        return result, callback

    # ------------------------------------------------------------ sharing

    def to_spec(self) -> dict[str, Any]:
        """A JSON-able description that :meth:`from_spec` turns back into this objective
        (in another process). Raises ValueError for what another process cannot rebuild:
        a dataset object, Lightning callbacks, a search-space function defined in
        ``__main__`` or inside a function."""
        if self.data is not None and not isinstance(self.data, (str, os.PathLike)):
            raise ValueError(
                f"data is a {type(self.data).__name__} object, which other processes cannot "
                "rebuild; pass a folder path (or 'synthetic')"
            )
        if self.callbacks:
            raise ValueError(
                "Lightning callbacks cannot be shared with other processes; drop callbacks"
            )
        spec = {
            "format": _SPEC_FORMAT,
            "base_config": self.base_config.to_dict(),
            "search_space": _search_space_spec(self.search_space),
            "out_root": str(self.out_root),
            "data": None if self.data is None else str(self.data),
            "prune": self.prune,
            "pretrain_kwargs": self.pretrain_kwargs,
        }
        try:
            return json.loads(json.dumps(spec, allow_nan=False))
        except (TypeError, ValueError) as error:
            raise ValueError(f"the objective cannot be stored as JSON: {error}") from None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> DSEObjective:
        """The objective described by :meth:`to_spec`."""
        if not isinstance(spec, Mapping) or spec.get("format") != _SPEC_FORMAT:
            raise ValueError(f"not a DSEObjective description (format {_SPEC_FORMAT}): {spec!r}")
        space = spec["search_space"]
        if space["kind"] == "import":
            search_space: SearchSpace = space["path"]
        else:
            search_space = {
                name: json_to_distribution(json.dumps(entry["distribution"]))
                if "distribution" in entry
                else entry["value"]
                for name, entry in space["params"].items()
            }
        return cls(
            spec["base_config"],
            search_space,
            spec["out_root"],
            data=spec["data"],
            prune=spec["prune"],
            pretrain_kwargs=spec["pretrain_kwargs"],
        )

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(out_root={str(self.out_root)!r}, search_space={self.search_space!r})"


def summarize_run(result: RunResult) -> dict[str, Any]:
    """Peak and stop information of a finished run, as stored in ``trial.user_attrs``.

    The peak is the highest finite DSE (the earliest on ties, as
    :func:`peak_value_and_step`); its values are None when there is none.
    """
    evaluations = result.history.get("evaluations", [])
    peak = None
    for record in evaluations:
        value = record.get("dse")
        if value is not None and math.isfinite(value) and (peak is None or value > peak["dse"]):
            peak = record
    checkpoint = None
    if peak is not None and peak.get("checkpoint"):
        checkpoint = str((Path(result.run_dir) / peak["checkpoint"]).absolute())
    return {
        "run_dir": str(Path(result.run_dir).absolute()),
        "peak_dse": None if peak is None else float(peak["dse"]),
        "peak_epoch": None if peak is None else peak.get("epoch"),
        "peak_evaluation": None if peak is None else peak.get("index"),
        "peak_checkpoint": checkpoint,
        "evaluations": len(evaluations),
        "epochs_run": int(result.epochs_completed),
        "stopped_early": bool(result.stopped_early),
        "stop_reason": result.stop_reason,
    }


def _check_study(study: optuna.study.Study) -> None:
    if len(study.directions) != 1 or study.direction != StudyDirection.MAXIMIZE:
        directions = [d.name.lower() for d in study.directions]
        raise ValueError(
            f"DSEObjective returns the peak DSE (higher is better): the study must have the "
            f"single direction 'maximize', got {directions}"
        )


def _check_search_space(search_space: SearchSpace) -> SearchSpace:
    from dse_tune.ssl.config import PretrainConfig

    if isinstance(search_space, str):
        if ":" not in search_space:
            raise ValueError(f"search_space {search_space!r}: expected 'package.module:function'")
        return search_space
    if isinstance(search_space, Mapping):
        fields = {f.name for f in dataclasses.fields(PretrainConfig)}
        unknown = sorted(set(search_space) - fields)
        if unknown:
            raise ValueError(f"search_space: unknown PretrainConfig field(s) {unknown}")
        return dict(search_space)
    if callable(search_space):
        return search_space
    raise TypeError(
        "search_space must be a mapping {field: distribution or value}, a function "
        f"trial -> mapping, or 'module:function', got {type(search_space).__name__}"
    )


def _search_space_spec(search_space: SearchSpace) -> dict[str, Any]:
    if isinstance(search_space, str):
        return {"kind": "import", "path": search_space}
    if isinstance(search_space, Mapping):
        params = {}
        for name, spec in search_space.items():
            if isinstance(spec, BaseDistribution):
                params[name] = {"distribution": json.loads(distribution_to_json(spec))}
            else:
                params[name] = {"value": spec}
        return {"kind": "distributions", "params": params}
    module = getattr(search_space, "__module__", None)
    qualname = getattr(search_space, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        raise ValueError(
            f"the search-space function {qualname or search_space!r} cannot be imported by "
            "another process (defined in __main__, or a lambda or nested function); move it "
            "to a module or use a mapping of optuna distributions"
        )
    return {"kind": "import", "path": f"{module}:{qualname}"}


def _import_object(path: str, what: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{what} {path!r}: expected 'package.module:attribute'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{what} {path!r} cannot be imported: {error}") from None
    return target


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"


# ------------------------------------------------------------------- Lightning callback


class _ReportingStopRule:
    """Stands in for ``DSEMonitor.early_stopping``: the monitor calls ``decide(values)``
    once after every evaluation with the whole DSE history, so this is where each new
    value is reported and the pruner asked. A stop decided here is recorded by the
    monitor like its own (``stopped_early``, ``stop_reason`` in ``dse_history.json``)."""

    def __init__(self, callback: Any, inner: Any) -> None:
        self.callback = callback
        self.inner = inner  # the run's own DegradationRule, or None

    def decide(self, values: Sequence[float]) -> DegradationDecision:
        values = [math.nan if v is None else float(v) for v in values]
        trial = self.callback.trial
        step = len(values) - 1
        trial.report(values[-1], step=step)
        decision = None
        if self.inner is not None:
            decision = self.inner.decide(values)
            if decision.stop:
                self.callback._record_stop("degradation rule", decision.reason)
                return decision
        if self.callback.prune and trial.should_prune():
            decision = _pruner_decision(trial, values)
            self.callback._record_stop("pruner", decision.reason)
            return decision
        if decision is None:
            decision = DegradationDecision(False, "not pruned", None, None, len(values))
        return decision


def _pruner_decision(trial: Trial, values: list[float]) -> DegradationDecision:
    pruner = trial.study.pruner
    if isinstance(pruner, DSEDegradationPruner):
        decision = pruner.decision(trial.study, trial)
        return dataclasses.replace(decision, stop=True, reason=f"pruned: {decision.reason}")
    reason = (
        f"pruned by {type(pruner).__name__} after evaluation {len(values) - 1} "
        f"(DSE {values[-1]:.6g})"
    )
    return DegradationDecision(True, reason, None, None, len(values))


@functools.cache
def _trial_callback_class() -> type:
    # Built on first use: importing Lightning takes seconds, the pruner alone needs none of it.
    import lightning.pytorch as pl

    class DSETrialCallback(pl.Callback):
        """Lightning callback: report each DSE evaluation of the run's ``DSEMonitor`` to an
        Optuna trial and stop training when the study's pruner says so.

        Use it next to a :class:`dse_tune.integrations.lightning.DSEMonitor` (which
        :func:`dse_tune.ssl.pretrain.pretrain` always adds): after each evaluation it
        calls ``trial.report(dse, step=evaluation_index)``, then the monitor's own
        degradation rule (if any), then ``trial.should_prune()``. A stop is recorded by
        the monitor (``stopped_early``, ``stop_reason``) and here (:attr:`stopped_by`,
        :attr:`stop_reason`). It never raises ``TrialPruned``: the caller decides what
        the trial returns (:class:`DSEObjective`: the peak).

        Args:
            trial: The live trial.
            prune: Ask the pruner after each report (False: report only).
        """

        def __init__(self, trial: Trial, *, prune: bool = True) -> None:
            super().__init__()
            if not isinstance(trial, Trial):
                raise TypeError(f"trial must be a live optuna Trial, got {type(trial).__name__}")
            self.trial = trial
            self.prune = prune
            self.stopped_by: str | None = None
            self.stop_reason: str | None = None

        def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            from dse_tune.integrations.lightning import DSEMonitor

            monitors = [c for c in trainer.callbacks if isinstance(c, DSEMonitor)]
            if len(monitors) != 1:
                raise RuntimeError(
                    f"DSETrialCallback needs exactly one DSEMonitor among the trainer's "
                    f"callbacks, found {len(monitors)}"
                )
            monitor = monitors[0]
            inner = monitor.early_stopping
            if isinstance(inner, _ReportingStopRule):  # a second fit with this trainer
                inner = inner.inner
            monitor.early_stopping = _ReportingStopRule(self, inner)

        def _record_stop(self, source: str, reason: str) -> None:
            self.stopped_by, self.stop_reason = source, reason

    DSETrialCallback.__module__ = __name__
    DSETrialCallback.__qualname__ = "DSETrialCallback"  # also Lightning's state_key
    return DSETrialCallback


def __getattr__(name: str) -> Any:
    # ``DSETrialCallback`` is a Lightning callback class, created on first access.
    if name == "DSETrialCallback":
        return _trial_callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------- shared studies


def open_storage(storage: str | os.PathLike | BaseStorage | None) -> str | BaseStorage | None:
    """An Optuna storage from a URL or a file path.

    - ``None`` or a storage object: returned as is (None: in memory, one process only).
    - A URL (``sqlite:///study.db``, ``postgresql://...``): :class:`optuna.storages.RDBStorage`;
      for SQLite with a 60 s lock timeout, so that workers wait for each other's writes
      instead of failing with "database is locked".
    - Any other string or path: the log file of a
      ``JournalStorage(JournalFileBackend(path))`` (created if missing). It needs no
      database, only a file system with working file locks that every worker sees.
    """
    if storage is None or isinstance(storage, BaseStorage):
        return storage
    if not isinstance(storage, (str, os.PathLike)):
        raise TypeError(
            f"storage must be a URL, a file path or an optuna storage, got {type(storage).__name__}"
        )
    text = os.fspath(storage)
    if "://" in text:
        if text.startswith("sqlite"):
            return RDBStorage(text, engine_kwargs={"connect_args": {"timeout": 60}})
        return RDBStorage(text)
    path = Path(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def create_dse_study(
    objective: DSEObjective,
    *,
    storage: str | os.PathLike | BaseStorage | None = None,
    study_name: str | None = None,
    pruner: BasePruner | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    load_if_exists: bool = True,
) -> optuna.study.Study:
    """A ``"maximize"`` study for ``objective``, shareable with other processes.

    With a storage, the objective (:meth:`DSEObjective.to_spec`) and the pruner's rule
    are stored in ``study.user_attrs["dse_tune"]``, so a worker needs only the storage
    and the study name (:func:`run_worker`). Reopening an existing study with a
    different objective or pruner raises ValueError rather than mixing two
    experiments in one study.

    Args:
        objective: The objective every worker runs.
        storage: See :func:`open_storage` (None: in memory, this process only).
        study_name: The study's name (Optuna picks one if None).
        pruner: Default :class:`DSEDegradationPruner` with the rule's defaults.
            Workers rebuild a ``DSEDegradationPruner`` or ``NopPruner`` themselves;
            other pruners must be passed to :func:`run_worker` again.
        sampler: This process's sampler (samplers are not stored; Optuna's default TPE).
        load_if_exists: Join the study if it exists (it must hold the same objective).

    Example:
        >>> from optuna.distributions import FloatDistribution
        >>> objective = DSEObjective({"method": "dino"}, {"lr": FloatDistribution(1e-4, 1e-3)},
        ...                          out_root="runs/study")
        >>> study = create_dse_study(objective, storage="sqlite:///study.db",
        ...                          study_name="lr")                      # doctest: +SKIP
        >>> study.optimize(objective, n_trials=4, catch=(Exception,))       # doctest: +SKIP

    Meanwhile, in other shells: ``python -m dse_tune.integrations.optuna worker
    --storage sqlite:///study.db --study lr --n-trials 4``.
    """
    if not isinstance(objective, DSEObjective):
        raise TypeError(f"objective must be a DSEObjective, got {type(objective).__name__}")
    pruner = DSEDegradationPruner() if pruner is None else pruner
    storage = open_storage(storage)
    spec = None
    if storage is not None:
        # Check before creating anything: an unshareable objective should not leave a study.
        spec = {"objective": objective.to_spec(), "pruner": _pruner_spec(pruner)}
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize",
        pruner=pruner,
        sampler=sampler,
        load_if_exists=load_if_exists,
    )
    _check_study(study)
    if spec is not None:
        stored = study.user_attrs.get(STUDY_SPEC_ATTR)
        if stored is None:
            study.set_user_attr(STUDY_SPEC_ATTR, spec)
        elif stored != spec:
            raise ValueError(
                f"study {study.study_name!r} already exists with a different objective or pruner; "
                "use another study name (or the same settings)"
            )
    return study


def load_dse_study(
    storage: str | os.PathLike | BaseStorage,
    study_name: str,
    *,
    pruner: BasePruner | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> tuple[optuna.study.Study, DSEObjective]:
    """Join a study made by :func:`create_dse_study`: ``(study, objective)``.

    The pruner is rebuilt from the study unless given (it must be given when the study
    was created with a pruner other than ``DSEDegradationPruner`` / ``NopPruner``).
    """
    storage = open_storage(storage)
    if storage is None:
        raise ValueError("storage is required: an in-memory study cannot be joined")
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ValueError(
            f"no study {study_name!r} in the storage; studies there: {names}"
        ) from None
    spec = study.user_attrs.get(STUDY_SPEC_ATTR)
    if not isinstance(spec, Mapping) or "objective" not in spec:
        raise ValueError(
            f"study {study_name!r} holds no DSEObjective; create it with "
            "create_dse_study(..., storage=...)"
        )
    if pruner is None:
        pruner = _pruner_from_spec(spec.get("pruner") or {})
        if pruner is None:
            raise ValueError(
                f"study {study_name!r} was created with a {spec['pruner'].get('class')} pruner, "
                "which cannot be rebuilt here; pass pruner="
            )
    study = optuna.load_study(
        study_name=study_name, storage=storage, pruner=pruner, sampler=sampler
    )
    return study, DSEObjective.from_spec(spec["objective"])


def run_worker(
    storage: str | os.PathLike | BaseStorage,
    study_name: str,
    n_trials: int | None = None,
    *,
    timeout: float | None = None,
    pruner: BasePruner | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    callbacks: Sequence[Callable[[optuna.study.Study, FrozenTrial], None]] = (),
) -> optuna.study.Study:
    """Join the study and run ``n_trials`` trials (this worker's share) or until ``timeout``.

    A failing trial is recorded as FAIL (with ``user_attrs["error"]``) and the worker
    goes on. Trials are numbered by the storage, so concurrent workers never share a
    trial number or a run folder. A worker killed mid-trial leaves that trial RUNNING;
    see Optuna's heartbeat (``RDBStorage(heartbeat_interval=...)``) to fail such
    trials automatically.
    """
    if n_trials is None and timeout is None:
        raise ValueError("give n_trials or timeout, or the worker would run forever")
    study, objective = load_dse_study(storage, study_name, pruner=pruner, sampler=sampler)
    study.optimize(
        objective, n_trials=n_trials, timeout=timeout, catch=(Exception,), callbacks=list(callbacks)
    )
    return study


def _pruner_spec(pruner: BasePruner) -> dict[str, Any]:
    if isinstance(pruner, DSEDegradationPruner):
        return {"kind": "dse_degradation", "rule": dataclasses.asdict(pruner.rule)}
    if isinstance(pruner, NopPruner):
        return {"kind": "none"}
    return {"kind": "other", "class": f"{type(pruner).__module__}.{type(pruner).__qualname__}"}


def _pruner_from_spec(spec: Mapping[str, Any]) -> BasePruner | None:
    if spec.get("kind") == "dse_degradation":
        return DSEDegradationPruner(DegradationRule(**spec["rule"]))
    if spec.get("kind") == "none":
        return NopPruner()
    return None


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dse_tune.integrations.optuna worker --storage S --study NAME --n-trials K``."""
    parser = argparse.ArgumentParser(
        prog="python -m dse_tune.integrations.optuna",
        description="Join a dse_tune Optuna study (made by create_dse_study) and run trials.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run trials of a shared study")
    worker.add_argument(
        "--storage",
        required=True,
        help="RDB URL (sqlite:///study.db, postgresql://...) or the path of a JournalStorage "
        "log file",
    )
    worker.add_argument("--study", required=True, help="study name")
    worker.add_argument(
        "--n-trials", type=integer_at_least(1), default=None, help="trials this worker runs"
    )
    worker.add_argument(
        "--timeout", type=float, default=None, help="stop starting trials after this many seconds"
    )
    args = parser.parse_args(argv)
    if args.n_trials is None and args.timeout is None:
        parser.error("give --n-trials or --timeout")

    finished: list[FrozenTrial] = []
    try:
        run_worker(
            args.storage,
            args.study,
            args.n_trials,
            timeout=args.timeout,
            callbacks=[lambda study, trial: finished.append(trial)],
        )
    except (ValueError, TypeError, OSError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    for trial in finished:
        attrs = trial.user_attrs
        if trial.state == optuna.trial.TrialState.COMPLETE:
            stop = f", stopped: {attrs.get('stop_reason')}" if attrs.get("stopped_early") else ""
            print(
                f"trial {trial.number}: peak DSE {trial.value:.4f} at epoch "
                f"{attrs.get('peak_epoch')} ({attrs.get('peak_checkpoint')}){stop}"
            )
        else:
            print(f"trial {trial.number}: {trial.state.name} {attrs.get('error', '')}".rstrip())
    return 0


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: one set of classes, so
    # isinstance checks (pruner, callback) hold whoever imports the module.
    from dse_tune.integrations.optuna import main as _main

    sys.exit(_main())

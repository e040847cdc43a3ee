"""The ready Optuna objective: one pretraining run per trial, its peak DSE as the value.

Lightning is imported only when a trial runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, Trial

from dse_tune.integrations.optuna.listener import TrialReporter
from dse_tune.integrations.optuna.space import SearchSpace, check_search_space, suggest_params
from dse_tune.runs import RunRecord

if TYPE_CHECKING:
    from dse_tune.ssl.config import PretrainConfig
    from dse_tune.ssl.pretrain import RunResult

__all__ = ["DSEObjective", "summarize_run"]

# Arguments of dse_tune.ssl.pretrain.pretrain that DSEObjective forwards; the others
# (config, out_dir, data, callbacks, listeners) it sets itself, and a trial never resumes.
_PRETRAIN_KWARGS = ("logger", "enable_progress_bar", "accelerator", "devices", "trainer_kwargs")


class DSEObjective:
    """Optuna objective: pretrain one run per trial and return its **peak** DSE.

    Each trial samples config overrides from ``search_space``, pretrains ``base_config``
    with them into ``out_root/STUDY/trial_NNNN`` and reports every DSE evaluation to the
    trial (a :class:`~dse_tune.integrations.optuna.listener.TrialReporter`, which asks the
    study's pruner after each). When the pruner or the run's own rule (``early_stop=True``)
    stops training, the trial still **completes** with the run's peak: a degraded run is
    past its best point, not bad, and its peak checkpoint is on disk, whereas a PRUNED
    trial would be invisible to ``study.best_trial`` and to samplers.

    ``trial.user_attrs``: those of :func:`summarize_run`, and ``stopped_by``
    (``"pruner"``, ``"degradation rule"`` or None). A trial whose sampling or pretraining
    raises, or that has no finite DSE, gets ``user_attrs["error"]`` and raises: pass
    ``catch=(Exception,)`` to ``study.optimize`` to fail only that trial.

    The study must maximize. Run parallel trials as processes sharing a storage
    (``create_dse_study``, ``run_worker``), not with ``n_jobs > 1``: Lightning seeds and
    configures process-wide state.

    Args:
        base_config: A :class:`~dse_tune.ssl.config.PretrainConfig`, a dict of its
            fields, or a YAML/JSON file of them.
        search_space: See :data:`~dse_tune.integrations.optuna.space.SearchSpace` (keys: ``PretrainConfig`` fields).
        data: Overrides ``config.data`` (a folder, ``"synthetic"`` or a dataset object;
            only paths can be shared with other processes, and no ``callbacks``).
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
        >>> objective.run_dir(optuna.create_study(study_name="lr").ask()).parts[-3:]
        ('study', 'lr', 'trial_0000')
        >>> study = optuna.create_study(direction="maximize")
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
        self.base_config = _load_config(base_config)
        self.search_space = check_search_space(search_space)
        self.out_root = Path(out_root).absolute()
        self.data = _absolute_if_path(data)
        self.callbacks = tuple(callbacks)
        self.prune = bool(prune)
        kwargs = {"enable_progress_bar": False, **dict(pretrain_kwargs or {})}
        unknown = sorted(set(kwargs) - set(_PRETRAIN_KWARGS))
        if unknown:
            raise TypeError(f"pretrain_kwargs: unknown or reserved argument(s) {unknown}; allowed: "
                            f"{list(_PRETRAIN_KWARGS)} (config, out_dir, data and callbacks are set by DSEObjective)")
        self.pretrain_kwargs = kwargs

    def study_dir(self, study_name: str) -> Path:
        """The folder of a study's runs, ``out_root/STUDY`` (what ``dse-tune select`` reads)."""
        return self.out_root / (re.sub(r"[^A-Za-z0-9._-]+", "_", study_name).strip("._") or "study")

    def run_dir(self, trial: Trial | FrozenTrial, study_name: str | None = None) -> Path:
        """The run folder of ``trial``: ``out_root/STUDY/trial_NNNN``."""
        if study_name is None:
            if not isinstance(trial, Trial):
                raise TypeError("study_name is needed for a FrozenTrial")
            study_name = trial.study.study_name
        return self.study_dir(study_name) / f"trial_{trial.number:04d}"

    def __call__(self, trial: Trial) -> float:
        check_study(trial.study)
        run_dir = self.run_dir(trial)
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            result, reporter = self._pretrain(trial, run_dir)
        except Exception as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            raise
        summary = {**summarize_run(result), "stopped_by": reporter.stopped_by}
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

    def _pretrain(self, trial: Trial, run_dir: Path) -> tuple[RunResult, TrialReporter]:
        from dse_tune.ssl.pretrain import pretrain

        params = suggest_params(trial, self.search_space)
        try:
            config = self.base_config.replace(**params).validate()
        except (TypeError, ValueError) as error:
            raise ValueError(f"sampled parameters {params}: {error}") from None
        if run_dir.exists() and any(run_dir.iterdir()):
            # Reusing a folder would mix two runs' checkpoints.
            raise FileExistsError(f"run folder {run_dir} already exists and is not empty; use a new out_root "
                                  "or study name")
        reporter = TrialReporter(trial, prune=self.prune)
        result = pretrain(config, run_dir, data=self.data, callbacks=self.callbacks, listeners=[reporter],
                          **self.pretrain_kwargs)
        result.module = None  # the trial keeps files, not weights in memory
        return result, reporter

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(out_root={str(self.out_root)!r}, search_space={self.search_space!r})"


def summarize_run(result: RunResult) -> dict[str, Any]:
    """What ``trial.user_attrs`` stores of a finished run: ``run_dir``, the peak
    (:attr:`dse_tune.runs.RunRecord.best`; None when there is none): ``peak_dse``,
    ``peak_epoch``, ``peak_evaluation``, ``peak_checkpoint`` (absolute), and
    ``evaluations``, ``epochs_run``, ``stopped_early``, ``stop_reason``."""
    run_dir = Path(result.run_dir).absolute()
    run = RunRecord.from_dict(result.history, name=run_dir.name, path=run_dir)
    best = run.best
    checkpoint = None if best is None else run.checkpoint_path(best)
    return {
        "run_dir": str(run_dir),
        "peak_dse": None if best is None else float(best.dse),
        "peak_epoch": None if best is None else best.epoch,
        "peak_evaluation": None if best is None else best.index,
        "peak_checkpoint": None if checkpoint is None else str(checkpoint.absolute()),
        "evaluations": len(run.evaluations),
        "epochs_run": int(result.epochs_completed),
        "stopped_early": bool(result.stopped_early),
        "stop_reason": result.stop_reason,
    }


def check_study(study: optuna.study.Study) -> None:
    """ValueError unless ``study`` has the single direction ``"maximize"`` (DSE)."""
    if len(study.directions) != 1 or study.direction != StudyDirection.MAXIMIZE:
        directions = [d.name.lower() for d in study.directions]
        raise ValueError(f"DSEObjective returns the peak DSE (higher is better): the study must have the "
                         f"single direction 'maximize', got {directions}")


def _load_config(base_config: Any) -> PretrainConfig:
    from dse_tune.ssl.config import PretrainConfig

    if isinstance(base_config, (str, os.PathLike)):
        base_config = PretrainConfig.from_file(base_config)
    elif isinstance(base_config, Mapping):
        base_config = PretrainConfig.from_dict(base_config)
    elif not isinstance(base_config, PretrainConfig):
        raise TypeError(f"base_config must be a PretrainConfig, a mapping of its fields or a config file, "
                        f"got {type(base_config).__name__}")
    base_config.validate()
    # Absolute, so that workers started in another directory read the same images.
    data = _absolute_if_path(base_config.data)
    return base_config if data == base_config.data else base_config.replace(data=data)


def _absolute_if_path(data: Any) -> Any:
    if isinstance(data, (str, os.PathLike)) and str(data) != "synthetic" and Path(data).exists():
        return str(Path(data).absolute())
    return data

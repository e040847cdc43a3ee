"""Shared studies: storage, the stored objective, and workers that join.

:func:`create_dse_study` keeps the objective and the pruner's rule (see
:mod:`~dse_tune.integrations.optuna.spec`) in the study's storage, so another process
joins with the storage and the study's name only (:func:`load_dse_study`,
:func:`run_worker`), or from a shell::

    dse-tune optuna-worker --storage sqlite:///study.db --study NAME --n-trials 4
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import optuna
from optuna.pruners import BasePruner
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial

from dse_tune.integrations.optuna.objective import DSEObjective, check_study
from dse_tune.integrations.optuna.pruner import DSEDegradationPruner
from dse_tune.integrations.optuna.spec import (
    objective_from_spec,
    objective_to_spec,
    pruner_from_json,
    pruner_to_json,
)

__all__ = ["STUDY_SPEC_ATTR", "create_dse_study", "load_dse_study", "open_storage", "run_worker"]

#: Where :func:`create_dse_study` keeps the objective and pruner in ``study.user_attrs``.
STUDY_SPEC_ATTR = "dse_tune"

Storage = str | os.PathLike | BaseStorage


def open_storage(storage: Storage | None) -> str | BaseStorage | None:
    """An Optuna storage from a URL or a file path (None: in memory, one process only).

    A URL (``sqlite:///study.db``, ``postgresql://...``) gives an
    :class:`optuna.storages.RDBStorage`, for SQLite with a 60 s lock timeout so that
    workers wait for each other's writes instead of failing with "database is locked".
    Any other path is the log file of a ``JournalStorage`` (created if missing): no
    database, only a file system with working file locks that every worker sees. A
    storage object is returned as is.

    Example:
        >>> import tempfile
        >>> journal = open_storage(Path(tempfile.mkdtemp()) / "study.log")
        >>> type(journal).__name__, open_storage(None) is None
        ('JournalStorage', True)
    """
    if storage is None or isinstance(storage, BaseStorage):
        return storage
    if not isinstance(storage, (str, os.PathLike)):
        raise TypeError(f"storage must be a URL, a file path or an optuna storage, got {type(storage).__name__}")
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
    storage: Storage | None = None,
    study_name: str | None = None,
    pruner: BasePruner | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    load_if_exists: bool = True,
) -> optuna.study.Study:
    """A ``"maximize"`` study for ``objective``, shareable with other processes.

    With a storage (:func:`open_storage`), the objective (:func:`objective_to_spec`) and
    the pruner's rule are stored in ``study.user_attrs["dse_tune"]``, so a worker needs
    only the storage and the study name (:func:`run_worker`). Reopening an existing study
    with a different objective or pruner raises ValueError rather than mixing two
    experiments in one study.

    Args:
        pruner: Default :class:`~dse_tune.integrations.optuna.DSEDegradationPruner`.
            Workers rebuild a ``DSEDegradationPruner`` or ``NopPruner`` themselves;
            other pruners must be passed to :func:`run_worker`.
        sampler: This process's sampler (samplers are not stored; Optuna's default TPE).

    Example:
        >>> import tempfile
        >>> from optuna.distributions import FloatDistribution
        >>> folder = Path(tempfile.mkdtemp())
        >>> objective = DSEObjective({"method": "dino"}, {"lr": FloatDistribution(1e-4, 1e-3)},
        ...                          out_root=folder / "runs")
        >>> study = create_dse_study(objective, storage=folder / "study.log", study_name="lr")
        >>> study.user_attrs["dse_tune"]["pruner"]["kind"]
        'dse_degradation'
        >>> study.optimize(objective, n_trials=4, catch=(Exception,))  # doctest: +SKIP

    Meanwhile, in other shells: ``dse-tune optuna-worker --storage STUDY.log --study lr
    --n-trials 4``.
    """
    if not isinstance(objective, DSEObjective):
        raise TypeError(f"objective must be a DSEObjective, got {type(objective).__name__}")
    pruner = DSEDegradationPruner() if pruner is None else pruner
    storage = open_storage(storage)
    spec = None
    if storage is not None:
        # Check before creating anything: an unshareable objective should not leave a study.
        spec = {"objective": objective_to_spec(objective), "pruner": pruner_to_json(pruner)}
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize", pruner=pruner,
                                sampler=sampler, load_if_exists=load_if_exists)
    check_study(study)
    if spec is not None:
        stored = study.user_attrs.get(STUDY_SPEC_ATTR)
        if stored is None:
            study.set_user_attr(STUDY_SPEC_ATTR, spec)
        elif stored != spec:
            raise ValueError(f"study {study.study_name!r} already exists with a different objective or pruner; "
                             "use another study name (or the same settings)")
    return study


def load_dse_study(
    storage: Storage,
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
        raise ValueError(f"no study {study_name!r} in the storage; studies there: {names}") from None
    spec = study.user_attrs.get(STUDY_SPEC_ATTR)
    if not isinstance(spec, Mapping) or "objective" not in spec:
        raise ValueError(f"study {study_name!r} holds no DSEObjective; create it with "
                         "create_dse_study(..., storage=...)")
    if pruner is None:
        pruner = pruner_from_json(spec.get("pruner") or {})
        if pruner is None:
            raise ValueError(f"study {study_name!r} was created with a {spec['pruner'].get('class')} pruner, "
                             "which cannot be rebuilt here; pass pruner=")
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner, sampler=sampler)
    return study, objective_from_spec(spec["objective"])


def run_worker(
    storage: Storage,
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
    goes on. Concurrent workers never share a trial number or a run folder, except on
    SQLite for trials queued with ``enqueue_trial`` (see below): use PostgreSQL, MySQL or
    a JournalStorage file for several workers. A worker killed mid-trial leaves that trial
    RUNNING; Optuna's heartbeat (``RDBStorage(heartbeat_interval=...)``) fails such trials.
    """
    if n_trials is None and timeout is None:
        raise ValueError("give n_trials or timeout, or the worker would run forever")
    study, objective = load_dse_study(storage, study_name, pruner=pruner, sampler=sampler)
    deadline = None if timeout is None else time.monotonic() + timeout
    done = [0]

    def count(study: optuna.study.Study, trial: FrozenTrial) -> None:
        done[0] += 1

    while n_trials is None or done[0] < n_trials:
        remaining_time = None if deadline is None else deadline - time.monotonic()
        if remaining_time is not None and remaining_time <= 0:
            break
        try:
            study.optimize(objective, n_trials=None if n_trials is None else n_trials - done[0],
                           timeout=remaining_time, catch=(Exception,), callbacks=[count, *callbacks])
            break
        except ValueError as error:
            # SQLite has no row locks: two workers can both pop the same queued trial
            # (Optuna issues #4002, #4621); the one that finishes second cannot tell it.
            # That trial is the other worker's: go on with this worker's own share.
            if not str(error).startswith("Cannot tell a"):
                raise
            warnings.warn(f"another worker finished a queued trial that this worker ran too ({error}); this "
                          "happens with SQLite storage, which cannot lock a trial; use PostgreSQL, MySQL or "
                          "a JournalStorage file for several workers", RuntimeWarning, stacklevel=2)
    return study

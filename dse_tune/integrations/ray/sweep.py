"""A whole sweep from a search space: spec -> :class:`ray.tune.Tuner`, run, restore.

:func:`build_tuner` turns a :class:`~dse_tune.search_space.SweepSpec` into a Tuner;
:func:`run_sweep` runs it and summarizes the sweep folder; :func:`restore_tuner` continues
an interrupted sweep, keeping finished trials. The run folders must be reachable from the
driver: a local sweep folder, or on a multi-node cluster a shared (NFS) one.

Example:
    >>> from dse_tune.search_space import parse_search_space
    >>> spec = parse_search_space({"pretrain": {"lr": {"loguniform": [1e-4, 1e-3]}}})
    >>> connect(num_cpus=2)  # doctest: +SKIP
    'started a local Ray cluster with 2 CPUs'
    >>> summary = run_sweep(spec, "runs/sweeps/example", progress_reporter=progress_reporter(spec))  # doctest: +SKIP
    >>> type(progress_reporter(spec)).__name__
    'CLIReporter'
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune

from dse_tune.integrations.optuna.space import build_pruner
from dse_tune.integrations.ray.reporter import METRIC
from dse_tune.integrations.ray.space import param_space, tune_resources
from dse_tune.integrations.ray.stopper import OptunaPrunerStopper
from dse_tune.integrations.ray.trainable import pretrain_trainable
from dse_tune.runs import TUNER_STATE_FILE, is_sweep
from dse_tune.sweeps import (
    SUMMARY_FILE,
    SweepSummary,
    absolute_data,
    load_saved_spec,
    save_sweep_record,
    saved_data,
    summarize_sweep,
    write_json,
)

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from dse_tune.search_space import SweepSpec

__all__ = ["build_tuner", "connect", "progress_reporter", "restore_tuner", "run_sweep"]


def connect(address: str | None = None, *, num_cpus: int | None = None) -> str:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local one.

    A local cluster gets ``num_cpus`` CPUs (default: those this process may use).
    Nothing happens if Ray is already initialized. Returns what was done, for logs.
    """
    import ray

    if ray.is_initialized():
        return "using the Ray session already running in this process"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address)
        return f"connected to the Ray cluster at {address}"
    cpus = num_cpus or _available_cpus()
    ray.init(num_cpus=cpus, include_dashboard=False)
    return f"started a local Ray cluster with {cpus} CPUs"


def build_tuner(
    spec: SweepSpec, sweep_dir: str | Path, *, data: str | None = None, trial_callbacks: Sequence[pl.Callback] = (),
    progress_reporter: Any = None, tune_callbacks: Sequence[tune.Callback] = (), verbose: int = 1,
    trial_listeners: Sequence[Any] = (),
) -> tune.Tuner:
    """A :class:`ray.tune.Tuner` for ``spec`` that writes the sweep into ``sweep_dir``.

    Search: OptunaSearch on :data:`~dse_tune.integrations.ray.reporter.METRIC`
    (``algorithm: optuna``) or Tune's variant generator (``random``, grids). Stopping:
    :class:`OptunaPrunerStopper` around the spec's pruner. A retried trial
    (``max_failures``) resumes from its run folder. ``resources.workers > 1`` makes each
    trial a Ray Train ``TorchTrainer`` (:mod:`~dse_tune.integrations.ray.distributed`).
    The normalized space and the data are saved into ``sweep_dir`` for
    :func:`restore_tuner`. Ray must be initialized (see :func:`connect`).
    """
    sweep_dir = Path(sweep_dir).resolve()
    if is_sweep(sweep_dir):
        raise FileExistsError(f"{sweep_dir} already holds a sweep; resume it (dse-tune sweep --resume {sweep_dir}) "
                              "or choose another folder")
    data = absolute_data(data if data is not None else spec.fixed.get("data"))
    save_sweep_record(spec, sweep_dir, data)
    search_alg, max_concurrent = _search_algorithm(spec)
    return tune.Tuner(
        _trainable_for(spec, data, trial_callbacks, trial_listeners),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", search_alg=search_alg, num_samples=spec.num_samples,
            max_concurrent_trials=max_concurrent,
            # A new trial reuses a finished trial's worker: no second start-up (imports,
            # CUDA context) per trial. Not a multi-worker trial's driver: a stopped one is
            # ended with its actor, which takes its Ray Train run down with it.
            reuse_actors=not spec.resources.distributed,
        ),
        run_config=tune.RunConfig(
            name=sweep_dir.name, storage_path=str(sweep_dir.parent), stop=_stopper_for(spec),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            progress_reporter=progress_reporter, callbacks=list(tune_callbacks), verbose=verbose,
        ),
    )


def restore_tuner(
    sweep_dir: str | Path, *, data: str | None = None, trial_callbacks: Sequence[pl.Callback] = (),
    trial_listeners: Sequence[Any] = (),
) -> tuple[tune.Tuner, SweepSpec]:
    """Continue an interrupted sweep: unfinished and errored trials resume from their
    run folders' latest checkpoints; finished (and stopped) trials are kept as they are.

    ``data`` defaults to the one the sweep was started with.
    """
    sweep_dir = Path(sweep_dir).resolve()
    if not is_sweep(sweep_dir):
        raise FileNotFoundError(f"{sweep_dir} holds no sweep to resume (no {TUNER_STATE_FILE})")
    spec = load_saved_spec(sweep_dir)
    data = absolute_data(data) if data is not None else saved_data(sweep_dir)
    trainable = _trainable_for(spec, data, trial_callbacks, trial_listeners)
    return tune.Tuner.restore(str(sweep_dir), trainable, resume_unfinished=True, resume_errored=True), spec


def run_sweep(
    spec: SweepSpec | None, sweep_dir: str | Path, *, data: str | None = None, resume: bool = False,
    trial_callbacks: Sequence[pl.Callback] = (), progress_reporter: Any = None,
    tune_callbacks: Sequence[tune.Callback] = (), verbose: int = 1, trial_listeners: Sequence[Any] = (),
) -> SweepSummary:
    """Run (or with ``resume`` continue) a sweep and summarize it.

    With a ``progress_reporter`` (e.g. :func:`progress_reporter`) Tune's classic
    progress table is printed (``verbose=0``: nothing). Writes the summary
    (:data:`dse_tune.sweeps.SUMMARY_FILE`) and returns
    :func:`dse_tune.sweeps.summarize_sweep` of the sweep folder.
    """
    sweep_dir = Path(sweep_dir).resolve()
    trials = {"data": data, "trial_callbacks": trial_callbacks, "trial_listeners": trial_listeners}
    if resume:
        tuner, spec = restore_tuner(sweep_dir, **trials)
    elif spec is None:
        raise ValueError("spec is required unless resume=True")
    else:
        tuner = build_tuner(spec, sweep_dir, progress_reporter=progress_reporter, tune_callbacks=tune_callbacks,
                            verbose=verbose, **trials)
    with _classic_output():
        result_grid = tuner.fit()
    errored = [Path(result.path).name for result in result_grid if result.error is not None]
    summary = summarize_sweep(sweep_dir, spec, errored_trial_dirs=errored)
    write_json(sweep_dir / SUMMARY_FILE, summary.to_dict())
    return summary


def progress_reporter(spec: SweepSpec) -> tune.ProgressReporter:
    """Tune's classic progress table: the searched fields, epoch, DSE and best DSE."""
    return tune.CLIReporter(
        parameter_columns=list(spec.dimensions),
        metric_columns={"epoch": "epoch", "dse": "DSE", METRIC: "best DSE"},
        max_report_frequency=30,
    )


# --------------------------------------------------------------------------- helpers


def _search_algorithm(spec: SweepSpec) -> tuple[Any, int | None]:
    """The search algorithm and the ``max_concurrent_trials`` Tune should apply."""
    if spec.algorithm == "optuna" and spec.dimensions:
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=METRIC, mode="max", seed=spec.sampler_seed), spec.max_concurrent_trials
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune applies max_concurrent_trials to Searchers only; the variant generator takes
    # its own limit.
    return BasicVariantGenerator(random_state=spec.sampler_seed, max_concurrent=spec.max_concurrent_trials or 0), None


def _trainable_for(
    spec: SweepSpec, data: str | None, trial_callbacks: Sequence[pl.Callback], trial_listeners: Sequence[Any] = ()
) -> Any:
    """One process per trial (function trainable), or a Ray Train run over its workers."""
    common = {"base_config": spec.base_config(), "data": data, "callbacks": list(trial_callbacks),
              "listeners": list(trial_listeners)}
    if spec.resources.distributed:
        from dse_tune.integrations.ray.distributed import distributed_pretrain_trainable

        pruner = spec.pruner if build_pruner(spec.pruner) is not None else None
        trainable = tune.with_parameters(distributed_pretrain_trainable, resources=spec.resources, pruner=pruner,
                                         **common)
    else:
        trainable = tune.with_parameters(pretrain_trainable, gpu=spec.resources.gpu, **common)
    return tune.with_resources(trainable, tune_resources(spec.resources))


def _stopper_for(spec: SweepSpec) -> OptunaPrunerStopper | None:
    pruner = build_pruner(spec.pruner)
    return None if pruner is None else OptunaPrunerStopper(pruner, metric="dse", mode="max")


def _available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def _classic_output() -> Iterator[None]:
    # Tune's newer console output ignores progress reporters (and prints even at
    # verbose=0); RAY_AIR_NEW_OUTPUT=0 brings back the classic table of a CLIReporter.
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        os.environ.pop("RAY_AIR_NEW_OUTPUT")
        if previous is not None:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous

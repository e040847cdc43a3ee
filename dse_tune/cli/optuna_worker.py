"""``dse-tune optuna-worker``: join a shared Optuna study and run some of its trials.

The study is one made by :func:`dse_tune.integrations.optuna.create_dse_study` with a
storage; the worker needs only that storage and the study's name::

    dse-tune optuna-worker --storage sqlite:///study.db --study NAME --n-trials 4

(``python -m dse_tune.integrations.optuna worker ...``, its older name, still runs it for one
release, with a deprecation warning.)
"""

from __future__ import annotations

import argparse
from typing import Any

from dse_tune.cli.common import fail, integer_at_least, number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", required=True,
                        help="RDB URL (sqlite:///study.db, postgresql://...) or the path of a JournalStorage log file")
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--n-trials", type=integer_at_least(1), default=None, help="trials this worker runs")
    parser.add_argument("--timeout", type=number, default=None, help="stop starting trials after this many seconds")


def run(args: argparse.Namespace) -> int:
    if args.n_trials is None and args.timeout is None:
        fail("give --n-trials or --timeout")
    from dse_tune.integrations.optuna import run_worker

    finished: list[Any] = []
    try:
        run_worker(args.storage, args.study, args.n_trials, timeout=args.timeout,
                   callbacks=[lambda study, trial: finished.append(trial)])
    except (ValueError, TypeError, OSError) as error:
        fail(str(error))
    for trial in finished:
        print(describe_trial(trial))
    return 0


def describe_trial(trial: Any) -> str:
    """One line per finished trial: its peak DSE and checkpoint, or why it failed."""
    import optuna

    attrs = trial.user_attrs
    if trial.state == optuna.trial.TrialState.COMPLETE:
        stop = f", stopped: {attrs.get('stop_reason')}" if attrs.get("stopped_early") else ""
        return (f"trial {trial.number}: peak DSE {trial.value:.4f} at epoch {attrs.get('peak_epoch')} "
                f"({attrs.get('peak_checkpoint')}){stop}")
    return f"trial {trial.number}: {trial.state.name} {attrs.get('error', '')}".rstrip()

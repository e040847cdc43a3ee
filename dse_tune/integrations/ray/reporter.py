"""The run listener that reports each DSE evaluation of a trial to Ray Tune.

:class:`TuneReporter` is added to the trial's run through
``pretrain(..., listeners=[...])``: the run's tracker calls it after every evaluation,
once the evaluation's checkpoint is saved and the history written, and it calls
``ray.tune.report`` with the evaluation's metrics and a :class:`ray.tune.Checkpoint`
holding that checkpoint. It reads nothing from Lightning: the run folder
(:mod:`dse_tune.runs`) has everything it sends.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ray import tune

from dse_tune.degradation import DegradationDecision
from dse_tune.runs import COMPONENTS, Evaluation, RunRecord, read_run

__all__ = ["CHECKPOINT_FILE", "CHECKPOINT_STATE_FILE", "METRIC", "STAGING_PREFIX", "TuneReporter", "node_id"]

#: What the search algorithm optimizes: a trial's best DSE so far. Tune tells the
#: searcher the *last* reported value, and a stopped trial's last DSE is by
#: construction below its peak, so the searcher is given the peak
#: (:func:`dse_tune.degradation.peak`: NaN-safe).
METRIC = "dse_best"
#: The Lightning checkpoint inside a Tune checkpoint.
CHECKPOINT_FILE = "model.ckpt"
#: The evaluation record and DSE history inside a Tune checkpoint (not named like the
#: run's history, so the selector never mistakes a checkpoint for a run).
CHECKPOINT_STATE_FILE = "dse_state.json"
#: A Tune checkpoint being staged in the run folder.
STAGING_PREFIX = ".tune_checkpoint_"

_COMPONENT_METRICS = {name: f"dse_{name}" for name in COMPONENTS}


class TuneReporter:
    """Report every DSE evaluation of a run to Ray Tune (a run listener).

    Each call sends ``dse``, ``dse_inter``, ``dse_intra_image``, ``dse_intra_batch``,
    ``dse_dim``, ``dse_best`` (the run's peak so far, :func:`dse_tune.degradation.peak`:
    NaN only while no DSE is finite), ``epoch``, ``evaluation`` (index),
    ``global_step``, ``node_id`` and ``run_dir``, with a :class:`ray.tune.Checkpoint`
    holding the evaluation's checkpoint (:data:`CHECKPOINT_FILE`) and
    :data:`CHECKPOINT_STATE_FILE` (the evaluation record and the history so far).

    Args:
        run_dir: the trial's run folder (the tracker writes it before calling).
        send_history: add ``dse_history`` (every DSE value so far, in evaluation order)
            to the first report. A resumed trial sets it, so a stopper rebuilt on the
            driver (a restored sweep) sees the values it missed.
        is_global_zero: ``() -> bool``, whether this process reports (rank 0 under
            DDP); default: Lightning's global rank is 0.

    Tune blocks the trial in ``report`` until its stopper has decided, so a stopped
    trial's run folder ends exactly at the evaluation that stopped it.

    Example:
        >>> reporter = TuneReporter("runs/sweep/runs/trial_0")
        >>> pretrain(config, reporter.run_dir, listeners=[reporter])  # doctest: +SKIP
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        send_history: bool = False,
        is_global_zero: Callable[[], bool] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.send_history = send_history
        self.is_global_zero = is_global_zero or _lightning_rank_is_zero

    def __call__(self, evaluation: Evaluation, decision: DegradationDecision | None = None) -> None:
        if not self.is_global_zero():
            return
        run = read_run(self.run_dir)
        with self.staged_checkpoint(evaluation, run) as staging:
            tune.report(self.metrics(evaluation, run), checkpoint=tune.Checkpoint.from_directory(str(staging)))

    @contextlib.contextmanager
    def staged_checkpoint(self, evaluation: Evaluation, run: RunRecord) -> Iterator[Path]:
        """A folder holding :data:`CHECKPOINT_FILE` (the evaluation's checkpoint) and
        :data:`CHECKPOINT_STATE_FILE` (the evaluation and the history up to it), removed
        on exit: what Tune (or Ray Train) copies into its storage."""
        source = run.checkpoint_path(evaluation)
        if source is None or not source.is_file():
            raise RuntimeError(
                f"{self.run_dir}: evaluation {evaluation.index} has no checkpoint file "
                f"({evaluation.checkpoint!r}); a Tune trial reports one per evaluation to resume "
                "from, so keep the DSE monitor's checkpoints on"
            )
        # Staged next to the run's checkpoints, so that a hard link can stand in for a copy.
        with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=self.run_dir) as staging:
            staging = Path(staging)
            _link_or_copy(source, staging / CHECKPOINT_FILE)
            state = {"evaluation": evaluation.to_dict(), "history": run.to_dict()}
            (staging / CHECKPOINT_STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
            yield staging

    def metrics(self, evaluation: Evaluation, run: RunRecord) -> dict[str, Any]:
        """What is reported for ``evaluation`` of ``run`` (the history up to it)."""
        best = run.peak.value
        metrics: dict[str, Any] = {
            "dse": float(evaluation.dse),
            **{metric: _float(evaluation.components.get(name)) for name, metric in _COMPONENT_METRICS.items()},
            METRIC: math.nan if best is None else float(best),
            "epoch": evaluation.epoch,
            "evaluation": evaluation.index,
            "global_step": evaluation.global_step,
            "node_id": node_id(),
            "run_dir": str(self.run_dir),
        }
        if self.send_history:
            metrics["dse_history"] = run.dse
            self.send_history = False
        return metrics


def node_id() -> str:
    """The Ray node this process runs on (the host name outside a Ray worker)."""
    import ray

    # Outside a Ray worker (a plain training loop) asking for the context would start Ray.
    if ray.is_initialized():
        try:
            return ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 (a client-mode session without node ids)
            pass
    return socket.gethostname()


def _lightning_rank_is_zero() -> bool:
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _link_or_copy(source: Path, target: Path) -> None:
    # A hard link costs nothing; Tune copies the folder into its storage anyway.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)

"""The run listener that reports each DSE evaluation of a trial to Ray Tune.

No Tune checkpoint goes with the metrics: the run folder (:mod:`dse_tune.runs`) already
holds every evaluation's checkpoint and the history, and a trial resumes from it
(:func:`~dse_tune.integrations.ray.trainable.resume_point`).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from dse_tune.degradation import DegradationDecision
from dse_tune.runs import COMPONENTS, Evaluation, RunRecord, read_run

__all__ = ["METRIC", "TuneReporter", "node_id"]

#: What the search algorithm optimizes: a trial's best DSE so far (NaN-safe peak). Tune
#: tells the searcher the *last* reported value, which for a stopped trial is below its peak.
METRIC = "dse_best"


class TuneReporter:
    """Report every DSE evaluation of a run to Ray Tune (a run listener).

    Each call sends ``dse``, ``dse_inter``, ``dse_intra_image``, ``dse_intra_batch``,
    ``dse_dim``, ``dse_noise`` (NaN when not estimated), ``dse_best`` (the run's peak so
    far; NaN while none is finite), ``epoch``, ``evaluation`` (index), ``global_step``,
    ``node_id`` and ``run_dir`` (where the sweep's stopper marks a stop). Tune blocks in
    ``report`` until the driver has taken the result, so a stopped trial's run folder ends
    at the evaluation that stopped it.

    Args:
        send_history: add ``dse_history`` (every DSE value so far) to the first report,
            so a stopper rebuilt on the driver (a restored sweep) sees what it missed.
        is_global_zero: ``() -> bool``, whether this process reports (rank 0 under
            DDP); default: Lightning's global rank is 0.

    Example:
        >>> reporter = TuneReporter("runs/sweep/runs/trial_0")
        >>> tracker.add_listener(reporter)  # doctest: +SKIP
    """

    def __init__(self, run_dir: str | os.PathLike, *, send_history: bool = False,
                 is_global_zero: Callable[[], bool] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.send_history = send_history
        self.is_global_zero = is_global_zero or _lightning_rank_is_zero

    def __call__(self, evaluation: Evaluation, decision: DegradationDecision | None = None) -> None:
        if self.is_global_zero():
            tune.report(self.metrics(evaluation, read_run(self.run_dir)))

    def metrics(self, evaluation: Evaluation, run: RunRecord) -> dict[str, Any]:
        """What is reported for ``evaluation`` of ``run`` (the history up to it)."""
        best = run.peak.value
        metrics: dict[str, Any] = {
            "dse": float(evaluation.dse),
            "dse_noise": _float(evaluation.noise),  # the stopper passes it to the rule
            **{f"dse_{name}": _float(evaluation.components.get(name)) for name in COMPONENTS},
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


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)

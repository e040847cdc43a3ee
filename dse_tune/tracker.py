"""Framework-free DSE monitoring for any training loop: score, record, decide, notify.

:class:`DSETracker` is the one place where a DSE evaluation happens during training:
it turns a model (or its dense tokens) into a scored :class:`~dse_tune.runs.Evaluation`
with the tolerant scorer, appends it to the run's history, asks the degradation rule,
saves the checkpoint through a caller-given function, writes the run folder, and tells
its listeners. The Lightning :class:`~dse_tune.integrations.lightning.DSEMonitor` is a
thin wrapper around it; a plain PyTorch loop uses it directly::

    tracker = DSETracker(probe_images, run_dir="runs/a", every_n=5, rule=DegradationRule())
    for epoch in range(epochs):
        steps += train_one_epoch(model)  # optimizer steps taken so far
        decision = tracker.step(
            model, step=epoch, global_step=steps, checkpoint=f"checkpoints/epoch={epoch:04d}.pt",
            save=lambda path: torch.save(model.state_dict(), path),
        )
        if decision.stop:
            break

Adapters (the Optuna and Ray Tune reporters) are listeners: ``fn(evaluation, decision)``,
called after the evaluation is recorded, its checkpoint saved and the history written. A
listener may return a :class:`DegradationDecision` with ``stop=True`` (a pruner's
verdict), which the tracker records like its own rule's.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dse_tune.degradation import DegradationDecision, Peak, decide_with
from dse_tune.features import Kind, dense_tokens
from dse_tune.metrics.tolerant import TokenScore, score_tokens
from dse_tune.runs import COMPONENTS, CURVE_PLOT, Evaluation, RunRecord, write_run

__all__ = ["DSETracker", "Listener"]

#: ``fn(evaluation, decision)``; a returned decision with ``stop=True`` stops the run.
Listener = Callable[[Evaluation, DegradationDecision], "DegradationDecision | None"]


class DSETracker:
    """Score a fixed probe set during training, keep the run's history, decide stops.

    Args:
        probe_images: (P, 3, H, W) images, the same for every evaluation (see
            :func:`dse_tune.data.build_probe_set`); None when the caller passes tokens.
        run_dir: the run folder (history, plot); None keeps the history in memory only.
        every_n: :meth:`step` evaluates when ``step % every_n == 0``.
        rule: anything with ``decide(values)``, e.g. :class:`~dse_tune.degradation.DegradationRule`;
            None never stops on its own.
        seed: seed of the DSE k-means (same seed: same score for the same features).
        dse_kwargs: more keyword arguments of :func:`dse_tune.dse`.
        scorer: ``tokens -> result`` replacing :func:`dse_tune.dse` (see :func:`dse_tune.score_tokens`).
        tokens_fn: ``(model, images) -> (B, N, d)``; default :func:`dse_tune.features.dense_tokens`
            with ``kind``.
        batch_size: probe images per forward pass.
        config: JSON-able settings stored in the history.
        plot: :meth:`write_plot` draws ``dse_curve.png`` (needs ``run_dir``).
        name: the run's name (default: the folder's name).
        warn: called with one line when an evaluation is NaN (default :func:`warnings.warn`).
    """

    def __init__(
        self,
        probe_images: Tensor | None = None,
        *,
        run_dir: str | Path | None = None,
        every_n: int = 1,
        rule: Any | None = None,
        seed: int = 0,
        dse_kwargs: Mapping[str, Any] | None = None,
        scorer: Callable[[Tensor], Any] | None = None,
        tokens_fn: Callable[[nn.Module, Tensor], Tensor] | None = None,
        kind: Kind = "auto",
        batch_size: int = 64,
        config: Mapping[str, Any] | None = None,
        plot: bool = False,
        name: str | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        if probe_images is not None and (not isinstance(probe_images, Tensor) or probe_images.ndim != 4):
            shape = tuple(probe_images.shape) if isinstance(probe_images, Tensor) else type(probe_images).__name__
            raise ValueError(f"probe_images must be a (P, 3, H, W) tensor, got {shape}")
        for label, value in (("every_n", every_n), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if rule is not None and not callable(getattr(rule, "decide", None)):
            raise TypeError(
                "rule must have a decide(values) method (dse_tune.degradation.DegradationRule), "
                f"got {type(rule).__name__}"
            )
        if plot and run_dir is None:
            raise ValueError("plot needs run_dir")
        self.probe_images = None if probe_images is None else probe_images.detach().cpu()
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.every_n = every_n
        self.rule = rule
        self.seed = seed
        self.dse_kwargs = dict(dse_kwargs or {})
        self.scorer = scorer
        self.tokens_fn = tokens_fn
        self.kind = kind
        self.batch_size = batch_size
        self.plot = plot
        self.warn = warn or (lambda message: warnings.warn(message, RuntimeWarning, stacklevel=3))
        #: Under DDP only rank 0 writes files and calls the listeners; the caller shares
        #: their verdict with the other processes.
        self.writes_files = True
        self.notifies_listeners = True
        self._listeners: list[Listener] = []
        folder_name = self.run_dir.resolve().name if self.run_dir is not None else "run"
        self.run = RunRecord(name=name or folder_name, config=dict(config or {}), path=self.run_dir)
        self.last_decision = self._decide()

    # ----------------------------------------------------------------- reading

    @property
    def evaluations(self) -> tuple[Evaluation, ...]:
        return self.run.evaluations

    @property
    def values(self) -> list[float]:
        """DSE scores in evaluation order."""
        return self.run.dse

    @property
    def peak(self) -> Peak:
        return self.run.peak

    @property
    def best(self) -> Evaluation | None:
        """The evaluation the run's decision keeps (:func:`dse_tune.decision.run_choice`:
        the checkpoint ``dse-tune select`` chooses from this history), or None. The
        highest value is :attr:`peak`."""
        return self.run.chosen

    @property
    def stopped(self) -> bool:
        return self.run.stopped_early

    # --------------------------------------------------------------- listeners

    def add_listener(self, listener: Listener) -> Listener:
        """Call ``listener(evaluation, decision)`` after every evaluation; returns it."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {type(listener).__name__}")
        self._listeners.append(listener)
        return listener

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    # -------------------------------------------------------------- evaluating

    def due(self, step: int) -> bool:
        """Whether :meth:`step` evaluates at ``step``."""
        return step % self.every_n == 0

    def step(
        self,
        model_or_tokens: nn.Module | Tensor,
        *,
        step: int,
        epoch: int | None = None,
        global_step: int | None = None,
        checkpoint: str | None = None,
        save: Callable[[Path], None] | None = None,
    ) -> DegradationDecision:
        """Evaluate when ``step`` (the loop's counter, recorded as the epoch unless ``epoch``
        is given) is due (see ``every_n``); return the current decision. ``global_step``:
        the optimizer steps taken so far (0: untrained; not given: unknown, never untrained).
        """
        if not self.due(step):
            return self.last_decision
        return self.evaluate(model_or_tokens, epoch=step if epoch is None else epoch, global_step=global_step,
                             checkpoint=checkpoint, save=save)

    def evaluate(
        self,
        model_or_tokens: nn.Module | Tensor,
        *,
        epoch: int | None = None,
        global_step: int | None = None,
        checkpoint: str | None = None,
        save: Callable[[Path], None] | None = None,
    ) -> DegradationDecision:
        """Score now, record, decide, save the checkpoint, write the folder, notify.

        Args:
            model_or_tokens: a model (its dense tokens of the probe set are computed in
                eval mode under no_grad) or the tokens themselves, (B, N, d).
            epoch, global_step: where training is (recorded).
            checkpoint: the path recorded for these weights, relative to ``run_dir``
                (or absolute); None records no checkpoint.
            save: ``save(path)`` writes the checkpoint; called after the evaluation is
                in the history (so its metadata may include it) and before the history
                is written (so the history never names a file that is not there yet).
        """
        evaluation = self.score_evaluation(model_or_tokens, epoch=epoch, global_step=global_step, checkpoint=checkpoint)
        return self.record(evaluation, save=save)

    def score_evaluation(
        self,
        model_or_tokens: nn.Module | Tensor,
        *,
        epoch: int | None = None,
        global_step: int | None = None,
        checkpoint: str | None = None,
    ) -> Evaluation:
        """Score now and return the :class:`Evaluation`, without recording it (the first
        half of :meth:`evaluate`; :meth:`record` is the second). Distributed callers
        score on one process and record the same evaluation on every process."""
        started = time.perf_counter()
        tokens = model_or_tokens if isinstance(model_or_tokens, Tensor) else self.compute_tokens(model_or_tokens)
        scored = self.score(tokens)
        seconds = time.perf_counter() - started
        if not scored.ok:
            self.warn(f"DSE at epoch {epoch}, step {global_step} is NaN: {scored.failure}")
        return Evaluation(
            index=len(self.run.evaluations),
            dse=scored.score,
            epoch=epoch,
            global_step=global_step,
            checkpoint=checkpoint,
            seconds=float(seconds),
            components={name: getattr(scored, name) for name in COMPONENTS},
            failure=scored.failure,
            noise=scored.noise,
        )

    def record(self, evaluation: Evaluation, *, save: Callable[[Path], None] | None = None) -> DegradationDecision:
        """Append an already scored evaluation, then decide, save, write and notify."""
        self.run = self.run.with_evaluation(evaluation)
        decision = self._decide()
        if decision.stop and not self.run.stopped_early:
            self.run = self.run.stopped(str(decision.reason))
        if save is not None and evaluation.checkpoint is not None:
            save(self.checkpoint_path(evaluation))
        self.write()
        for listener in list(self._listeners if self.notifies_listeners else ()):
            verdict = listener(evaluation, decision)
            if verdict is not None and verdict.stop and not decision.stop:
                decision = verdict
                if not self.run.stopped_early:
                    self.run = self.run.stopped(str(verdict.reason))
                    self.write()
        self.last_decision = decision
        return decision

    def score(self, tokens: Tensor) -> TokenScore:
        """The tolerant score of ``tokens`` with this tracker's settings, with its noise
        (standard error over the probe images) when the scorer is :func:`dse_tune.dse`."""
        if self.scorer is not None:
            return score_tokens(tokens, scorer=self.scorer)
        return score_tokens(tokens, seed=self.seed, **{"noise": True, **self.dse_kwargs})

    def compute_tokens(self, model: nn.Module, images: Tensor | None = None) -> Tensor:
        """Dense tokens (float32) of the probe set (or of ``images``, e.g. one process's
        shard of it), in eval mode under no_grad; each submodule's train/eval mode is
        restored afterwards (frozen teachers stay as they were)."""
        images = self.probe_images if images is None else images
        if images is None:
            raise ValueError("this tracker has no probe_images: pass tokens, not a model")
        modes = {module: module.training for module in model.modules()}
        model.eval()
        device = _device_of(model)
        tokens_fn = self.tokens_fn or (lambda model, batch: dense_tokens(model, batch, kind=self.kind))
        try:
            chunks = []
            with torch.no_grad():
                for start in range(0, images.shape[0], self.batch_size):
                    chunks.append(tokens_fn(model, images[start : start + self.batch_size].to(device)).float())
            return torch.cat(chunks)
        finally:
            for module, training in modes.items():
                module.training = training

    def checkpoint_path(self, evaluation: Evaluation) -> Path:
        path = self.run.checkpoint_path(evaluation)
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------------ state

    def mark_stopped(self, reason: str) -> None:
        """Record that the run stopped early (first reason stands) and write it."""
        if not self.run.stopped_early:
            self.run = self.run.stopped(reason)
            self.write()

    def clear_stop(self) -> None:
        """A new fit (fresh or resumed) is running: it has not stopped early (yet)."""
        self.run = self.run.stopped(None)

    def restore(self, history: Mapping[str, Any]) -> None:
        """Take the evaluations of a saved history (``RunRecord.to_dict()`` content),
        keeping this tracker's config (a resumed run continues its own history)."""
        saved = RunRecord.from_dict(history, name=self.run.name, path=self.run_dir, source="saved history")
        # The ranking verdict is judged again with the next evaluation (RunRecord.with_evaluation).
        self.run = dataclasses.replace(saved, config=self.run.config or saved.config, ranking_reliable=None,
                                       ranking_reason=None)
        self.last_decision = self._decide()

    def write(self) -> None:
        """Write ``dse_history.json``/``.csv`` (atomic) when there is a run folder."""
        if self.run_dir is not None and self.writes_files:
            write_run(self.run_dir, self.run)

    def write_plot(self) -> None:
        """Draw ``dse_curve.png`` when asked for (``plot=True``) and there is something to draw."""
        if self.plot and self.run_dir is not None and self.writes_files and self.run.evaluations:
            from dse_tune.plotting import plot_dse_history

            plot_dse_history(self.run, self.run_dir / CURVE_PLOT)

    def _decide(self) -> DegradationDecision:
        values = self.run.dse
        if self.rule is not None:
            return decide_with(self.rule, values, noise=self.run.dse_noise, first_untrained=self.run.first_untrained)
        found = self.run.peak
        reason = "no stopping rule" if values else "no evaluations yet"
        current = next((v for v in reversed(values) if math.isfinite(v)), None)
        return DegradationDecision(False, reason, found.index, found.value, len(values), current_value=current)


def _device_of(model: nn.Module) -> torch.device:
    # LightningModules know their device; a plain module is where its first tensor is.
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")

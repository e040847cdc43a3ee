"""The DSE monitor of Lightning training: score DSE during training, keep its history, stop
on degradation. Public as :mod:`dse_tune.integrations.lightning` (the Lightning adapter);
it lives here because dse_tune's own pretraining (:mod:`dse_tune.ssl.pretrain`) trains with it,
and ssl/ sits below the integrations.

:class:`DSEMonitor` is a ``lightning.pytorch`` callback, a thin wrapper around the
framework-free :class:`dse_tune.tracker.DSETracker` (scoring, history, rule, listeners
live there; this file only decides *when* and saves Lightning checkpoints, whose metadata
hold the evaluation's record). The history is the run-folder format of :mod:`dse_tune.runs`
(``docs/run-folder.md``): ``epoch`` is Lightning's 0-based epoch index at which the
evaluation ran (``epoch=4`` follows 5 epochs, as in Lightning's own checkpoint names).
A diverged or collapsed model is recorded as NaN with the reason (:func:`dse_tune.score_tokens`)
instead of an error; the degradation rule stops on NaN by default.

Lightning's own callbacks see the ``dse`` logged at each evaluation:
``ModelCheckpoint(monitor="dse", mode="max", save_on_train_epoch_end=True)`` keeps the
best-DSE checkpoints (with a validation loop, which runs before ``on_train_epoch_end``, the
``*_on_train_epoch_end=True`` options make them see the current epoch's DSE). Prefer
``early_stopping=DegradationRule(...)`` to ``EarlyStopping(monitor="dse")``: with
``every_n_epochs > 1`` EarlyStopping re-reads the stale ``dse`` at epochs without an
evaluation and counts them as patience (docs/pretraining.md).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from dse_tune.features import Kind
from dse_tune.metrics.dse_metric import COMPONENTS
from dse_tune.runs import CHECKPOINT_DIR, LAST_CHECKPOINT, Evaluation
from dse_tune.tracker import DSETracker, Listener

__all__ = ["DSEMonitor"]


class DSEMonitor(pl.Callback):
    """Score DSE on a fixed probe set during training; history, checkpoints, stopping.

    Args:
        probe_images: (P, 3, H, W) normalised images, the same for every evaluation
            (see :func:`dse_tune.data.build_probe_set`).
        run_dir: the run folder (:mod:`dse_tune.runs`); ``None`` keeps the history in
            memory only (no files).
        every_n_epochs: evaluate after every n-th training epoch.
        every_n_steps: evaluate every n optimizer steps instead (``every_n_epochs`` is
            then ignored).
        tokens_fn: ``(pl_module, images) -> (B, N, d)``; by default
            :func:`dse_tune.features.dense_tokens` of the module with ``kind`` (the module's
            own ``dense_tokens(images)`` when it has one, else its ``forward``).
        save_checkpoints: save ``checkpoints/epoch=EEEE.ckpt`` at every evaluation
            (``epoch=EEEE-step=SSSSSSS.ckpt`` when evaluating by steps); needs ``run_dir``.
        save_last: also save ``checkpoints/last.ckpt`` at the end of every epoch (to
            resume from); needs ``run_dir``.
        early_stopping: a :class:`dse_tune.degradation.DegradationRule`, asked after each
            evaluation (its patience counts evaluations); it may stop training.
        plot: draw ``dse_curve.png`` in ``run_dir`` when the fit ends (or fails).
        log_prefix: metric names: ``dse``, ``dse/inter``, ..., ``dse_best``.
        seed, dse_kwargs, scorer, kind, batch_size, config: as for
            :class:`~dse_tune.tracker.DSETracker`.

    Example (a tiny conv "ViT" whose ``dense_tokens`` are its patch embeddings):
        >>> import torch
        >>> from torch import nn
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> class Patches(pl.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.embed = nn.Conv2d(3, 8, 4, stride=4)
        ...     def dense_tokens(self, images):
        ...         return self.embed(images).flatten(2).transpose(1, 2)
        ...     def training_step(self, batch, index):
        ...         return self.dense_tokens(batch[0]).pow(2).mean()
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.1)
        >>> images = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> monitor = DSEMonitor(images, every_n_epochs=2)
        >>> trainer = pl.Trainer(max_epochs=4, callbacks=[monitor], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
        >>> trainer.fit(Patches(), DataLoader(TensorDataset(images), batch_size=8))
        >>> [row["epoch"] for row in monitor.evaluations], monitor.best["index"] in (0, 1)
        ([1, 3], True)
    """

    def __init__(
        self,
        probe_images: Tensor,
        *,
        run_dir: str | Path | None = None,
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        seed: int = 0,
        dse_kwargs: Mapping[str, Any] | None = None,
        tokens_fn: Callable[[pl.LightningModule, Tensor], Tensor] | None = None,
        kind: Kind = "auto",
        batch_size: int = 64,
        save_checkpoints: bool = True,
        save_last: bool = False,
        early_stopping: Any | None = None,
        config: Mapping[str, Any] | None = None,
        scorer: Callable[[Tensor], Any] | None = None,
        plot: bool = False,
        log_prefix: str = "dse",
    ) -> None:
        super().__init__()
        if not isinstance(probe_images, Tensor) or probe_images.ndim != 4:
            shape = tuple(probe_images.shape) if isinstance(probe_images, Tensor) else type(probe_images).__name__
            raise ValueError(f"probe_images must be a (P, 3, H, W) tensor, got {shape}")
        if every_n_steps is None and (not isinstance(every_n_epochs, int) or every_n_epochs < 1):
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}")
        if every_n_steps is not None and (not isinstance(every_n_steps, int) or every_n_steps < 1):
            raise ValueError(f"every_n_steps must be None or a positive integer, got {every_n_steps!r}")
        if run_dir is None and save_last:
            raise ValueError("save_last needs run_dir")
        self.tracker = DSETracker(
            probe_images,
            run_dir=run_dir,
            rule=early_stopping,
            seed=seed,
            dse_kwargs=dse_kwargs,
            scorer=scorer,
            tokens_fn=tokens_fn,
            kind=kind,
            batch_size=batch_size,
            config=config,
            plot=plot,
            warn=rank_zero_warn,
        )
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.save_checkpoints = save_checkpoints and run_dir is not None
        self.save_last = save_last
        self.log_prefix = log_prefix
        self._last_evaluated_step: int | None = None

    # ----------------------------------------------------------- reading

    @property
    def run_dir(self) -> Path | None:
        return self.tracker.run_dir

    @property
    def early_stopping(self) -> Any | None:
        return self.tracker.rule

    @property
    def state_key(self) -> str:
        # Two monitors (e.g. two probe sets with different log prefixes) keep separate
        # histories in a checkpoint.
        return self._generate_state_key(log_prefix=self.log_prefix)

    @property
    def history(self) -> dict[str, Any]:
        """The run's history as written to ``dse_history.json`` (a fresh dict)."""
        return self.tracker.run.to_dict()

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        """The evaluation rows (dicts, as in ``dse_history.json``)."""
        return [evaluation.to_dict() for evaluation in self.tracker.evaluations]

    @property
    def values(self) -> list[float]:
        """DSE scores in evaluation order."""
        return self.tracker.values

    @property
    def best(self) -> dict[str, Any] | None:
        """The evaluation at the peak (:func:`dse_tune.degradation.peak`), or None."""
        best = self.tracker.best
        return None if best is None else best.to_dict()

    def add_listener(self, listener: Listener) -> Listener:
        """``fn(evaluation, decision)`` after each evaluation (checkpoint saved, history
        written); a returned decision with ``stop=True`` stops training (see
        :meth:`dse_tune.tracker.DSETracker.add_listener`)."""
        return self.tracker.add_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        self.tracker.remove_listener(listener)

    # ------------------------------------------------------ Lightning hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.tracker.writes_files = self.tracker.notifies_listeners = bool(trainer.is_global_zero)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tracker.writes_files = self.tracker.notifies_listeners = bool(trainer.is_global_zero)
        self.tracker.clear_stop()
        self.tracker.write()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.every_n_steps is None:
            return
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self._last_evaluated_step:
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_steps is None and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.evaluate(trainer, pl_module)
        if self.save_last and self.run_dir is not None:
            self._save_checkpoint(trainer, self.run_dir / LAST_CHECKPOINT)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tracker.write_plot()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # An interrupted or crashed run still gets the plot of what it scored.
        self.tracker.write_plot()

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        history = state_dict.get("history")
        if history:
            self.tracker.restore(history)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Metadata: the DSE of exactly these weights, when they were just scored.
        latest = self.tracker.evaluations[-1] if self.tracker.evaluations else None
        if latest is not None and latest.global_step == trainer.global_step:
            checkpoint["dse"] = latest.to_dict()

    # ----------------------------------------------------------- evaluation

    def compute_tokens(self, pl_module: pl.LightningModule) -> Tensor:
        """Dense tokens of the probe set (see :meth:`DSETracker.compute_tokens`)."""
        return self.tracker.compute_tokens(pl_module)

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Score now, log, record, checkpoint, apply the stopping rule, notify listeners.

        Under DDP every rank calls this at the same step and computes its shard of the probe
        tokens; rank 0 scores the gathered tokens and broadcasts the evaluation, which every
        rank records (same history, same decision, collective checkpoint save); rank 0 alone
        writes files and calls the listeners, and broadcasts its final decision (a listener's
        stop included) so that every rank stops at the same step.
        """
        epoch, step = int(trainer.current_epoch), int(trainer.global_step)
        self._last_evaluated_step = step
        checkpoint = None
        if self.save_checkpoints:
            name = f"epoch={epoch:04d}.ckpt" if self.every_n_steps is None else f"epoch={epoch:04d}-step={step:07d}.ckpt"
            checkpoint = f"{CHECKPOINT_DIR}/{name}"
        started = time.perf_counter()
        tokens = self._probe_tokens(trainer, pl_module)
        scored = None
        if trainer.is_global_zero:
            scored = self.tracker.score_evaluation(tokens, epoch=epoch, global_step=step, checkpoint=checkpoint)
            scored = dataclasses.replace(scored, seconds=time.perf_counter() - started).to_dict()
        evaluation = Evaluation.from_dict(trainer.strategy.broadcast(scored, src=0))
        decision = self.tracker.record(evaluation, save=lambda path: self._save_checkpoint(trainer, path))
        stop, reason = trainer.strategy.broadcast((bool(decision.stop), decision.reason), src=0)
        if stop:
            # A rank-0 listener's verdict reaches the other ranks here.
            self.tracker.mark_stopped(str(reason))
            trainer.should_stop = True
        record = self.tracker.evaluations[-1]
        self._log(pl_module, record)
        return record.to_dict()

    def _probe_tokens(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Tensor | None:
        """The probe set's tokens on rank 0 (None elsewhere): each rank computes its
        contiguous shard (padded to equal sizes for the gather), then all-gather."""
        world = int(trainer.world_size)
        if world < 2:
            return self.tracker.compute_tokens(pl_module)
        probe = self.tracker.probe_images
        total = int(probe.shape[0])
        per_rank = -(-total // world)
        indices = torch.arange(trainer.global_rank * per_rank, (trainer.global_rank + 1) * per_rank)
        indices = indices.clamp(max=total - 1)  # the last shard repeats an image as padding
        shard = self.tracker.compute_tokens(pl_module, probe[indices])
        gathered = trainer.strategy.all_gather(shard)  # (world, per_rank, N, d)
        if not trainer.is_global_zero:
            return None
        return gathered.reshape(world * per_rank, *gathered.shape[2:])[:total]

    # -------------------------------------------------------------- helpers

    def _log(self, pl_module: pl.LightningModule, record: Evaluation) -> None:
        by_step = self.every_n_steps is not None
        metrics = {self.log_prefix: record.dse}
        metrics.update({f"{self.log_prefix}/{name}": record.components.get(name, float("nan")) for name in COMPONENTS})
        best = self.tracker.peak
        metrics[f"{self.log_prefix}_best"] = best.value if best else record.dse
        for name, value in metrics.items():
            pl_module.log(
                name,
                value,
                on_step=by_step,
                on_epoch=not by_step,
                prog_bar=name == self.log_prefix,
                # Step-level values reach loggers only every log_every_n_steps: an
                # evaluation by steps is sent to them directly below instead.
                logger=not by_step and bool(pl_module.trainer.loggers),
                batch_size=1,
                # Every rank logs the same broadcast value: the mean over ranks is that
                # value, and syncing keeps Lightning's epoch-level DDP warning away.
                sync_dist=True,
            )
        if by_step and pl_module.trainer.is_global_zero:
            for logger in pl_module.trainer.loggers:
                logger.log_metrics(metrics, step=pl_module.trainer.global_step)

    def _save_checkpoint(self, trainer: pl.Trainer, path: Path) -> None:
        # Every rank must call save_checkpoint (collective); only rank 0 writes.
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            trainer.save_checkpoint(temporary, weights_only=False)
            trainer.strategy.barrier("dse_monitor_checkpoint")
            if trainer.is_global_zero:
                os.replace(temporary, path)
        finally:
            if trainer.is_global_zero:
                temporary.unlink(missing_ok=True)

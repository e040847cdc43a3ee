"""Lightning adapter: score DSE during training, keep its history, stop on degradation.

:class:`DSEMonitor` is a ``lightning.pytorch`` callback. Every ``every_n_epochs``
epochs (or ``every_n_steps`` steps) it scores a fixed probe set with
:func:`dse_tune.dse` in eval mode under ``torch.no_grad()``, logs ``dse`` and its
components, appends one record to the run's history (``RUN_DIR/dse_history.json`` and
``.csv``), saves a checkpoint whose metadata holds that record, and, given a
:class:`dse_tune.degradation.DegradationRule`, stops training when the rule says the
dense features degrade. Every file is written atomically (temporary file in the same
folder, then ``os.replace``): a reader never sees half a file, even if the run is
killed.

History format (``dse_history.json``; the CSV holds the ``evaluations`` rows)::

    {"config": {...},
     "evaluations": [{"index": 0, "epoch": 4, "global_step": 50, "dse": 0.41,
                      "inter": ..., "intra_image": ..., "intra_batch": ..., "dim": ...,
                      "checkpoint": "checkpoints/epoch=0004.ckpt", "seconds": 0.8}, ...],
     "stopped_early": false, "stop_reason": null}

``epoch`` is Lightning's 0-based epoch index at which the evaluation ran (after that
epoch's training when evaluating per epoch: ``epoch=4`` follows 5 epochs, as in
Lightning's own checkpoint names); ``checkpoint`` is relative to ``RUN_DIR`` (null when
checkpoints are off); ``seconds`` is the time the evaluation took (features + DSE).
Non-finite features (a diverged run) or features for which DSE is undefined (all
tokens equal: a collapsed run) are recorded as NaN (written as ``NaN`` in the JSON,
which Python's ``json`` reads back) rather than stopping the training loop with an
error; the degradation rule stops on NaN by default.

Using Lightning's own callbacks instead: ``dse`` is logged at the evaluation (epoch
level when evaluating per epoch), so ``ModelCheckpoint(monitor="dse", mode="max",
save_on_train_epoch_end=True)`` keeps the best-DSE checkpoints. With
``EarlyStopping(monitor="dse", mode="max", check_on_train_epoch_end=True)`` beware of
the stale-metric caveat: EarlyStopping checks once per epoch (or per validation run),
not per DSE evaluation, and Lightning keeps the last logged ``dse`` in
``callback_metrics``; with ``every_n_epochs > 1`` it sees the same value again at
epochs without an evaluation and counts them as "no improvement", so its patience runs
in epochs, not evaluations, and it stops too early (before the first evaluation there
is no ``dse`` at all: ``strict=True`` raises). Evaluate every epoch, or pass a
``DegradationRule`` to ``DSEMonitor(early_stopping=...)``, whose patience counts DSE
evaluations. With a
validation loop, Lightning runs validation before ``on_train_epoch_end``: set
``save_on_train_epoch_end=True`` / ``check_on_train_epoch_end=True`` so that those
callbacks see the DSE of the current epoch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from dse_tune.atomic import atomic_write_text
from dse_tune.features import Kind, dense_tokens
from dse_tune.metrics.dse_metric import COMPONENTS
from dse_tune.metrics.validation import ConstantFeaturesError

HISTORY_JSON = "dse_history.json"
HISTORY_CSV = "dse_history.csv"
PLOT_PNG = "dse_curve.png"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
EVALUATION_KEYS = ("index", "epoch", "global_step", "dse", "inter", "intra_image", "intra_batch", "dim", "checkpoint", "seconds")


def history_to_csv(evaluations: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(EVALUATION_KEYS), lineterminator="\n")
    writer.writeheader()
    for record in evaluations:
        writer.writerow({key: "" if record.get(key) is None else record.get(key) for key in EVALUATION_KEYS})
    return buffer.getvalue()


def load_history(path: str | Path) -> dict[str, Any]:
    """Read ``dse_history.json`` from a run folder (or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY_JSON
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise FileNotFoundError(f"no DSE history at {path}") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"DSE history {path} is not valid JSON: {error}") from error


def _default_scorer(seed: int, dse_kwargs: Mapping[str, Any]) -> Callable[[Tensor], Any]:
    def score(tokens: Tensor) -> Any:
        from dse_tune import dse

        return dse(tokens, seed=seed, **dse_kwargs)

    return score


def _tokens_of(pl_module: pl.LightningModule, images: Tensor, kind: Kind) -> Tensor:
    # SSL modules (and any user module) with dense_tokens() say which network is scored.
    return dense_tokens(pl_module, images, kind=kind)


# ---------------------------------------------------------------------- monitor


class DSEMonitor(pl.Callback):
    """Score DSE on a fixed probe set during training; history, checkpoints, stopping.

    Args:
        probe_images: (P, 3, H, W) normalised images, the same for every evaluation
            (see :func:`dse_tune.ssl.data.build_probe_set`).
        run_dir: folder for ``dse_history.json``/``.csv``, ``checkpoints/`` and the
            plot; ``None`` keeps the history in memory only (no files).
        every_n_epochs: evaluate after every n-th training epoch.
        every_n_steps: evaluate every n optimizer steps instead (``every_n_epochs`` is
            then ignored).
        seed: seed of the DSE k-means (same seed: same score for the same features).
        dse_kwargs: more keyword arguments of :func:`dse_tune.dse`.
        tokens_fn: ``(pl_module, images) -> (B, N, d)``; by default
            :func:`dse_tune.features.dense_tokens` of the module with ``kind``: the
            module's own ``dense_tokens(images)`` method when it has one (the
            :mod:`dse_tune.ssl` modules say there which network is scored), else its
            ``forward`` must return (B, N, d).
        kind: see :func:`dse_tune.features.dense_tokens`.
        batch_size: probe images per forward pass.
        save_checkpoints: save ``checkpoints/epoch=EEEE.ckpt`` at every evaluation
            (``epoch=EEEE-step=SSSSSSS.ckpt`` when evaluating by steps); needs ``run_dir``.
        save_last: also save ``checkpoints/last.ckpt`` at the end of every epoch (to
            resume from); needs ``run_dir``.
        early_stopping: a :class:`dse_tune.degradation.DegradationRule`; after each
            evaluation it decides on the DSE values so far (patience counts
            evaluations) and may stop training.
        config: a JSON-able mapping stored under ``"config"`` in the history.
        scorer: ``tokens -> result`` with float attributes ``score, inter, intra_image,
            intra_batch, dim``; defaults to :func:`dse_tune.dse` with ``seed`` and
            ``dse_kwargs``.
        plot: draw ``dse_curve.png`` in ``run_dir`` when the fit ends (or fails); the
            JSON/CSV history is the live record during training.
        log_prefix: metric names: ``dse``, ``dse/inter``, ..., ``dse_best``.

    Example:
        >>> monitor = DSEMonitor(probe.images, run_dir="runs/a", every_n_epochs=5)  # doctest: +SKIP
        >>> trainer = pl.Trainer(max_epochs=100, callbacks=[monitor])               # doctest: +SKIP
        >>> trainer.fit(model, loader); monitor.history["evaluations"][-1]["dse"]  # doctest: +SKIP
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
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if early_stopping is not None and not callable(getattr(early_stopping, "decide", None)):
            raise TypeError(
                f"early_stopping must have a decide(values) method (dse_tune.degradation.DegradationRule), "
                f"got {type(early_stopping).__name__}"
            )
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.run_dir is None and (save_last or plot):
            raise ValueError("save_last and plot need run_dir")
        self.probe_images = probe_images.detach().cpu()
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.seed = seed
        self.tokens_fn = tokens_fn
        self.kind = kind
        self.batch_size = batch_size
        self.save_checkpoints = save_checkpoints and self.run_dir is not None
        self.save_last = save_last
        self.early_stopping = early_stopping
        self.dse_kwargs = dict(dse_kwargs or {})
        self.scorer = scorer or _default_scorer(seed, self.dse_kwargs)
        self.plot = plot
        self.log_prefix = log_prefix
        self.history: dict[str, Any] = {
            "config": dict(config or {}),
            "evaluations": [],
            "stopped_early": False,
            "stop_reason": None,
        }
        self._last_evaluated_step: int | None = None

    # ----------------------------------------------------------- properties

    @property
    def state_key(self) -> str:
        # Two monitors (e.g. two probe sets with different log prefixes) keep separate
        # histories in a checkpoint.
        return self._generate_state_key(log_prefix=self.log_prefix)

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        return self.history["evaluations"]

    @property
    def values(self) -> list[float]:
        """DSE scores in evaluation order."""
        return [float(record["dse"]) for record in self.evaluations]

    @property
    def best(self) -> dict[str, Any] | None:
        """The evaluation with the highest DSE (the first of ties), or None."""
        finite = [r for r in self.evaluations if math.isfinite(r["dse"])]
        return max(finite, key=lambda r: r["dse"]) if finite else None

    # ------------------------------------------------------ Lightning hooks

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A new fit (fresh or resumed) is running: it has not stopped early (yet).
        self.history["stopped_early"] = False
        self.history["stop_reason"] = None
        self._write_history(trainer)

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
            self._save_checkpoint(trainer, self.run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_plot(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # An interrupted or crashed run still gets the plot of what it scored.
        self._write_plot(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"history": json.loads(json.dumps(self.history))}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        history = state_dict.get("history")
        if history:
            # Keep this run's config; take the evaluations up to the checkpoint.
            config = self.history.get("config") or history.get("config", {})
            self.history = {**history, "config": config}

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Metadata: the DSE of exactly these weights, when they were just scored.
        if self.evaluations and self.evaluations[-1]["global_step"] == trainer.global_step:
            checkpoint["dse"] = dict(self.evaluations[-1])

    # ----------------------------------------------------------- evaluation

    def compute_tokens(self, pl_module: pl.LightningModule) -> Tensor:
        """Dense tokens of the probe set, in eval mode under no_grad; each
        submodule's train/eval mode is restored afterwards (frozen teachers stay as
        they were)."""
        modes = {module: module.training for module in pl_module.modules()}
        pl_module.eval()
        try:
            chunks = []
            with torch.no_grad():
                for start in range(0, self.probe_images.shape[0], self.batch_size):
                    images = self.probe_images[start : start + self.batch_size].to(pl_module.device)
                    if self.tokens_fn is not None:
                        tokens = self.tokens_fn(pl_module, images)
                    else:
                        tokens = _tokens_of(pl_module, images, self.kind)
                    chunks.append(tokens.float())
            return torch.cat(chunks)
        finally:
            for module, training in modes.items():
                module.training = training

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Score now, log, record, checkpoint, and apply the stopping rule."""
        started = time.perf_counter()
        tokens = self.compute_tokens(pl_module)
        scores = self._score(tokens, trainer)
        seconds = time.perf_counter() - started
        epoch, step = int(trainer.current_epoch), int(trainer.global_step)
        self._last_evaluated_step = step

        checkpoint = None
        if self.save_checkpoints:
            name = f"epoch={epoch:04d}.ckpt" if self.every_n_steps is None else f"epoch={epoch:04d}-step={step:07d}.ckpt"
            checkpoint = f"{CHECKPOINT_DIR}/{name}"
        record = {
            "index": len(self.evaluations),
            "epoch": epoch,
            "global_step": step,
            **scores,
            "checkpoint": checkpoint,
            "seconds": float(seconds),
        }
        self.evaluations.append(record)
        self._log(pl_module, record)

        if self.early_stopping is not None and not self.history["stopped_early"]:
            decision = self.early_stopping.decide(self.values)
            if decision.stop:
                trainer.should_stop = True
                self.history["stopped_early"] = True
                self.history["stop_reason"] = str(decision.reason)

        if checkpoint is not None:
            self._save_checkpoint(trainer, self.run_dir / checkpoint)
        self._write_history(trainer)
        return record

    # -------------------------------------------------------------- helpers

    def _score(self, tokens: Tensor, trainer: pl.Trainer) -> dict[str, float]:
        """``{"dse": ..., "inter": ..., ...}``; NaN everywhere when the features are
        non-finite or DSE is undefined for them (collapsed to one vector): a diverged
        or collapsed run is recorded (and stopped by the degradation rule's NaN
        policy) instead of crashing the training loop."""
        failure = None
        if not bool(torch.isfinite(tokens).all()):
            failure = "dense features contain NaN or infinite values"
        else:
            try:
                result = self.scorer(tokens)
            except ConstantFeaturesError as error:
                failure = f"collapsed features: {error}"
            except FloatingPointError as error:
                failure = str(error)
            # Other errors (a probe set too small for the clusters, ...) are setup
            # errors: they propagate with the metric's message.
        if failure is not None:
            rank_zero_warn(f"DSE at epoch {trainer.current_epoch}, step {trainer.global_step} is NaN: {failure}")
            return {"dse": math.nan, **{name: math.nan for name in COMPONENTS}}
        return {"dse": float(result.score), **{name: float(getattr(result, name)) for name in COMPONENTS}}

    def _log(self, pl_module: pl.LightningModule, record: Mapping[str, Any]) -> None:
        by_step = self.every_n_steps is not None
        metrics = {self.log_prefix: record["dse"]}
        metrics.update({f"{self.log_prefix}/{name}": record[name] for name in COMPONENTS})
        metrics[f"{self.log_prefix}_best"] = self.best["dse"] if self.best else record["dse"]
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
            )
        if by_step:
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

    def _write_history(self, trainer: pl.Trainer) -> None:
        if self.run_dir is None or not trainer.is_global_zero:
            return
        atomic_write_text(self.run_dir / HISTORY_JSON, json.dumps(self.history, indent=2) + "\n")
        atomic_write_text(self.run_dir / HISTORY_CSV, history_to_csv(self.evaluations))

    def _write_plot(self, trainer: pl.Trainer) -> None:
        if not self.plot or self.run_dir is None or not trainer.is_global_zero or not self.evaluations:
            return
        from dse_tune.plotting import plot_dse_history

        plot_dse_history(self.history, self.run_dir / PLOT_PNG)
